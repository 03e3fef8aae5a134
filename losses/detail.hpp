// Internal to losses/*.cpp (not installed): reductions, the positions that count, picking
// each target's class entry out of an input, and masks computed from values. Positions that
// do not count (ignore_index, a false mask) are dropped before any arithmetic, so a ±inf or
// NaN there can reach neither the loss nor a gradient.
#pragma once
#include <string_view>
#include <vector>

#include "autograd/ops.hpp"
#include "autograd/ops_loss.hpp"

namespace spool::losses::detail {

using spool::detail::check_class_index_target;
using spool::detail::check_class_weight;
using spool::detail::check_reduction;

void check_float_input(const Tensor& x, std::string_view loss, const char* what = "input");
/// a and b of the same shape and float dtype (MSE, KL, BCE).
void check_same_shape(const Tensor& input, const Tensor& target, std::string_view loss);
/// x (when defined) broadcasts to shape without changing it, in dtype.
void check_broadcasts(const Tensor& x, const Shape& shape, DType dtype, std::string_view loss, const char* what);
/// lo <= v < hi, else ValueError naming loss, what and v.
void check_range(double v, double lo, double hi, std::string_view loss, const char* what);
/// v >= lo, else ValueError naming loss, what and v.
void check_at_least(double v, double lo, std::string_view loss, const char* what);

/// none: x; sum: Σ x; mean: Σ x / divisor, 0 (zero gradients) when divisor is 0.
Tensor reduce(const Tensor& x, Reduction r, double divisor);

/// The flat positions of a target that count: target != ignore_index and mask (bool, the
/// target's shape; optional) true.
struct Kept {
    Tensor positions;  ///< int64 [K]
    Shape shape;       ///< the target's shape
    std::int64_t count() const { return positions.numel(); }
    bool all() const { return count() == shape.numel(); }
};
Kept kept_positions(const Tensor& target, std::int64_t ignore_index, const Tensor& mask, std::string_view loss);
/// The positions where keep is true, for a target of shape s.
Kept kept_where(const std::vector<bool>& keep, const Shape& s);

/// x (the target's shape) at the kept positions: [K].
Tensor select_kept(const Tensor& x, const Kept& k);
/// Per-kept-position values [K] reduced: none puts them back in the target's shape (0 at
/// dropped positions); sum; mean divides by divisor.
Tensor reduce_kept(const Tensor& values, const Kept& k, Reduction r, double divisor);

/// input's entry at the target class of each kept position, [K]; input (C), (N, C) or
/// (N, C, d1, ...) with its class-index target (already checked).
Tensor pick_classes(const Tensor& input, const Tensor& target, const Kept& k);
/// class_weight[y] of each kept position, [K] in class_weight's dtype; *sum gets their sum.
Tensor kept_class_weights(const Tensor& class_weight, const Tensor& target, const Kept& k, double* sum);

/// bool mask of x == 0, from the values (not differentiable).
Tensor zero_mask(const Tensor& x);
/// A 0-d constant of x's dtype.
Tensor constant_like(double v, const Tensor& x);

}  // namespace spool::losses::detail
