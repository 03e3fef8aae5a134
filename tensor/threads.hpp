// Thread count for spool's parallel kernels (OpenMP underneath).
#pragma once

namespace spool {

/// Number of threads spool's kernels use (GEMM, large row-wise kernels). n >= 1.
void set_num_threads(int n);
/// Current thread count (defaults to the OpenMP default, i.e. the number of cores).
int get_num_threads();

}  // namespace spool
