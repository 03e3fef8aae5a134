// Safetensors read/write of named tensors: an 8-byte little-endian header length, a JSON
// header ({"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}), then
// the raw little-endian data. Reads F32, F64, I64, BOOL (spool's dtypes); any other dtype
// in a file is an IoError naming the tensor. Everything read is bounds-checked, so a
// truncated or hostile file gives an IoError, never a crash. Format notes: docs/io.md.
#pragma once
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "autograd/tensor.hpp"

namespace spool::io {

/// Tensors with their names, in order (a state_dict as a list).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// What a safetensors file holds: its tensors (ordered by data offset) and "__metadata__".
struct SafetensorsFile {
    NamedTensors tensors;
    std::map<std::string, std::string> metadata;
};

/// Write atomically: to path + ".tmp", fsync, then rename over path. Tensors are laid
/// out in the given order. Names must be unique, valid UTF-8 and not "__metadata__".
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// Read and validate a file. Tensors come back ordered by data offset, which is the order
/// they were written in (JSON objects are unordered). Loaded tensors do not require grad.
SafetensorsFile load_safetensors(const std::string& path);

/// The bytes save_safetensors would write.
std::string to_safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

/// Parse in-memory bytes (errors name the source "<memory>").
SafetensorsFile from_safetensors_bytes(std::string_view bytes);

}  // namespace spool::io
