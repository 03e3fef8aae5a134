// Heap bytes in use and their peak, counted by the replacement operator new/delete in
// alloc_counter.cpp (linked into test_io only): how the loader's memory is measured
// deterministically, sanitizers included. Aligned new/delete (tensor storage) is not
// counted: tensor data is bounded by the file's data buffer, which the reader checks.
#pragma once
#include <cstddef>

namespace spool::test {

std::size_t heap_bytes_in_use();
std::size_t heap_peak_bytes();
/// Start a new peak from the bytes in use now.
void reset_heap_peak();

}  // namespace spool::test
