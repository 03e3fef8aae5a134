// Reductions over one axis (keepdim), the broadcasting adjoint sum_to, and the row
// kernels softmax / log_softmax with their backward. An axis splits a tensor into
// [outer, n, inner]: inner == 1 is a contiguous row (SIMD along it), otherwise SIMD
// runs across inner. The loops of sum and the softmaxes run in the chosen instruction set's
// compilation (tensor/kernels_arch.cpp).
#include <cmath>
#include <limits>

#include "tensor/kernels.hpp"
#include "tensor/kernels_arch.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {

Shape keep(const Shape& s, int axis)
{
    Shape o = s;
    o.set(axis, 1);
    return o;
}

}  // namespace

Value sum(const Value& x, int axis)
{
    axis = normalize_axis(axis, x.rank(), "sum");
    if (x.rank() == 0) return x.clone();
    auto [outer, n, inner] = split_at(x.shape(), axis);
    return dispatch_float(x.dtype(), "sum", [&]<class T>() {
        Value y = Value::empty(keep(x.shape(), axis), x.dtype());
        typed_kernels<T>().sum(x.data<T>(), y.data<T>(), outer, n, inner);
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
        T s = 0;
        typed_kernels<T>().sum(x.data<T>(), &s, 1, x.numel(), 1);
        return static_cast<double>(s);
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

template <bool Log>
Value softmax_impl(const Value& x, int axis, const char* op)
{
    axis = normalize_axis(axis, x.rank(), op);
    Shape s = x.rank() == 0 ? Shape{1} : x.shape();
    auto [outer, n, inner] = split_at(s, x.rank() == 0 ? 0 : axis);
    return dispatch_float(x.dtype(), op, [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        typed_kernels<T>().softmax(Log, x.data<T>(), y.data<T>(), outer, n, inner);
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
        typed_kernels<T>().softmax_backward(Log, dy.data<T>(), y.data<T>(), dx.data<T>(), outer, n, inner);
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
