// Internal to tensor/*.cpp: xsimd helpers shared by the kernels — a map over a span
// with a SIMD body and a tail, float/double dispatch, and the threading threshold.
// Never included by public headers (xsimd is heavy to compile).
#pragma once
#include "tensor/xsimd_include.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "tensor/errors.hpp"
#include "tensor/parallel.hpp"
#include "tensor/threads.hpp"
#include "tensor/value.hpp"

namespace spool::kernels::detail {

template <class T> using batch = xsimd::batch<T>;

/// Below this many elements a kernel runs on one thread (a fork costs ~microseconds).
inline constexpr std::int64_t parallel_grain = 1 << 15;

inline int threads_for(std::int64_t work) { return work >= parallel_grain ? get_num_threads() : 1; }

/// body(begin, end) over [0, n) in chunks that are multiples of W; one thread (no parallel
/// region at all, which costs more than a small kernel) below the grain.
template <class F>
void parallel_range(std::int64_t n, std::int64_t W, F body)
{
    spool::detail::parallel_blocks(n, threads_for(n), W, body);
}

/// y[i] = f(x[i]). f is a generic lambda called with batch<T>; the tail goes through a
/// padded batch so the body and the tail compute exactly the same function.
template <class T, class F>
void map1(const T* x, T* y, std::int64_t n, F f)
{
    constexpr std::int64_t W = batch<T>::size;
    std::int64_t nb = n / W * W;
    parallel_range(nb, W, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; i += W) f(batch<T>::load_unaligned(x + i)).store_unaligned(y + i);
    });
    if (nb < n) {
        alignas(64) T buf[W] = {};
        std::copy(x + nb, x + n, buf);
        f(batch<T>::load_aligned(buf)).store_aligned(buf);
        std::copy(buf, buf + (n - nb), y + nb);
    }
}

/// z[i] = f(x[i], y[i]).
template <class T, class F>
void map2(const T* x, const T* y, T* z, std::int64_t n, F f)
{
    constexpr std::int64_t W = batch<T>::size;
    std::int64_t nb = n / W * W;
    parallel_range(nb, W, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; i += W)
            f(batch<T>::load_unaligned(x + i), batch<T>::load_unaligned(y + i)).store_unaligned(z + i);
    });
    if (nb < n) {
        alignas(64) T bx[W] = {}, by[W] = {};
        std::copy(x + nb, x + n, bx);
        std::copy(y + nb, y + n, by);
        f(batch<T>::load_aligned(bx), batch<T>::load_aligned(by)).store_aligned(bx);
        std::copy(bx, bx + (n - nb), z + nb);
    }
}

/// Call body.template operator()<T>() with T = float or double; names op on a wrong dtype.
template <class F>
decltype(auto) dispatch_float(DType dt, const char* op, F&& body)
{
    switch (dt) {
    case DType::f32: return body.template operator()<float>();
    case DType::f64: return body.template operator()<double>();
    default: break;
    }
    throw TypeError(::spool::detail::cat(op, ": expected a float32 or float64 tensor; got ", dtype_name(dt)));
}

inline void check_same_float(const Value& a, const Value& b, const char* op)
{
    SPOOL_CHECK(a.dtype() == b.dtype(), TypeError, op, ": dtypes must match; got ", dtype_name(a.dtype()), " and ",
                dtype_name(b.dtype()));
}

/// View x as [outer, n, inner] around axis.
struct Split3 {
    std::int64_t outer, n, inner;
};
inline Split3 split_at(const Shape& s, int axis)
{
    return {s.prod(0, axis), s[axis], s.prod(axis + 1, s.rank())};
}

}  // namespace spool::kernels::detail
