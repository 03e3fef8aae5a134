// The helpers of losses/detail.hpp: checks, reductions, kept positions and class picking.
#include "losses/detail.hpp"

#include <vector>

namespace spool::losses::detail {

void check_float_input(const Tensor& x, std::string_view loss, const char* what)
{
    SPOOL_CHECK(x.defined(), ValueError, loss, ": ", what, " tensor is undefined");
    SPOOL_CHECK(is_floating(x.dtype()), TypeError, loss, ": expected a float32 or float64 ", what, "; got ",
                dtype_name(x.dtype()));
}

void check_same_shape(const Tensor& input, const Tensor& target, std::string_view loss)
{
    check_float_input(input, loss, "input");
    check_float_input(target, loss, "target");
    SPOOL_CHECK(input.shape() == target.shape(), ShapeError, loss,
                ": input and target must have the same shape; got input ", to_string(input.shape()), " and target ",
                to_string(target.shape()));
    SPOOL_CHECK(input.dtype() == target.dtype(), TypeError, loss, ": input and target dtypes must match; got ",
                dtype_name(input.dtype()), " and ", dtype_name(target.dtype()));
}

void check_broadcasts(const Tensor& x, const Shape& shape, DType dtype, std::string_view loss, const char* what)
{
    if (!x.defined()) return;
    SPOOL_CHECK(x.dtype() == dtype, TypeError, loss, ": ", what, " must have the input's dtype ", dtype_name(dtype),
                "; got ", dtype_name(x.dtype()));
    bool ok = x.dim() <= shape.rank();
    for (int i = 0; ok && i < x.dim(); ++i) {
        const std::int64_t d = x.shape()[i], s = shape[shape.rank() - x.dim() + i];
        ok = d == s || d == 1;
    }
    SPOOL_CHECK(ok, ShapeError, loss, ": ", what, " ", to_string(x.shape()), " does not broadcast to the input ",
                to_string(shape));
}

void check_range(double v, double lo, double hi, std::string_view loss, const char* what)
{
    SPOOL_CHECK(v >= lo && v < hi, ValueError, loss, ": ", what, " must be in [", lo, ", ", hi, "); got ", v);
}

void check_at_least(double v, double lo, std::string_view loss, const char* what)
{
    SPOOL_CHECK(v >= lo, ValueError, loss, ": ", what, " must be >= ", lo, "; got ", v);
}

Tensor reduce(const Tensor& x, Reduction r, double divisor)
{
    switch (r) {
    case Reduction::none: return x;
    case Reduction::sum: return sum(x);
    default: return sum(x) * (divisor > 0 ? 1.0 / divisor : 0.0);
    }
}

Kept kept_positions(const Tensor& target, std::int64_t ignore_index, const Tensor& mask, std::string_view loss)
{
    if (mask.defined()) {
        SPOOL_CHECK(mask.dtype() == DType::b8, TypeError, loss, ": mask must be bool; got ", dtype_name(mask.dtype()));
        SPOOL_CHECK(mask.shape() == target.shape(), ShapeError, loss, ": mask must have the target's shape ",
                    to_string(target.shape()), "; got mask ", to_string(mask.shape()));
    }
    const std::int64_t n = target.numel();
    const std::int64_t* y = target.dtype() == DType::i64 ? target.data<std::int64_t>() : nullptr;
    const bool* m = mask.defined() ? mask.data<bool>() : nullptr;
    std::vector<bool> keep(static_cast<std::size_t>(n));
    for (std::int64_t p = 0; p < n; ++p) keep[static_cast<std::size_t>(p)] = (!y || y[p] != ignore_index) && (!m || m[p]);
    return kept_where(keep, target.shape());
}

Kept kept_where(const std::vector<bool>& keep, const Shape& s)
{
    std::vector<std::int64_t> pos;
    pos.reserve(keep.size());
    for (std::size_t p = 0; p < keep.size(); ++p)
        if (keep[p]) pos.push_back(static_cast<std::int64_t>(p));
    const auto k = static_cast<std::int64_t>(pos.size());
    return {from_vector(pos, Shape{k}), s};
}

Tensor select_kept(const Tensor& x, const Kept& k)
{
    Tensor flat = reshape(x, {k.shape.numel()});
    return k.all() ? flat : index_select(flat, 0, k.positions);
}

Tensor reduce_kept(const Tensor& values, const Kept& k, Reduction r, double divisor)
{
    if (r != Reduction::none) return reduce(values, r, divisor);
    if (k.all()) return reshape(values, k.shape.vec());
    // values followed by one 0, gathered: kept positions take their value, the others the 0
    const std::int64_t n = k.shape.numel(), K = k.count();
    std::vector<std::int64_t> from(static_cast<std::size_t>(n), K);
    const std::int64_t* pos = k.positions.data<std::int64_t>();
    for (std::int64_t j = 0; j < K; ++j) from[static_cast<std::size_t>(pos[j])] = j;
    Tensor padded = concat({values, zeros(Shape{1}, {.dtype = values.dtype()})}, 0);
    return reshape(index_select(padded, 0, from_vector(from, Shape{n})), k.shape.vec());
}

Tensor pick_classes(const Tensor& input, const Tensor& target, const Kept& k)
{
    // input (N, C, d1, ...): position p = n·D + j of the target sits at n·C·D + y·D + j
    const Shape& s = input.shape();
    const std::int64_t C = s[s.rank() == 1 ? 0 : 1], D = s.rank() > 2 ? s.prod(2, s.rank()) : 1;
    const std::int64_t* y = target.data<std::int64_t>();
    const std::int64_t* pos = k.positions.data<std::int64_t>();
    std::vector<std::int64_t> flat(static_cast<std::size_t>(k.count()));
    for (std::int64_t j = 0; j < k.count(); ++j) {
        const std::int64_t p = pos[j], n = p / D, d = p % D;
        flat[static_cast<std::size_t>(j)] = (n * C + y[p]) * D + d;
    }
    return index_select(reshape(input, {input.numel()}), 0, from_vector(flat, Shape{k.count()}));
}

Tensor kept_class_weights(const Tensor& class_weight, const Tensor& target, const Kept& k, double* sum)
{
    const std::int64_t* y = target.data<std::int64_t>();
    const std::int64_t* pos = k.positions.data<std::int64_t>();
    std::vector<double> w(static_cast<std::size_t>(k.count()));
    *sum = 0;
    for (std::int64_t j = 0; j < k.count(); ++j) {
        w[static_cast<std::size_t>(j)] = class_weight.value().at(y[pos[j]]);
        *sum += w[static_cast<std::size_t>(j)];
    }
    return from_vector(w, Shape{k.count()}, {.dtype = class_weight.dtype()});
}

Tensor zero_mask(const Tensor& x)
{
    std::vector<bool> m(static_cast<std::size_t>(x.numel()));
    for (std::int64_t i = 0; i < x.numel(); ++i) m[static_cast<std::size_t>(i)] = x.value().at(i) == 0.0;
    return from_vector(m, x.shape());
}

Tensor constant_like(double v, const Tensor& x) { return scalar(v, {.dtype = x.dtype()}); }

}  // namespace spool::losses::detail
