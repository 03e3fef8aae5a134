// Elementwise losses: kl_div, mse_loss, binary_cross_entropy_with_logits, composed from
// differentiable ops (BCE through the logsigmoid primitive, so it is exact for large logits
// and smooth at 0). Each reduces over every element: 'mean' divides by the element count.
#include "losses/detail.hpp"
#include "losses/functional.hpp"

namespace spool::losses {

void validate(const KLDivLossOptions&) {}  // every reduction, batchmean included
void validate(const MSELossOptions& o) { detail::check_reduction(o.reduction, "mse_loss"); }
void validate(const BCEWithLogitsLossOptions& o)
{
    detail::check_reduction(o.reduction, "binary_cross_entropy_with_logits");
}

// kl_div(x, t) = t (log t − x), 0 where t = 0 (xlogy)  |  log_target: exp(t) (t − x)
Tensor kl_div(const Tensor& input, const Tensor& target, const KLDivLossOptions& o)
{
    constexpr std::string_view loss = "kl_div";
    detail::check_same_shape(input, target, loss);
    validate(o);
    Tensor l;
    if (o.log_target) {
        l = exp(target) * (target - input);
    } else {
        // t log t, with 0 (and no NaN through the gradient) where t = 0
        const Tensor zero = detail::zero_mask(target);
        const Tensor safe = where(zero, detail::constant_like(1.0, target), target);
        l = where(zero, detail::constant_like(0.0, target), target * log(safe)) - target * input;
    }
    const double batch = input.dim() == 0 ? 1.0 : static_cast<double>(input.shape()[0]);
    return detail::reduce(l, o.reduction,
                          o.reduction == Reduction::batchmean ? batch : static_cast<double>(input.numel()));
}

// mse_loss(x, t) = (x − t)²
Tensor mse_loss(const Tensor& input, const Tensor& target, const MSELossOptions& o)
{
    constexpr std::string_view loss = "mse_loss";
    detail::check_same_shape(input, target, loss);
    validate(o);
    const Tensor d = input - target;
    return detail::reduce(d * d, o.reduction, static_cast<double>(input.numel()));
}

// binary_cross_entropy_with_logits(x, y) = w [(1 − y) x − (1 + (p_w − 1) y) log σ(x)]
//   = −w [p_w y log σ(x) + (1 − y) log σ(−x)], since log σ(−x) = log σ(x) − x
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                        const BCEWithLogitsLossOptions& o)
{
    constexpr std::string_view loss = "binary_cross_entropy_with_logits";
    detail::check_same_shape(input, target, loss);
    detail::check_broadcasts(o.weight, input.shape(), input.dtype(), loss, "weight");
    detail::check_broadcasts(o.pos_weight, input.shape(), input.dtype(), loss, "pos_weight");
    validate(o);
    const Tensor ls = logsigmoid(input);
    Tensor l = (1.0 - target) * input;
    l = o.pos_weight.defined() ? l - ((o.pos_weight - 1.0) * target + 1.0) * ls : l - ls;
    if (o.weight.defined()) l = l * o.weight;
    return detail::reduce(l, o.reduction, static_cast<double>(input.numel()));
}

}  // namespace spool::losses
