// Opt-in interop with xtensor: Tensor <-> xt::xarray. Not included by spool.hpp, so
// programs that do not need it do not pay xtensor's compile time.
//   #include "autograd/xtensor.hpp"      (installed: <spool/autograd/xtensor.hpp>)
#pragma once
#include <xtensor/xarray.hpp>

#include "autograd/tensor.hpp"

namespace spool {

/// Copy an xarray of float, double, int64_t or bool into a new Tensor (row-major).
template <class T>
Tensor from_xarray(const xt::xarray<T>& a, bool requires_grad = false)
{
    Shape s;
    for (auto d : a.shape()) s.push_back(static_cast<std::int64_t>(d));
    Value v = Value::empty(s, dtype_of<T>::value);
    T* out = v.data<T>();
    std::size_t i = 0;
    for (auto it = a.template begin<xt::layout_type::row_major>(); it != a.template end<xt::layout_type::row_major>();
         ++it)
        out[i++] = *it;
    return Tensor(std::move(v), requires_grad);
}

/// Copy a Tensor's values into an xarray of T (the dtype must be T's).
template <class T>
xt::xarray<T> to_xarray(const Tensor& t)
{
    SPOOL_CHECK(t.dtype() == dtype_of<T>::value, TypeError, "to_xarray: tensor is ", dtype_name(t.dtype()),
                ", not ", dtype_name(dtype_of<T>::value));
    std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
    xt::xarray<T> a = xt::xarray<T>::from_shape(shape);
    std::copy_n(t.data<T>(), t.numel(), a.data());
    return a;
}

}  // namespace spool
