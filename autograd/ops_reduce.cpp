// Reductions (sum, mean, max, var) and the row ops softmax / log_softmax.
// Multi-dim reductions reduce one axis at a time with keepdim, then drop the dims.
#include <algorithm>
#include <numeric>

#include "autograd/checks.hpp"
#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"

namespace spool {

namespace k = kernels;
using detail::check_float;

namespace {

/// Sorted unique normalized dims; an empty list means all dims (torch.sum(x, dim=[])).
std::vector<int> norm_dims(const std::vector<int>& dims, int rank, const char* op)
{
    std::vector<int> d;
    if (dims.empty()) {
        d.resize(rank);
        std::iota(d.begin(), d.end(), 0);
        return d;
    }
    for (int x : dims) d.push_back(normalize_axis(x, rank, op));
    std::sort(d.begin(), d.end());
    SPOOL_CHECK(std::adjacent_find(d.begin(), d.end()) == d.end(), ValueError, op, ": dimension repeated in dims");
    return d;
}

/// Shape with dims set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& s, const std::vector<int>& dims, bool keepdim)
{
    Shape out;
    for (int i = 0; i < s.rank(); ++i) {
        bool r = std::find(dims.begin(), dims.end(), i) != dims.end();
        if (!r) out.push_back(s[i]);
        else if (keepdim) out.push_back(1);
    }
    return out;
}

Value sum_dims(const Value& x, const std::vector<int>& dims)
{
    Value r = x;
    for (int d : dims) r = k::sum(r, d);
    return r;
}

std::int64_t count(const Shape& s, const std::vector<int>& dims)
{
    std::int64_t n = 1;
    for (int d : dims) n *= s[d];
    return n;
}

}  // namespace

// sum(x, dims) -> y               dx += broadcast(dy)
Tensor sum(const Tensor& x, const std::vector<int>& dims, bool keepdim)
{
    detail::OpProfile prof(OpKind::Sum);
    check_float(x, "sum");
    auto d = norm_dims(dims, x.dim(), "sum");
    Shape keep = reduced_shape(x.shape(), d, true);
    Value y = sum_dims(x.value(), d).view(reduced_shape(x.shape(), d, keepdim));
    return record(OpKind::Sum, {x}, std::move(y), [keep, sx = x.shape()](const Value& dy, Grads& dx) {
        dx.add(0, k::broadcast_to(dy.view(keep), sx));
    });
}

Tensor sum(const Tensor& x) { return sum(x, {}, false); }

// mean(x, dims) -> y = sum / N    dx += broadcast(dy) / N
Tensor mean(const Tensor& x, const std::vector<int>& dims, bool keepdim)
{
    detail::OpProfile prof(OpKind::Mean);
    check_float(x, "mean");
    auto d = norm_dims(dims, x.dim(), "mean");
    Shape keep = reduced_shape(x.shape(), d, true);
    double n = static_cast<double>(count(x.shape(), d));
    Value y = k::mul_scalar(sum_dims(x.value(), d), 1.0 / n).view(reduced_shape(x.shape(), d, keepdim));
    return record(OpKind::Mean, {x}, std::move(y), [keep, n, sx = x.shape()](const Value& dy, Grads& dx) {
        dx.add(0, k::broadcast_to(k::mul_scalar(dy, 1.0 / n).view(keep), sx));
    });
}

Tensor mean(const Tensor& x) { return mean(x, {}, false); }

// max(x, dim) -> y = max_j x[.., j, ..]     dx[argmax] += dy                         saves argmax
Tensor max(const Tensor& x, int dim, bool keepdim)
{
    detail::OpProfile prof(OpKind::Max);
    check_float(x, "max");
    int d = normalize_axis(dim, x.dim(), "max");
    Value idx;
    Value y = k::max(x.value(), d, &idx);
    Shape keep = y.shape();
    if (!keepdim && x.dim() > 0) y = y.view(reduced_shape(x.shape(), {d}, false));
    return record(
        OpKind::Max, {x}, std::move(y),
        [idx, keep, d, sx = x.shape()](const Value& dy, Grads& dx) {
            if (sx.rank() == 0) return dx.add(0, dy);
            dx.add(0, k::scatter_along(dy.view(keep), idx, sx, d));
        },
        {idx});
}

Tensor max(const Tensor& x) { return max(reshape(x, {-1}), 0, false); }

Tensor argmax(const Tensor& x, int dim, bool keepdim)
{
    check_float(x, "argmax");
    int d = normalize_axis(dim, x.dim(), "argmax");
    Value idx;
    k::max(x.value(), d, &idx);
    if (!keepdim && x.dim() > 0) idx = idx.view(reduced_shape(x.shape(), {d}, false));
    return Tensor(idx);
}

// var(x, dims) -> y = sum((x - mean)^2) / (N - correction)
//   dx += broadcast(dy) * 2 (x - mean) / (N - correction)                            saves x - mean
// N - correction <= 0 gives inf/NaN, as in PyTorch.
Tensor var(const Tensor& x, const std::vector<int>& dims, int correction, bool keepdim)
{
    detail::OpProfile prof(OpKind::Var);
    check_float(x, "var");
    SPOOL_CHECK(correction >= 0, ValueError, "var: correction must be >= 0; got ", correction);
    auto d = norm_dims(dims, x.dim(), "var");
    Shape keep = reduced_shape(x.shape(), d, true);
    double n = static_cast<double>(count(x.shape(), d));
    double denom = n - correction;
    Value m = k::mul_scalar(sum_dims(x.value(), d), 1.0 / n);
    Value dev = k::sub(x.value(), m);
    Value y = k::mul_scalar(sum_dims(k::unary(k::Unary::square, dev), d), 1.0 / denom)
                  .view(reduced_shape(x.shape(), d, keepdim));
    return record(
        OpKind::Var, {x}, std::move(y),
        [dev, keep, denom](const Value& dy, Grads& dx) {
            dx.add(0, k::mul(dev, k::mul_scalar(dy.view(keep), 2.0 / denom)));
        },
        {dev});
}

Tensor var(const Tensor& x, int correction) { return var(x, {}, correction, false); }

// softmax(x, dim) -> y            dx += y * (dy - sum(dy * y))                        saves y
Tensor softmax(const Tensor& x, int dim)
{
    detail::OpProfile prof(OpKind::Softmax);
    check_float(x, "softmax");
    int d = normalize_axis(dim, x.dim(), "softmax");
    Value y = k::softmax(x.value(), d);
    return record(
        OpKind::Softmax, {x}, y, [y, d](const Value& dy, Grads& dx) { dx.add(0, k::softmax_backward(dy, y, d)); }, {y});
}

// log_softmax(x, dim) -> y = x - logsumexp(x)    dx += dy - exp(y) * sum(dy)        saves y
Tensor log_softmax(const Tensor& x, int dim)
{
    detail::OpProfile prof(OpKind::LogSoftmax);
    check_float(x, "log_softmax");
    int d = normalize_axis(dim, x.dim(), "log_softmax");
    Value y = k::log_softmax(x.value(), d);
    return record(
        OpKind::LogSoftmax, {x}, y, [y, d](const Value& dy, Grads& dx) { dx.add(0, k::log_softmax_backward(dy, y, d)); },
        {y});
}

}  // namespace spool
