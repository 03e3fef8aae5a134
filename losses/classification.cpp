// Classification losses beside cross_entropy: nll_loss, the Annotated Transformer's label
// smoothing (on the fused cross-entropy primitive), focal loss and z-loss (composed from ops).
// Each is computed on the kept positions only (see detail.hpp). Letters: N batch, C (V) classes.
#include <cmath>
#include <vector>

#include "losses/detail.hpp"
#include "losses/functional.hpp"

namespace spool::losses {

void validate(const NLLLossOptions& o) { detail::check_reduction(o.reduction, "nll_loss"); }

// nll_loss(x, y) = −w_y x[y] per kept position; mean: Σ / Σ w_y
Tensor nll_loss(const Tensor& input, const Tensor& target, const NLLLossOptions& o)
{
    constexpr std::string_view loss = "nll_loss";
    detail::check_float_input(input, loss);
    detail::check_class_index_target(input, target, o.ignore_index, loss);
    if (o.weight.defined()) detail::check_class_weight(o.weight, input, input.shape()[input.dim() == 1 ? 0 : 1], loss);
    validate(o);
    const detail::Kept kept = detail::kept_positions(target, o.ignore_index, {}, loss);
    Tensor rows = -detail::pick_classes(input, target, kept);
    double total = static_cast<double>(kept.count());
    if (o.weight.defined()) rows = rows * detail::kept_class_weights(o.weight, target, kept, &total);
    return detail::reduce_kept(rows, kept, o.reduction, total);
}

void validate(const LabelSmoothingKLOptions& o)
{
    detail::check_range(o.smoothing, 0.0, 1.0, "label_smoothing_kl", "smoothing");
    detail::check_at_least(static_cast<double>(o.padding_idx), 0, "label_smoothing_kl", "padding_idx");
    detail::check_reduction(o.reduction, "label_smoothing_kl");
}

// label_smoothing_kl(z, y) = Σ_c q_c (log q_c − log_softmax(z)_c) per non-padding row,
//   q = 1 − ε on y, ε/(V − 2) on the other classes except padding_idx, 0 on padding_idx.
// Runs on the fused primitive: class weights 1 except 0 at padding_idx make q_c = on·[c = y] +
// off·w_c with on = 1 − ε − ε/(V − 2), off = ε/(V − 2); the row offset Σ q log q turns the
// cross-entropy into the KL divergence.
Tensor label_smoothing_kl(const Tensor& input, const Tensor& target, const LabelSmoothingKLOptions& o)
{
    constexpr const char* loss = "label_smoothing_kl";
    detail::check_float_input(input, loss);
    SPOOL_CHECK(input.dim() == 2, ShapeError, loss,
                ": expected input of shape (N, V) (flatten (B, T, V) first, as the Annotated Transformer does); got ",
                to_string(input.shape()));
    const std::int64_t V = input.shape()[1];
    SPOOL_CHECK(V > 2, ShapeError, loss, ": needs more than 2 classes (ε is spread over V − 2 of them); got input ",
                to_string(input.shape()));
    SPOOL_CHECK(o.padding_idx < V, ValueError, loss, ": padding_idx must be in [0, ", V, "); got ", o.padding_idx);
    validate(o);
    const double eps = o.smoothing, off = eps / static_cast<double>(V - 2);
    auto xlogx = [](double x) { return x > 0 ? x * std::log(x) : 0.0; };
    const kernels::CrossEntropySpec spec{.on = 1.0 - eps - off,
                                         .off = off,
                                         .ignore_index = o.padding_idx,
                                         .row_offset = xlogx(1.0 - eps) + static_cast<double>(V - 2) * xlogx(off)};
    Tensor weight = ones(Shape{V}, {.dtype = input.dtype()});
    weight.value().set(o.padding_idx, 0.0);
    return fused_cross_entropy(input, target, weight, spec, o.reduction, loss);
}

void validate(const FocalLossOptions& o)
{
    detail::check_at_least(o.gamma, 0, "focal_loss", "gamma");
    detail::check_reduction(o.reduction, "focal_loss");
}

// focal_loss(z, y) = −α_y (1 − p_y)^γ log p_y, log p = log_softmax(z) over the class dim
Tensor focal_loss(const Tensor& input, const Tensor& target, const FocalLossOptions& o)
{
    constexpr std::string_view loss = "focal_loss";
    detail::check_float_input(input, loss);
    detail::check_class_index_target(input, target, o.ignore_index, loss);
    const int cdim = input.dim() == 1 ? 0 : 1;
    if (o.alpha.defined()) detail::check_class_weight(o.alpha, input, input.shape()[cdim], loss);
    validate(o);
    const detail::Kept kept = detail::kept_positions(target, o.ignore_index, {}, loss);
    const Tensor logp = detail::pick_classes(log_softmax(input, cdim), target, kept);
    Tensor rows = -logp;
    if (o.gamma != 0) {
        // (1 − p)^γ through where(), twice: where 1 − p rounds to 0 the factor is 0 and so is its
        // gradient (the loss is flat there: (1 − p)^γ log p ~ −(1 − p)^(1+γ)), even for γ < 1
        const Tensor q = 1.0 - exp(logp);
        const Tensor at_one = detail::zero_mask(q);
        const Tensor base = where(at_one, detail::constant_like(1.0, q), q);
        rows = rows * where(at_one, detail::constant_like(0.0, q), pow(base, o.gamma));
    }
    if (o.alpha.defined()) {
        double unused = 0;
        rows = rows * detail::kept_class_weights(o.alpha, target, kept, &unused);
    }
    return detail::reduce_kept(rows, kept, o.reduction, static_cast<double>(kept.count()));
}

void validate(const ZLossOptions& o)
{
    detail::check_at_least(o.coefficient, 0, "z_loss", "coefficient");
    detail::check_reduction(o.reduction, "z_loss");
}

// z_loss(z) = coefficient · logsumexp(z over the class dim)² per kept position
Tensor z_loss(const Tensor& input, const Tensor& target, const ZLossOptions& o)
{
    constexpr std::string_view loss = "z_loss";
    detail::check_float_input(input, loss);
    SPOOL_CHECK(input.dim() >= 1, ShapeError, loss, ": expected input of shape (C), (N, C) or (N, C, d1, ...); got ",
                to_string(input.shape()));
    validate(o);
    if (target.defined()) detail::check_class_index_target(input, target, o.ignore_index, loss);
    const Tensor lse = logsumexp(input, input.dim() == 1 ? 0 : 1);
    const detail::Kept kept =
        target.defined() ? detail::kept_positions(target, o.ignore_index, {}, loss)
                         : detail::kept_where(std::vector<bool>(static_cast<std::size_t>(lse.numel()), true), lse.shape());
    const Tensor l = detail::select_kept(lse, kept);
    return detail::reduce_kept(l * l * o.coefficient, kept, o.reduction, static_cast<double>(kept.count()));
}

}  // namespace spool::losses
