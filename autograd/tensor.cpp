#include "autograd/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"
#include "tensor/random.hpp"

namespace spool {

Tensor::Tensor(Value v, bool requires_grad) : impl_(std::make_shared<TensorImpl>())
{
    impl_->value = std::move(v);
    if (requires_grad) requires_grad_(true);
}

void Tensor::throw_undefined(const char* what)
{
    throw ValueError(detail::cat("Tensor: undefined tensor; ", what,
                                 " needs a value (a default-constructed Tensor, or grad() before any backward)"));
}

std::int64_t Tensor::size(int d) const { return shape()[normalize_axis(d, dim(), "size")]; }

Tensor& Tensor::requires_grad_(bool on)
{
    SPOOL_CHECK(!on || is_floating(dtype()), TypeError,
                "requires_grad: only float32 and float64 tensors can require gradients; got ", dtype_name(dtype()));
    get("requires_grad_()").requires_grad = on;
    return *this;
}

Tensor Tensor::grad() const
{
    const Value& g = get("grad()").grad;
    if (!g.defined()) return Tensor();
    return Tensor(g);
}

void Tensor::set_grad(const Tensor& g)
{
    TensorImpl& self = get("set_grad()");
    if (!g.defined()) {
        self.grad = Value();
        return;
    }
    const Value& v = g.value();
    SPOOL_CHECK(!v.shares_storage(self.value), ValueError, "set_grad: a tensor cannot be its own gradient (the gradient "
                "shares the tensor's storage, shape ", to_string(self.value.shape()), "); pass a clone()");
    SPOOL_CHECK(is_floating(self.value.dtype()), TypeError, "set_grad: only float32 and float64 tensors have gradients; got dtype ",
                dtype_name(self.value.dtype()));
    SPOOL_CHECK(v.dtype() == self.value.dtype(), TypeError, "set_grad: the gradient must have the tensor's dtype; got gradient ",
                dtype_name(v.dtype()), " for tensor ", dtype_name(self.value.dtype()));
    SPOOL_CHECK(v.shape() == self.value.shape(), ShapeError, "set_grad: the gradient must have the tensor's shape; got gradient ",
                to_string(v.shape()), " for tensor ", to_string(self.value.shape()));
    self.grad = v;
}

void Tensor::zero_grad() { get("zero_grad()").grad = Value(); }

Tensor Tensor::detach() const { return Tensor(get("detach()").value); }

bool Tensor::is_leaf() const
{
    Tape* t = Tape::current();
    const TensorImpl& impl = get("is_leaf()");
    return !(t && impl.node >= 0 && impl.tape_id == t->id());
}

namespace {
/// tolist<T>() and item<T>() with T other than double: T must be the dtype's element type.
template <Element T>
void check_element_type(const Value& v, const char* what)
{
    SPOOL_CHECK(v.dtype() == dtype_of<T>::value, TypeError, what, "<", dtype_name(dtype_of<T>::value), ">: the tensor is ",
                dtype_name(v.dtype()), "; ask for its own element type (", dtype_name(v.dtype()),
                ") or for double (tolist(), item())");
}
}  // namespace

template <Element T>
T Tensor::item() const
{
    get("item()");
    SPOOL_CHECK(numel() == 1, ValueError, "item: a Tensor with ", numel(), " elements cannot be converted to a scalar; got shape ",
                to_string(shape()));
    if constexpr (std::same_as<T, double>) {
        return value().at(0);
    } else {
        check_element_type<T>(value(), "item");
        return value().data<T>()[0];
    }
}

double Tensor::at(std::int64_t i) const
{
    SPOOL_CHECK(i >= 0 && i < numel(), ValueError, "at: index ", i, " is out of range for a tensor of ", numel(),
                " elements, shape ", to_string(shape()));
    return value().at(i);
}

double Tensor::at(std::initializer_list<std::int64_t> idx) const
{
    SPOOL_CHECK(static_cast<int>(idx.size()) == dim(), ValueError, "at: expected ", dim(), " indices for shape ",
                to_string(shape()), "; got ", idx.size());
    std::int64_t flat = 0;
    int d = 0;
    for (auto i : idx) {
        SPOOL_CHECK(i >= 0 && i < shape()[d], ValueError, "at: index ", i, " is out of range for dimension ", d,
                    " of shape ", to_string(shape()));
        flat = flat * shape()[d] + i;
        ++d;
    }
    return value().at(flat);
}

template <Element T>
std::vector<T> Tensor::tolist() const
{
    const Value& v = get("tolist()").value;
    if constexpr (std::same_as<T, double>) {
        std::vector<double> out(v.numel());
        for (std::int64_t i = 0; i < v.numel(); ++i) out[i] = v.at(i);  // converts int64 and bool too
        return out;
    } else {
        check_element_type<T>(v, "tolist");
        const T* p = v.data<T>();
        return std::vector<T>(p, p + v.numel());
    }
}

template float Tensor::item<float>() const;
template double Tensor::item<double>() const;
template std::int64_t Tensor::item<std::int64_t>() const;
template bool Tensor::item<bool>() const;
template std::vector<float> Tensor::tolist<float>() const;
template std::vector<double> Tensor::tolist<double>() const;
template std::vector<std::int64_t> Tensor::tolist<std::int64_t>() const;
template std::vector<bool> Tensor::tolist<bool>() const;

void Tensor::backward() const
{
    Tape* t = Tape::current();
    SPOOL_CHECK(t, AutogradError, "backward: no live Tape on this thread; create a spool::Tape before the forward pass");
    t->backward(*this);
}

void Tensor::backward(const Tensor& seed) const
{
    Tape* t = Tape::current();
    SPOOL_CHECK(t, AutogradError, "backward: no live Tape on this thread; create a spool::Tape before the forward pass");
    t->backward(*this, seed);
}

// ---- printing (PyTorch's layout: tensor([[...], ...], dtype=..., requires_grad=True)) ----------

namespace {
void print_rec(std::ostream& os, const Value& v, int d, std::int64_t& i, int indent)
{
    const Shape& s = v.shape();
    if (d == s.rank()) {
        double x = v.at(i++);
        if (v.dtype() == DType::b8) os << (x != 0 ? "True" : "False");
        else if (v.dtype() == DType::i64) os << static_cast<std::int64_t>(x);
        else if (std::isnan(x)) os << "nan";
        else if (std::isinf(x)) os << (x > 0 ? "inf" : "-inf");
        else os << std::fixed << std::setprecision(4) << x;
        return;
    }
    os << '[';
    for (std::int64_t k = 0; k < s[d]; ++k) {
        if (k) {
            os << ',';
            if (d + 1 < s.rank()) os << '\n' << std::string(indent + d + 1, ' ');
            else os << ' ';
        }
        print_rec(os, v, d + 1, i, indent);
    }
    os << ']';
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t)
{
    if (!t.defined()) return os << "tensor(undefined)";
    std::ostringstream body;
    std::int64_t i = 0;
    print_rec(body, t.value(), 0, i, 7);
    os << "tensor(" << body.str();
    if (t.dtype() == DType::f64) os << ", dtype=torch.float64";
    if (t.requires_grad()) os << ", requires_grad=True";
    return os << ')';
}

// ---- creation -----------------------------------------------------------------------------------

Tensor empty(ShapeArg shape, TensorOptions o) { return Tensor(Value::empty(shape.get("empty"), o.dtype), o.requires_grad); }
Tensor zeros(ShapeArg shape, TensorOptions o) { return Tensor(Value::zeros(shape.get("zeros"), o.dtype), o.requires_grad); }
Tensor ones(ShapeArg shape, TensorOptions o) { return Tensor(Value::full(shape.get("ones"), 1.0, o.dtype), o.requires_grad); }
Tensor full(ShapeArg shape, double value, TensorOptions o)
{
    return Tensor(Value::full(shape.get("full"), value, o.dtype), o.requires_grad);
}
Tensor scalar(double value, TensorOptions o) { return full(Shape{}, value, o); }

Tensor arange(double start, double end, double step, TensorOptions o)
{
    SPOOL_CHECK(step != 0, ValueError, "arange: step must be nonzero");
    SPOOL_CHECK((end - start) * step >= 0, ValueError, "arange: upper bound and larger bound inconsistent with step sign; got start ",
                start, ", end ", end, ", step ", step);
    const double len = std::ceil((end - start) / step);
    SPOOL_CHECK(std::isfinite(len) && len <= static_cast<double>(Shape::max_numel), ValueError, "arange: ", len,
                " elements are too many for one tensor; got start ", start, ", end ", end, ", step ", step);
    const auto n = static_cast<std::int64_t>(len);
    Value v = Value::empty(Shape{n}, o.dtype);
    for (std::int64_t i = 0; i < n; ++i) v.set(i, start + static_cast<double>(i) * step);
    return Tensor(std::move(v), o.requires_grad);
}

Tensor arange(double end, TensorOptions o) { return arange(0, end, 1, o); }

namespace {
template <class V>
Tensor from_data(const V& data, const Shape& shape, TensorOptions o)
{
    SPOOL_CHECK(static_cast<std::int64_t>(data.size()) == shape.numel(), ShapeError, "from_vector: ", data.size(),
                " values do not fill shape ", to_string(shape), " (", shape.numel(), " elements)");
    Value v = Value::empty(shape, o.dtype);
    for (std::size_t i = 0; i < data.size(); ++i) v.set(static_cast<std::int64_t>(i), static_cast<double>(data[i]));
    return Tensor(std::move(v), o.requires_grad);
}
}  // namespace

Tensor from_vector(const std::vector<double>& d, ShapeArg s, TensorOptions o) { return from_data(d, s.get("from_vector"), o); }
Tensor from_vector(const std::vector<float>& d, ShapeArg s, TensorOptions o) { return from_data(d, s.get("from_vector"), o); }
Tensor from_vector(const std::vector<std::int64_t>& d, ShapeArg arg, TensorOptions o)
{
    const Shape s = arg.get("from_vector");
    if (o.dtype == DType::i64) {  // exact for every int64, not via double
        SPOOL_CHECK(static_cast<std::int64_t>(d.size()) == s.numel(), ShapeError, "from_vector: ", d.size(),
                    " values do not fill shape ", to_string(s), " (", s.numel(), " elements)");
        Value v = Value::empty(s, DType::i64);
        std::copy(d.begin(), d.end(), v.data<std::int64_t>());
        return Tensor(std::move(v));
    }
    return from_data(d, s, o);
}
Tensor from_vector(const std::vector<bool>& d, ShapeArg s, TensorOptions o) { return from_data(d, s.get("from_vector"), o); }

Tensor rand(ShapeArg shape, TensorOptions o)
{
    Value v = Value::empty(shape.get("rand"), o.dtype);
    std::int64_t n = v.numel();
    if (o.dtype == DType::f32) rng::uniform(rng::reserve((n + 3) / 4), v.data<float>(), n);
    else if (o.dtype == DType::f64) rng::uniform(rng::reserve((n + 1) / 2), v.data<double>(), n);
    else throw TypeError(detail::cat("rand: expected a float dtype; got ", dtype_name(o.dtype)));
    return Tensor(std::move(v), o.requires_grad);
}

Tensor randn(ShapeArg shape, TensorOptions o)
{
    Value v = Value::empty(shape.get("randn"), o.dtype);
    std::int64_t n = v.numel();
    if (o.dtype == DType::f32) rng::normal(rng::reserve((n + 1) / 2), v.data<float>(), n);
    else if (o.dtype == DType::f64) rng::normal(rng::reserve(n), v.data<double>(), n);
    else throw TypeError(detail::cat("randn: expected a float dtype; got ", dtype_name(o.dtype)));
    return Tensor(std::move(v), o.requires_grad);
}

Tensor uniform(ShapeArg shape, double low, double high, TensorOptions o)
{
    SPOOL_CHECK(low <= high, ValueError, "uniform: low must be <= high; got ", low, " and ", high);
    Tensor u = rand(shape.get("uniform"), {.dtype = o.dtype});
    Value v = kernels::add_scalar(kernels::mul_scalar(u.value(), high - low), low);
    return Tensor(std::move(v), o.requires_grad);
}

Tensor randint(std::int64_t low, std::int64_t high, ShapeArg shape, TensorOptions o)
{
    SPOOL_CHECK(low < high, ValueError, "randint: low must be less than high; got low ", low, " and high ", high);
    const Tensor u = rand(shape.get("randint"), {.dtype = DType::f64});
    Value v = Value::empty(u.shape(), DType::i64);
    const double* us = u.value().data<double>();
    std::int64_t* vs = v.data<std::int64_t>();
    // offsets in unsigned 64-bit arithmetic, so any [low, high) of int64 works; the span as a
    // double is exact up to 2^53 and rounds beyond, and the clamp keeps every value < high
    const std::uint64_t span = static_cast<std::uint64_t>(high) - static_cast<std::uint64_t>(low);
    const double spanf = static_cast<double>(span);
    for (std::int64_t i = 0; i < v.numel(); ++i) {
        const auto off = std::min(static_cast<std::uint64_t>(us[i] * spanf), span - 1);  // us[i] < 1: no overflow
        vs[i] = static_cast<std::int64_t>(static_cast<std::uint64_t>(low) + off);
    }
    return Tensor(o.dtype == DType::i64 ? std::move(v) : kernels::cast(v, o.dtype));
}

}  // namespace spool
