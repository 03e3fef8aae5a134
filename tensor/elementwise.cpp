// Elementwise kernels: broadcasting binary ops, unary math, scalar ops, the backward
// helpers of the activations, where / masked_fill. Reductions live in reduce.cpp. The loops of
// the binary ops, unary math and the activations' backward run in the chosen instruction set's
// compilation (tensor/kernels_arch.cpp); scalar ops, pow, clamp and selection at the baseline.
#include <cmath>
#include <limits>

#include "tensor/kernels.hpp"
#include "tensor/kernels_arch.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

// ---- broadcasting plan ------------------------------------------------------------------
// Operands are described by strides over the output shape (0 on broadcast dims); adjacent
// dims that are contiguous for every operand are merged, so the common cases (same shape,
// scalar, bias over rows) become one long inner loop or rows of a long inner loop.

namespace {

template <int N>
struct Plan {
    int rank = 0;
    std::int64_t dims[Shape::max_rank]{};
    std::int64_t strides[N][Shape::max_rank]{};
};

template <int N>
Plan<N> make_plan(const Shape& out, const Shape* const (&ins)[N])
{
    Plan<N> p;
    int r = out.rank();
    std::int64_t dims[Shape::max_rank], st[N][Shape::max_rank];
    for (int k = 0; k < N; ++k) {
        auto s = ins[k]->strides();
        int off = r - ins[k]->rank();
        for (int i = 0; i < r; ++i) {
            int j = i - off;
            st[k][i] = (j < 0 || (*ins[k])[j] == 1) ? 0 : s[j];
        }
    }
    for (int i = 0; i < r; ++i) dims[i] = out[i];
    // merge dim i into the running last dim when every operand is contiguous across them
    for (int i = 0; i < r; ++i) {
        if (dims[i] == 1) continue;
        bool merge = p.rank > 0;
        for (int k = 0; k < N && merge; ++k)
            merge = st[k][i] * dims[i] == p.strides[k][p.rank - 1];
        if (merge) {
            // previous dim (outer) has stride == st * dims[i]: merge into one dim
            for (int k = 0; k < N; ++k) p.strides[k][p.rank - 1] = st[k][i];
            p.dims[p.rank - 1] *= dims[i];
        } else {
            for (int k = 0; k < N; ++k) p.strides[k][p.rank] = st[k][i];
            p.dims[p.rank++] = dims[i];
        }
    }
    if (p.rank == 0) {  // scalar (or all dims 1)
        p.rank = 1;
        p.dims[0] = 1;
        for (int k = 0; k < N; ++k) p.strides[k][0] = 0;
    }
    return p;
}

/// Calls row(offsets[N], n) for every row of the plan (the last dim is the row).
template <int N, class Row>
void for_each_row(const Plan<N>& p, Row row)
{
    std::int64_t rows = 1;
    for (int i = 0; i < p.rank - 1; ++i) rows *= p.dims[i];
    std::int64_t n = p.dims[p.rank - 1];
    auto run = [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
            std::int64_t off[N] = {};
            std::int64_t rem = r;
            for (int i = p.rank - 2; i >= 0; --i) {
                std::int64_t c = rem % p.dims[i];
                rem /= p.dims[i];
                for (int k = 0; k < N; ++k) off[k] += c * p.strides[k][i];
            }
            row(off, n);
        }
    };
    const int nt = rows * n < parallel_grain || rows == 1 ? 1 : get_num_threads();
    spool::detail::parallel_blocks(rows, nt, 1, run);
}

/// The loops run in the chosen instruction set's compilation (tensor/kernels_arch.cpp), a row at a time.
Value binary(const Value& a, const Value& b, const char* op, Binary f)
{
    check_same_float(a, b, op);
    Shape out = broadcast_shapes(a.shape(), b.shape(), op);
    return dispatch_float(a.dtype(), op, [&]<class T>() {
        Value z = Value::empty(out, a.dtype());
        const Shape* ins[3] = {&a.shape(), &b.shape(), &out};
        auto p = make_plan<3>(out, ins);
        const T* x = a.data<T>();
        const T* y = b.data<T>();
        T* o = z.data<T>();
        const auto row = typed_kernels<T>().binary_row;
        for_each_row<3>(p, [&](const std::int64_t* off, std::int64_t n) {
            row(f, x + off[0], p.strides[0][p.rank - 1], y + off[1], p.strides[1][p.rank - 1], o + off[2], n);
        });
        return z;
    });
}

}  // namespace

Value add(const Value& a, const Value& b) { return binary(a, b, "add", Binary::add); }
Value sub(const Value& a, const Value& b) { return binary(a, b, "sub", Binary::sub); }
Value mul(const Value& a, const Value& b) { return binary(a, b, "mul", Binary::mul); }
Value div(const Value& a, const Value& b) { return binary(a, b, "div", Binary::div); }

void add_(Value& a, const Value& b)
{
    check_same_float(a, b, "add_");
    Shape out = broadcast_shapes(a.shape(), b.shape(), "add_");
    SPOOL_CHECK(out == a.shape(), ShapeError, "add_: cannot broadcast ", to_string(b.shape()), " into ",
                to_string(a.shape()));
    a.bump_version();
    dispatch_float(a.dtype(), "add_", [&]<class T>() {
        const Shape* ins[2] = {&a.shape(), &b.shape()};
        auto p = make_plan<2>(out, ins);
        T* x = a.data<T>();
        const T* y = b.data<T>();
        const auto row = typed_kernels<T>().binary_row;
        for_each_row<2>(p, [&](const std::int64_t* off, std::int64_t n) {
            row(Binary::add, x + off[0], std::int64_t{1}, y + off[1], p.strides[1][p.rank - 1], x + off[0], n);
        });
    });
}

// ---- unary -----------------------------------------------------------------------------

namespace {

Value map_unary(const Value& x, Unary op, const char* name)
{
    return dispatch_float(x.dtype(), name, [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        typed_kernels<T>().unary(op, x.data<T>(), y.data<T>(), x.numel());
        return y;
    });
}

void check_same(const Value& a, const Value& b, const char* op)
{
    check_same_float(a, b, op);
    SPOOL_CHECK(a.shape() == b.shape(), ShapeError, op, ": shapes must match; got ", to_string(a.shape()), " and ",
                to_string(b.shape()));
}

template <class F>
Value map_binary_same(const Value& a, const Value& b, const char* op, F f)
{
    check_same(a, b, op);
    return dispatch_float(a.dtype(), op, [&]<class T>() {
        Value z = Value::empty(a.shape(), a.dtype());
        map2(a.data<T>(), b.data<T>(), z.data<T>(), a.numel(), f);
        return z;
    });
}

/// dx = dy * op'(s) in the chosen instruction set's compilation.
Value map_backward(const Value& dy, const Value& s, UnaryBackward op, const char* name)
{
    check_same(dy, s, name);
    return dispatch_float(dy.dtype(), name, [&]<class T>() {
        Value dx = Value::empty(dy.shape(), dy.dtype());
        typed_kernels<T>().unary_backward(op, dy.data<T>(), s.data<T>(), dx.data<T>(), dy.numel());
        return dx;
    });
}

}  // namespace

Value unary(Unary op, const Value& x)
{
    static constexpr const char* names[] = {"neg", "exp",  "log",  "sqrt", "abs",    "tanh",
                                            "sigmoid", "relu", "gelu", "gelu", "square", "sign"};
    return map_unary(x, op, names[static_cast<int>(op)]);
}

Value add_scalar(const Value& x, double s)
{
    return dispatch_float(x.dtype(), "add", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        batch<T> bs(static_cast<T>(s));
        map1(x.data<T>(), y.data<T>(), x.numel(), [bs](auto v) { return v + bs; });
        return y;
    });
}

Value mul_scalar(const Value& x, double s)
{
    return dispatch_float(x.dtype(), "mul", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        batch<T> bs(static_cast<T>(s));
        map1(x.data<T>(), y.data<T>(), x.numel(), [bs](auto v) { return v * bs; });
        return y;
    });
}

namespace {
/// x^p for a batch: exact repeated multiplication for small integer p, xsimd::pow otherwise.
template <class B>
B pow_b(B x, double p)
{
    using T = typename B::value_type;
    if (p == std::floor(p) && std::abs(p) <= 64) {
        long e = static_cast<long>(std::abs(p));
        B r(1), base = x;
        while (e) {
            if (e & 1) r = r * base;
            base = base * base;
            e >>= 1;
        }
        return p < 0 ? B(1) / r : r;
    }
    const B r = p == 0.5 ? xsimd::sqrt(x) : xsimd::pow(x, B(static_cast<T>(p)));
    // xsimd::pow goes through log(x): right for finite x > 0 only. Zero, negative, NaN and
    // infinite lanes (rare) take std::pow, whose IEEE rules PyTorch follows: pow(0, -0.5) is
    // inf (so x^0.5's gradient at 0 is inf, not 0), pow(-1, 0.5) is NaN, pow(-0, 0.5) is +0.
    constexpr T inf = std::numeric_limits<T>::infinity();
    if (xsimd::all((x > B(0)) & (x < B(inf)))) return r;
    alignas(64) T xs[B::size], rs[B::size];
    x.store_aligned(xs);
    r.store_aligned(rs);
    for (std::size_t i = 0; i < B::size; ++i)
        if (!(xs[i] > 0 && xs[i] < inf)) rs[i] = static_cast<T>(std::pow(xs[i], static_cast<T>(p)));
    return B::load_aligned(rs);
}
}  // namespace

Value pow_scalar(const Value& x, double p)
{
    return dispatch_float(x.dtype(), "pow", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        map1(x.data<T>(), y.data<T>(), x.numel(), [p](auto v) { return pow_b(v, p); });
        return y;
    });
}

Value clamp(const Value& x, double lo, double hi)
{
    SPOOL_CHECK(!(lo > hi), ValueError, "clamp: min must be <= max; got min ", lo, " and max ", hi);
    return dispatch_float(x.dtype(), "clamp", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        batch<T> l(static_cast<T>(lo)), h(static_cast<T>(hi));
        map1(x.data<T>(), y.data<T>(), x.numel(),
             [l, h](auto v) { return xsimd::select(v < l, l, xsimd::select(v > h, h, v)); });
        return y;
    });
}

// ---- backward helpers --------------------------------------------------------------------

Value relu_backward(const Value& dy, const Value& x) { return map_backward(dy, x, UnaryBackward::relu, "relu_backward"); }
Value tanh_backward(const Value& dy, const Value& y) { return map_backward(dy, y, UnaryBackward::tanh, "tanh_backward"); }
Value sigmoid_backward(const Value& dy, const Value& y)
{
    return map_backward(dy, y, UnaryBackward::sigmoid, "sigmoid_backward");
}
Value gelu_backward(const Value& dy, const Value& x, bool tanh_approx)
{
    return map_backward(dy, x, tanh_approx ? UnaryBackward::gelu_tanh : UnaryBackward::gelu_erf, "gelu_backward");
}
Value abs_backward(const Value& dy, const Value& x) { return map_backward(dy, x, UnaryBackward::abs, "abs_backward"); }

Value clamp_backward(const Value& dy, const Value& x, double lo, double hi)
{
    return map_binary_same(dy, x, "clamp_backward", [lo, hi](auto g, auto v) {
        using B = decltype(v);
        using T = typename B::value_type;
        return xsimd::select((v >= B(static_cast<T>(lo))) && (v <= B(static_cast<T>(hi))), g, B(0));
    });
}

Value pow_backward(const Value& dy, const Value& x, double p)
{
    if (p == 0) return Value::zeros(x.shape(), x.dtype());
    return map_binary_same(dy, x, "pow_backward", [p](auto g, auto v) {
        using B = decltype(v);
        using T = typename B::value_type;
        return g * B(static_cast<T>(p)) * pow_b(v, p - 1);
    });
}

// ---- selection ------------------------------------------------------------------------------

Value where(const Value& cond, const Value& a, const Value& b)
{
    SPOOL_CHECK(cond.dtype() == DType::b8, TypeError, "where: condition must be bool; got ", dtype_name(cond.dtype()));
    check_same_float(a, b, "where");
    Shape out = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
    return dispatch_float(a.dtype(), "where", [&]<class T>() {
        Value z = Value::empty(out, a.dtype());
        const Shape* ins[4] = {&cond.shape(), &a.shape(), &b.shape(), &out};
        auto p = make_plan<4>(out, ins);
        const bool* c = cond.data<bool>();
        const T* x = a.data<T>();
        const T* y = b.data<T>();
        T* o = z.data<T>();
        int last = p.rank - 1;
        for_each_row<4>(p, [&](const std::int64_t* off, std::int64_t n) {
            for (std::int64_t i = 0; i < n; ++i)
                o[off[3] + i] = c[off[0] + i * p.strides[0][last]] ? x[off[1] + i * p.strides[1][last]]
                                                                  : y[off[2] + i * p.strides[2][last]];
        });
        return z;
    });
}

Value masked_fill(const Value& x, const Value& mask, double value)
{
    SPOOL_CHECK(mask.dtype() == DType::b8, TypeError, "masked_fill: mask must be bool; got ", dtype_name(mask.dtype()));
    Shape out = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
    SPOOL_CHECK(out == x.shape(), ShapeError, "masked_fill: mask ", to_string(mask.shape()),
                " does not broadcast to the input ", to_string(x.shape()));
    return dispatch_float(x.dtype(), "masked_fill", [&]<class T>() {
        Value z = Value::empty(out, x.dtype());
        const Shape* ins[2] = {&mask.shape(), &out};
        auto p = make_plan<2>(out, ins);
        const bool* m = mask.data<bool>();
        const T* xs = x.data<T>();
        T* o = z.data<T>();
        T v = static_cast<T>(value);
        int last = p.rank - 1;
        for_each_row<2>(p, [&](const std::int64_t* off, std::int64_t n) {
            for (std::int64_t i = 0; i < n; ++i) o[off[1] + i] = m[off[0] + i * p.strides[0][last]] ? v : xs[off[1] + i];
        });
        return z;
    });
}

}  // namespace spool::kernels
