// Opt-in interop with xtensor: views of a Tensor's buffer as xtensor containers (no copy),
// Tensors evaluated straight from xtensor expressions, and the copying xarray round trip.
// Not included by spool.hpp, so programs that do not need it do not pay xtensor's compile
// time. Views carry no gradient: they are for data and metrics, like PyTorch's .numpy().
//   #include "autograd/xtensor.hpp"      (installed: <spool/autograd/xtensor.hpp>)
#pragma once
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xnoalias.hpp>
#include <xtensor/xtensor.hpp>

#include "autograd/tensor.hpp"

namespace spool {

// ---- views: a Tensor's buffer as an xtensor container ------------------------------------

/// A row-major xtensor container over a Tensor's elements (T, or const T for the read-only
/// view). It holds the Tensor's storage, so it stays valid after the Tensor is gone.
template <class T>
using XtensorView = xt::xarray_adaptor<xt::xbuffer_adaptor<T*, xt::no_ownership, std::shared_ptr<Storage>>,
                                       xt::layout_type::row_major, xt::dynamic_shape<std::size_t>>;

namespace detail {
template <class T>
XtensorView<T> xtensor_view(const Value& v, const char* op)
{
    using E = std::remove_const_t<T>;
    static_assert(Element<E>, "as_xtensor: T must be float, double, std::int64_t or bool");
    SPOOL_CHECK(v.dtype() == dtype_of<E>::value, TypeError, op, ": tensor is ", dtype_name(v.dtype()),
                "; asked for a view of ", dtype_name(dtype_of<E>::value), " (convert first with to(t, dtype))");
    xt::dynamic_shape<std::size_t> shape(v.shape().begin(), v.shape().end());
    const auto n = static_cast<std::size_t>(v.numel());
    using Buffer = xt::xbuffer_adaptor<T*, xt::no_ownership, std::shared_ptr<Storage>>;
    return XtensorView<T>(Buffer(v.data<E>(), n, v.storage()), std::move(shape));
}
}  // namespace detail

/// Read-only view of t's elements as T (t's dtype, else TypeError), sharing t's buffer.
template <Element T>
XtensorView<const T> as_xtensor(const Tensor& t)
{
    return detail::xtensor_view<const T>(t.value(), "as_xtensor");
}

/// Writable view of t's elements as T, sharing t's buffer: writes change t, like writes
/// through PyTorch's t.numpy(). Nothing is recorded on a tape, so t must not require grad
/// (ValueError; view t.detach() to write a parameter's data). Making the view counts as one
/// in-place change of t (bumps its version, as t.data<T>() does); later writes are not seen.
template <Element T>
XtensorView<T> as_xtensor_mut(Tensor& t)
{
    SPOOL_CHECK(!t.requires_grad(), ValueError,
                "as_xtensor_mut: the tensor requires grad and writes through a view bypass autograd; "
                "view t.detach() instead");
    const Value& v = t.value();
    v.bump_version();
    return detail::xtensor_view<T>(v, "as_xtensor_mut");
}
template <Element T>
XtensorView<T> as_xtensor_mut(Tensor&& t)
{
    return as_xtensor_mut<T>(t);
}

// ---- Tensors from xtensor ----------------------------------------------------------------

/// Evaluate an xtensor expression once, straight into a new Tensor's buffer (no temporary
/// xarray). Its value_type picks the dtype; cast others first (xt::cast<float>(e)).
template <class E>
Tensor from_xtensor(const xt::xexpression<E>& expr, bool requires_grad = false)
{
    using T = typename E::value_type;
    static_assert(Element<T>, "from_xtensor: the expression's value_type must be float, double, std::int64_t or "
                              "bool; cast it first, e.g. xt::cast<float>(e)");
    const E& e = expr.derived_cast();
    Shape s;
    for (auto d : e.shape()) s.push_back(static_cast<std::int64_t>(d));
    Value v = Value::empty(s, dtype_of<T>::value);
    const xt::dynamic_shape<std::size_t> shape(e.shape().begin(), e.shape().end());
    auto out = xt::adapt(v.data<T>(), static_cast<std::size_t>(v.numel()), xt::no_ownership(), shape);
    xt::noalias(out) = e;  // noalias: assign in place, without xtensor's anti-aliasing temporary
    return Tensor(std::move(v), requires_grad);
}

namespace detail {
/// The Tensor adopts a (row-major) container's buffer: the container moves into a holder
/// that the Tensor's storage keeps alive, so the elements never move.
template <class C>
Tensor adopt_container(C&& c, bool requires_grad)
{
    using T = typename C::value_type;
    static_assert(Element<T>, "from_xtensor: the container's value_type must be float, double, std::int64_t or bool");
    Shape s;
    for (auto d : c.shape()) s.push_back(static_cast<std::int64_t>(d));
    auto holder = std::make_shared<C>(std::move(c));
    T* data = holder->data();
    auto storage = std::make_shared<Storage>(data, holder->size() * sizeof(T), std::move(holder));
    return Tensor(Value::over(std::move(storage), s, dtype_of<T>::value), requires_grad);
}
}  // namespace detail

/// A Tensor that takes over a moved-in xarray's buffer: no copy (the data pointer stays).
/// The buffer has xsimd's alignment rather than spool's 64 bytes; no kernel relies on more.
template <Element T>
Tensor from_xtensor(xt::xarray<T>&& a, bool requires_grad = false)
{
    return detail::adopt_container(std::move(a), requires_grad);
}
/// The same for a fixed-rank xt::xtensor.
template <Element T, std::size_t N>
Tensor from_xtensor(xt::xtensor<T, N>&& a, bool requires_grad = false)
{
    return detail::adopt_container(std::move(a), requires_grad);
}

// ---- copies --------------------------------------------------------------------------------

/// Copy an xarray (or any xtensor expression) of float, double, int64_t or bool into a new
/// Tensor: from_xtensor on an lvalue.
template <class T>
Tensor from_xarray(const xt::xarray<T>& a, bool requires_grad = false)
{
    return from_xtensor(a, requires_grad);
}

/// Copy a Tensor's values into an xarray of T (the dtype must be T's).
template <class T>
xt::xarray<T> to_xarray(const Tensor& t)
{
    return xt::xarray<T>(detail::xtensor_view<const T>(t.value(), "to_xarray"));
}

}  // namespace spool
