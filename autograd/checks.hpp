// Internal to autograd/ops_*.cpp: the input checks every op starts with.
#pragma once
#include "autograd/tensor.hpp"

namespace spool::detail {

/// A defined float32/float64 tensor, or a ValueError/TypeError naming op.
inline void check_float(const Tensor& x, const char* op)
{
    SPOOL_CHECK(x.defined(), ValueError, op, ": input tensor is undefined");
    SPOOL_CHECK(is_floating(x.dtype()), TypeError, op, ": expected a float32 or float64 tensor; got ",
                dtype_name(x.dtype()));
}

/// Two float tensors of one dtype.
inline void check_float_pair(const Tensor& a, const Tensor& b, const char* op)
{
    check_float(a, op);
    check_float(b, op);
    SPOOL_CHECK(a.dtype() == b.dtype(), TypeError, op, ": dtypes must match; got ", dtype_name(a.dtype()), " and ",
                dtype_name(b.dtype()));
}

inline void check_defined(const Tensor& x, const char* op)
{
    SPOOL_CHECK(x.defined(), ValueError, op, ": input tensor is undefined");
}

}  // namespace spool::detail
