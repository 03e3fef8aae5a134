// Elementwise ops: arithmetic (broadcasting), activations, clamp, selection, dropout, cast.
// Broadcasting's adjoint is kernels::sum_to, the one helper every binary op uses.
#include <cmath>
#include <limits>

#include "autograd/checks.hpp"
#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"

namespace spool {

namespace k = kernels;

using detail::check_float;
using detail::check_float_pair;

// ---- arithmetic ------------------------------------------------------------------------------

// add(a, b) -> y = a + b          da += sum_to(dy), db += sum_to(dy)
Tensor add(const Tensor& a, const Tensor& b)
{
    detail::OpProfile prof(OpKind::Add);
    check_float_pair(a, b, "add");
    Value y = k::add(a.value(), b.value());
    return record(OpKind::Add, {a, b}, std::move(y), [sa = a.shape(), sb = b.shape()](const Value& dy, Grads& dx) {
        if (dx.needs(0)) dx.add(0, k::sum_to(dy, sa));
        if (dx.needs(1)) dx.add(1, k::sum_to(dy, sb));
    });
}

// sub(a, b) -> y = a - b          da += sum_to(dy), db -= sum_to(dy)
Tensor sub(const Tensor& a, const Tensor& b)
{
    detail::OpProfile prof(OpKind::Sub);
    check_float_pair(a, b, "sub");
    Value y = k::sub(a.value(), b.value());
    return record(OpKind::Sub, {a, b}, std::move(y), [sa = a.shape(), sb = b.shape()](const Value& dy, Grads& dx) {
        if (dx.needs(0)) dx.add(0, k::sum_to(dy, sa));
        if (dx.needs(1)) dx.add(1, k::sum_to(k::unary(k::Unary::neg, dy), sb));
    });
}

// mul(a, b) -> y = a * b          da += sum_to(dy * b), db += sum_to(dy * a)      saves a, b
Tensor mul(const Tensor& a, const Tensor& b)
{
    detail::OpProfile prof(OpKind::Mul);
    check_float_pair(a, b, "mul");
    Value y = k::mul(a.value(), b.value());
    Value va = a.value(), vb = b.value();
    return record(
        OpKind::Mul, {a, b}, std::move(y),
        [va, vb](const Value& dy, Grads& dx) {
            if (dx.needs(0)) dx.add(0, k::sum_to(k::mul(dy, vb), va.shape()));
            if (dx.needs(1)) dx.add(1, k::sum_to(k::mul(dy, va), vb.shape()));
        },
        {va, vb});
}

// div(a, b) -> y = a / b          da += sum_to(dy / b), db -= sum_to(dy * y / b)   saves b, y
Tensor div(const Tensor& a, const Tensor& b)
{
    detail::OpProfile prof(OpKind::Div);
    check_float_pair(a, b, "div");
    Value y = k::div(a.value(), b.value());
    Value vb = b.value();
    Shape sa = a.shape();
    return record(
        OpKind::Div, {a, b}, y,
        [vb, y, sa](const Value& dy, Grads& dx) {
            Value g = k::div(dy, vb);
            if (dx.needs(1)) dx.add(1, k::sum_to(k::unary(k::Unary::neg, k::mul(g, y)), vb.shape()));
            if (dx.needs(0)) dx.add(0, k::sum_to(g, sa));
        },
        {vb, y});
}

// add_scalar(x, s) -> y = x + s   dx += dy
Tensor add(const Tensor& a, double s)
{
    detail::OpProfile prof(OpKind::AddScalar);
    check_float(a, "add");
    return record(OpKind::AddScalar, {a}, k::add_scalar(a.value(), s),
                  [](const Value& dy, Grads& dx) { dx.add(0, dy); });
}

// mul_scalar(x, s) -> y = x * s   dx += dy * s
Tensor mul(const Tensor& a, double s)
{
    detail::OpProfile prof(OpKind::MulScalar);
    check_float(a, "mul");
    return record(OpKind::MulScalar, {a}, k::mul_scalar(a.value(), s),
                  [s](const Value& dy, Grads& dx) { dx.add(0, k::mul_scalar(dy, s)); });
}

// neg(x) -> y = -x                dx -= dy
Tensor neg(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Neg);
    check_float(x, "neg");
    return record(OpKind::Neg, {x}, k::unary(k::Unary::neg, x.value()),
                  [](const Value& dy, Grads& dx) { dx.add(0, k::unary(k::Unary::neg, dy)); });
}

// pow(x, p) -> y = x^p            dx += dy * p * x^(p-1)                           saves x
Tensor pow(const Tensor& x, double p)
{
    detail::OpProfile prof(OpKind::PowScalar);
    check_float(x, "pow");
    Value vx = x.value();
    return record(
        OpKind::PowScalar, {x}, k::pow_scalar(vx, p),
        [vx, p](const Value& dy, Grads& dx) { dx.add(0, k::pow_backward(dy, vx, p)); }, {vx});
}

// ---- unary math ---------------------------------------------------------------------------------

// exp(x) -> y = e^x               dx += dy * y                                     saves y
Tensor exp(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Exp);
    check_float(x, "exp");
    Value y = k::unary(k::Unary::exp, x.value());
    return record(OpKind::Exp, {x}, y, [y](const Value& dy, Grads& dx) { dx.add(0, k::mul(dy, y)); }, {y});
}

// log(x) -> y = ln x              dx += dy / x                                     saves x
Tensor log(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Log);
    check_float(x, "log");
    Value vx = x.value();
    return record(
        OpKind::Log, {x}, k::unary(k::Unary::log, vx), [vx](const Value& dy, Grads& dx) { dx.add(0, k::div(dy, vx)); },
        {vx});
}

// sqrt(x) -> y = √x               dx += dy / (2 y)                                 saves y
Tensor sqrt(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Sqrt);
    check_float(x, "sqrt");
    Value y = k::unary(k::Unary::sqrt, x.value());
    return record(
        OpKind::Sqrt, {x}, y, [y](const Value& dy, Grads& dx) { dx.add(0, k::div(k::mul_scalar(dy, 0.5), y)); }, {y});
}

// abs(x) -> y = |x|               dx += dy * sign(x)  (0 at x = 0, as PyTorch)      saves x
Tensor abs(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Abs);
    check_float(x, "abs");
    Value vx = x.value();
    return record(
        OpKind::Abs, {x}, k::unary(k::Unary::abs, vx),
        [vx](const Value& dy, Grads& dx) { dx.add(0, k::abs_backward(dy, vx)); }, {vx});
}

// tanh(x) -> y                    dx += dy * (1 - y^2)                             saves y
Tensor tanh(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Tanh);
    check_float(x, "tanh");
    Value y = k::unary(k::Unary::tanh, x.value());
    return record(OpKind::Tanh, {x}, y, [y](const Value& dy, Grads& dx) { dx.add(0, k::tanh_backward(dy, y)); }, {y});
}

// sigmoid(x) -> y = 1/(1+e^-x)    dx += dy * y * (1 - y)                           saves y
Tensor sigmoid(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Sigmoid);
    check_float(x, "sigmoid");
    Value y = k::unary(k::Unary::sigmoid, x.value());
    return record(
        OpKind::Sigmoid, {x}, y, [y](const Value& dy, Grads& dx) { dx.add(0, k::sigmoid_backward(dy, y)); }, {y});
}

// relu(x) -> y = max(x, 0)        dx += dy * (x > 0)                               saves x
Tensor relu(const Tensor& x)
{
    detail::OpProfile prof(OpKind::Relu);
    check_float(x, "relu");
    Value vx = x.value();
    return record(
        OpKind::Relu, {x}, k::unary(k::Unary::relu, vx),
        [vx](const Value& dy, Grads& dx) { dx.add(0, k::relu_backward(dy, vx)); }, {vx});
}

// gelu(x) -> y = x Φ(x)  (or the tanh approximation)
//   dx += dy * (Φ(x) + x φ(x))                                                     saves x
Tensor gelu(const Tensor& x, std::string_view approximate)
{
    detail::OpProfile prof(OpKind::Gelu);
    check_float(x, "gelu");
    SPOOL_CHECK(approximate == "none" || approximate == "tanh", ValueError,
                "gelu: approximate must be 'none' or 'tanh'; got '", approximate, "'");
    bool t = approximate == "tanh";
    Value vx = x.value();
    return record(
        OpKind::Gelu, {x}, k::unary(t ? k::Unary::gelu_tanh : k::Unary::gelu_erf, vx),
        [vx, t](const Value& dy, Grads& dx) { dx.add(0, k::gelu_backward(dy, vx, t)); }, {vx});
}

// clamp(x, lo, hi)                dx += dy * (lo <= x <= hi)                       saves x
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max)
{
    detail::OpProfile prof(OpKind::Clamp);
    check_float(x, "clamp");
    SPOOL_CHECK(min || max, ValueError, "clamp: at least one of min and max must be given");
    double lo = min.value_or(-std::numeric_limits<double>::infinity());
    double hi = max.value_or(std::numeric_limits<double>::infinity());
    SPOOL_CHECK(!std::isnan(lo) && !std::isnan(hi), ValueError, "clamp: bounds must not be NaN; got min ", lo, " and max ", hi);
    Value vx = x.value();
    return record(
        OpKind::Clamp, {x}, k::clamp(vx, lo, hi),
        [vx, lo, hi](const Value& dy, Grads& dx) { dx.add(0, k::clamp_backward(dy, vx, lo, hi)); }, {vx});
}

Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator+(double s, const Tensor& a) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
Tensor operator-(double s, const Tensor& a) { return add(neg(a), s); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }

// ---- selection ---------------------------------------------------------------------------------

// masked_fill(x, mask, v) -> y = mask ? v : x      dx += dy * !mask                saves mask
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value)
{
    detail::OpProfile prof(OpKind::MaskedFill);
    check_float(x, "masked_fill");
    SPOOL_CHECK(mask.defined(), ValueError, "masked_fill: mask is undefined");
    Value m = mask.value();
    return record(
        OpKind::MaskedFill, {x}, k::masked_fill(x.value(), m, value),
        [m](const Value& dy, Grads& dx) { dx.add(0, k::masked_fill(dy, m, 0.0)); }, {m});
}

// where(c, a, b) -> y = c ? a : b   da += sum_to(c ? dy : 0), db += sum_to(c ? 0 : dy)  saves c
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b)
{
    detail::OpProfile prof(OpKind::Where);
    check_float_pair(a, b, "where");
    SPOOL_CHECK(cond.defined(), ValueError, "where: condition is undefined");
    Value c = cond.value();
    Value y = k::where(c, a.value(), b.value());
    return record(
        OpKind::Where, {a, b}, std::move(y),
        [c, sa = a.shape(), sb = b.shape()](const Value& dy, Grads& dx) {
            Value zero = Value::zeros({}, dy.dtype());
            if (dx.needs(0)) dx.add(0, k::sum_to(k::where(c, dy, zero), sa));
            if (dx.needs(1)) dx.add(1, k::sum_to(k::where(c, zero, dy), sb));
        },
        {c});
}

// dropout(x, p) -> y = x * m, m = 0 w.p. p else 1/(1-p)     dx += dy * m          saves m as bits
Tensor dropout(const Tensor& x, double p, bool training)
{
    detail::OpProfile prof(OpKind::Dropout);
    check_float(x, "dropout");
    SPOOL_CHECK(p >= 0 && p <= 1, ValueError, "dropout: probability has to be between 0 and 1; got ", p);
    if (!training || p == 0) return x;
    // the mask is saved as one bit per element (PyTorch keeps a byte): backward applies the
    // bits instead of drawing the Philox words again, which cost twice as much
    const RngState s = k::dropout_reserve(x.numel());
    if (!detail::recording(&x, 1)) return detail::unrecorded(OpKind::Dropout, k::dropout_apply(x.value(), p, s));
    Value keep;
    Value y = k::dropout_apply(x.value(), p, s, &keep);
    return record(
        OpKind::Dropout, {x}, std::move(y),
        [keep, p](const Value& dy, Grads& dx) { dx.add(0, k::dropout_apply_bits(keep, dy, p)); }, {keep});
}

// relu_dropout(x, p) -> y = dropout(relu(x), p) in one pass, the same numbers and draw
//   dx += x > 0 ? dy * m : 0   (m = 0 or 1/(1-p), read from y > 0)     saves y and x > 0 as bits
Tensor relu_dropout(const Tensor& x, double p, bool training)
{
    detail::OpProfile prof(OpKind::ReluDropout);
    check_float(x, "relu_dropout");
    SPOOL_CHECK(p >= 0 && p < 1, ValueError, "relu_dropout: probability has to be in [0, 1); got ", p);
    if (!training || p == 0) return relu(x);
    const RngState s = k::dropout_reserve(x.numel());  // the words dropout would draw
    Value pos;
    Value y = k::relu_dropout(x.value(), p, s, &pos);
    if (!detail::recording(&x, 1)) return detail::unrecorded(OpKind::ReluDropout, std::move(y));
    return record(
        OpKind::ReluDropout, {x}, y,
        [pos, y, p](const Value& dy, Grads& dx) { dx.add(0, k::relu_dropout_backward(pos, y, dy, p)); }, {pos, y});
}

// to(x, dtype) -> y = cast(x)     dx += cast(dy, x.dtype)
Tensor to(const Tensor& x, DType dtype)
{
    detail::OpProfile prof(OpKind::Cast);
    SPOOL_CHECK(x.defined(), ValueError, "to: input tensor is undefined");
    if (x.dtype() == dtype) return x;
    DType from = x.dtype();
    if (!is_floating(dtype) || !is_floating(from)) return Tensor(k::cast(x.value(), dtype));  // not differentiable
    return record(OpKind::Cast, {x}, k::cast(x.value(), dtype),
                  [from](const Value& dy, Grads& dx) { dx.add(0, k::cast(dy, from)); });
}

}  // namespace spool
