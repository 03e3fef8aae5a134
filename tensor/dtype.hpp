// Runtime element types. float32 and float64 carry gradients; int64 and bool hold
// indices, targets and masks. No kernels here: only names, sizes and dispatch.
#pragma once
#include <cstddef>
#include <cstdint>

namespace spool {

enum class DType : std::uint8_t { f32, f64, i64, b8 };

inline constexpr DType f32 = DType::f32;    ///< float32, the default
inline constexpr DType f64 = DType::f64;    ///< float64, for gradient checks
inline constexpr DType i64 = DType::i64;    ///< int64 indices and targets
inline constexpr DType bool_ = DType::b8;   ///< bool masks (one byte per element)

/// "float32", "float64", "int64", "bool".
const char* dtype_name(DType dt);
/// Bytes per element.
std::size_t itemsize(DType dt);
/// float32 or float64.
inline bool is_floating(DType dt) { return dt == DType::f32 || dt == DType::f64; }

/// The C++ type behind a dtype.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::b8; };

}  // namespace spool
