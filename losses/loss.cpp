// The Loss interface's masked call and the attention-alignment Loss (the others are
// FunctionalLoss instances, defined in loss.hpp).
#include "losses/loss.hpp"

namespace spool::losses {

Tensor Loss::operator()(const Tensor& input, const Tensor& target, const Tensor& mask) const
{
    SPOOL_CHECK(!mask.defined() || takes_mask(), ValueError, name(), ": takes no mask (attention_alignment does); got mask ",
                to_string(mask.shape()));
    return forward(input, target, mask);
}

AttentionAlignmentLoss::AttentionAlignmentLoss(AttentionAlignmentLossOptions options) : options_(std::move(options))
{
    validate(options_);
}

Tensor AttentionAlignmentLoss::forward(const Tensor& input, const Tensor& target, const Tensor& mask) const
{
    return attention_alignment_loss(input, target, mask, options_);
}

}  // namespace spool::losses
