// Reductions over one axis (keepdim), the broadcasting adjoint sum_to, and the row
// kernels softmax / log_softmax with their backward. An axis splits a tensor into
// [outer, n, inner]: inner == 1 is a contiguous row (SIMD along it), otherwise SIMD
// runs across inner.
#include <cmath>
#include <limits>

#include "tensor/kernels.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {

template <class T>
T row_sum(const T* x, std::int64_t n)
{
    constexpr std::int64_t W = batch<T>::size;
    batch<T> a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));  // four chains: latency and accuracy
    std::int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        a0 += batch<T>::load_unaligned(x + i);
        a1 += batch<T>::load_unaligned(x + i + W);
        a2 += batch<T>::load_unaligned(x + i + 2 * W);
        a3 += batch<T>::load_unaligned(x + i + 3 * W);
    }
    for (; i + W <= n; i += W) a0 += batch<T>::load_unaligned(x + i);
    T s = xsimd::hadd((a0 + a1) + (a2 + a3));
    for (; i < n; ++i) s += x[i];
    return s;
}

/// out[o, k] = sum_j x[o, j, k] for inner > 1.
template <class T>
void col_sum(const T* x, T* out, std::int64_t n, std::int64_t inner)
{
    std::fill(out, out + inner, T(0));
    constexpr std::int64_t W = batch<T>::size;
    for (std::int64_t j = 0; j < n; ++j) {
        const T* r = x + j * inner;
        std::int64_t k = 0;
        for (; k + W <= inner; k += W)
            (batch<T>::load_unaligned(out + k) + batch<T>::load_unaligned(r + k)).store_unaligned(out + k);
        for (; k < inner; ++k) out[k] += r[k];
    }
}

Shape keep(const Shape& s, int axis)
{
    Shape o = s;
    o.set(axis, 1);
    return o;
}

template <class T>
T row_max(const T* x, std::int64_t n)
{
    T m = -std::numeric_limits<T>::infinity();
    for (std::int64_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) return x[i];
        if (x[i] > m) m = x[i];
    }
    return m;
}

}  // namespace

Value sum(const Value& x, int axis)
{
    axis = normalize_axis(axis, x.rank(), "sum");
    if (x.rank() == 0) return x.clone();
    auto [outer, n, inner] = split_at(x.shape(), axis);
    return dispatch_float(x.dtype(), "sum", [&]<class T>() {
        Value y = Value::empty(keep(x.shape(), axis), x.dtype());
        const T* xs = x.data<T>();
        T* ys = y.data<T>();
        int nt = threads_for(outer * n * inner);
        if (inner == 1) {
            spool::detail::parallel_for(outer, nt, [&](std::int64_t o) { ys[o] = row_sum(xs + o * n, n); });
        } else {
            spool::detail::parallel_for(outer, nt,
                                        [&](std::int64_t o) { col_sum(xs + o * n * inner, ys + o * inner, n, inner); });
        }
        return y;
    });
}

Value max(const Value& x, int axis, Value* indices)
{
    axis = normalize_axis(axis, x.rank(), "max");
    if (x.rank() == 0) {
        if (indices) *indices = Value::zeros({}, DType::i64);
        return x.clone();
    }
    auto [outer, n, inner] = split_at(x.shape(), axis);
    SPOOL_CHECK(n > 0, ValueError, "max: cannot reduce over an empty dimension; got shape ", to_string(x.shape()));
    return dispatch_float(x.dtype(), "max", [&]<class T>() {
        Shape os = keep(x.shape(), axis);
        Value y = Value::empty(os, x.dtype());
        Value idx = Value::empty(os, DType::i64);
        const T* xs = x.data<T>();
        T* ys = y.data<T>();
        std::int64_t* is = idx.data<std::int64_t>();
        for (std::int64_t o = 0; o < outer; ++o)
            for (std::int64_t k = 0; k < inner; ++k) {
                const T* p = xs + o * n * inner + k;
                T m = p[0];
                std::int64_t am = 0;
                for (std::int64_t j = 1; j < n && !std::isnan(m); ++j) {
                    T v = p[j * inner];
                    if (v > m || std::isnan(v)) m = v, am = j;  // NaN wins: max of NaN is NaN
                }
                ys[o * inner + k] = m;
                is[o * inner + k] = am;
            }
        if (indices) *indices = idx;
        return y;
    });
}

Value sum_to(const Value& g, const Shape& shape)
{
    if (g.shape() == shape) return g;
    const Shape& gs = g.shape();
    SPOOL_CHECK(gs.rank() >= shape.rank(), ShapeError, "sum_to: cannot reduce ", to_string(gs), " to ", to_string(shape));
    int off = gs.rank() - shape.rank();
    Value r = g;
    // reduce the leading extra dims by viewing them as one
    if (off > 0) {
        std::int64_t lead = gs.prod(0, off);
        Shape v;
        v.push_back(lead);
        for (int i = off; i < gs.rank(); ++i) v.push_back(gs[i]);
        r = sum(r.view(v), 0);
        Shape rest;
        for (int i = off; i < gs.rank(); ++i) rest.push_back(gs[i]);
        r = r.view(rest);
    }
    for (int i = 0; i < shape.rank(); ++i) {
        if (shape[i] == r.shape()[i]) continue;
        SPOOL_CHECK(shape[i] == 1, ShapeError, "sum_to: cannot reduce ", to_string(gs), " to ", to_string(shape));
        r = sum(r, i);
    }
    return r.view(shape);
}

Value broadcast_to(const Value& x, const Shape& shape)
{
    Shape out = broadcast_shapes(x.shape(), shape, "broadcast_to");
    SPOOL_CHECK(out == shape, ShapeError, "broadcast_to: cannot broadcast ", to_string(x.shape()), " to ",
                to_string(shape));
    if (x.shape() == shape) return x;
    Value z = Value::zeros(shape, x.dtype());
    add_(z, x);
    return z;
}

double sum_all(const Value& x)
{
    return dispatch_float(x.dtype(), "sum", [&]<class T>() {
        return static_cast<double>(row_sum(x.data<T>(), x.numel()));
    });
}

bool all_finite(const Value& x)
{
    if (!is_floating(x.dtype())) return true;
    return dispatch_float(x.dtype(), "all_finite", [&]<class T>() {
        const T* p = x.data<T>();
        // x - x is 0 for finite x and NaN for NaN or ±Inf: one pass, no branches
        constexpr std::int64_t W = batch<T>::size;
        std::int64_t n = x.numel(), i = 0;
        batch<T> acc(T(0));
        for (; i + W <= n; i += W) {
            auto v = batch<T>::load_unaligned(p + i);
            acc += v - v;
        }
        T s = xsimd::hadd(acc);
        for (; i < n; ++i) s += p[i] - p[i];
        return s == T(0);
    });
}

// ---- softmax family --------------------------------------------------------------------------

namespace {

/// y = softmax(x) (log form: y = x - max - log sum exp(x - max)) over a contiguous row.
template <class T, bool Log>
void softmax_row(const T* x, T* y, std::int64_t n)
{
    T m = row_max(x, n);
    if (std::isinf(m) && m < 0) m = 0;  // all -inf: keep exp(-inf - 0) = 0 instead of NaN from inf - inf
    constexpr std::int64_t W = batch<T>::size;
    batch<T> bm(m);
    // exp(x - m) into y, summed
    map1(x, y, n, [bm](auto v) { return xsimd::exp(v - bm); });
    T s = row_sum(y, n);
    if constexpr (Log) {
        // (x - m) - log s, not x - (m + log s): m + log s would round away log s's digits
        batch<T> ls(std::log(s));
        map1(x, y, n, [bm, ls](auto v) { return (v - bm) - ls; });
    } else {
        batch<T> inv(T(1) / s);
        std::int64_t i = 0;
        for (; i + W <= n; i += W) (batch<T>::load_unaligned(y + i) * inv).store_unaligned(y + i);
        for (; i < n; ++i) y[i] *= T(1) / s;
    }
}

/// Strided version (inner > 1): rows are x[j * inner] for j < n.
template <class T, bool Log>
void softmax_strided(const T* x, T* y, std::int64_t n, std::int64_t inner)
{
    for (std::int64_t k = 0; k < inner; ++k) {
        T m = -std::numeric_limits<T>::infinity();
        bool nan = false;
        for (std::int64_t j = 0; j < n; ++j) {
            T v = x[j * inner + k];
            nan |= std::isnan(v);
            m = v > m ? v : m;
        }
        if (std::isinf(m) && m < 0) m = 0;
        T s = 0;
        for (std::int64_t j = 0; j < n; ++j) s += std::exp(x[j * inner + k] - m);
        T ls = std::log(s);
        for (std::int64_t j = 0; j < n; ++j) {
            T v = x[j * inner + k];
            y[j * inner + k] = nan ? std::numeric_limits<T>::quiet_NaN() : (Log ? (v - m) - ls : std::exp(v - m) / s);
        }
    }
}

template <bool Log>
Value softmax_impl(const Value& x, int axis, const char* op)
{
    axis = normalize_axis(axis, x.rank(), op);
    Shape s = x.rank() == 0 ? Shape{1} : x.shape();
    auto [outer, n, inner] = split_at(s, x.rank() == 0 ? 0 : axis);
    return dispatch_float(x.dtype(), op, [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        const T* xs = x.data<T>();
        T* ys = y.data<T>();
        int nt = threads_for(outer * n * inner);
        spool::detail::parallel_for(outer, nt, [&](std::int64_t o) {
            if (inner == 1)
                softmax_row<T, Log>(xs + o * n, ys + o * n, n);
            else
                softmax_strided<T, Log>(xs + o * n * inner, ys + o * n * inner, n, inner);
        });
        return y;
    });
}

template <bool Log>
Value softmax_backward_impl(const Value& dy, const Value& y, int axis, const char* op)
{
    axis = normalize_axis(axis, y.rank(), op);
    Shape s = y.rank() == 0 ? Shape{1} : y.shape();
    auto [outer, n, inner] = split_at(s, y.rank() == 0 ? 0 : axis);
    return dispatch_float(y.dtype(), op, [&]<class T>() {
        Value dx = Value::empty(y.shape(), y.dtype());
        const T* g = dy.data<T>();
        const T* ys = y.data<T>();
        T* d = dx.data<T>();
        int nt = threads_for(outer * n * inner);
        spool::detail::parallel_for(outer, nt, [&](std::int64_t o) {
            for (std::int64_t k = 0; k < inner; ++k) {
                std::int64_t base = o * n * inner + k;
                T acc = 0;
                for (std::int64_t j = 0; j < n; ++j) {
                    std::int64_t i = base + j * inner;
                    acc += Log ? g[i] : g[i] * ys[i];
                }
                for (std::int64_t j = 0; j < n; ++j) {
                    std::int64_t i = base + j * inner;
                    d[i] = Log ? g[i] - std::exp(ys[i]) * acc : ys[i] * (g[i] - acc);
                }
            }
        });
        return dx;
    });
}

}  // namespace

Value softmax(const Value& x, int axis) { return softmax_impl<false>(x, axis, "softmax"); }
Value log_softmax(const Value& x, int axis) { return softmax_impl<true>(x, axis, "log_softmax"); }
Value softmax_backward(const Value& dy, const Value& y, int axis)
{
    return softmax_backward_impl<false>(dy, y, axis, "softmax_backward");
}
Value log_softmax_backward(const Value& dy, const Value& y, int axis)
{
    return softmax_backward_impl<true>(dy, y, axis, "log_softmax_backward");
}

}  // namespace spool::kernels
