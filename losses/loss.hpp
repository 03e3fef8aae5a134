// The Loss interface (docs/losses.md) and one class per loss, each holding its options
// (validated in the constructor, the bad value in the message) and calling the functional
// form of losses/functional.hpp; FunctionLoss wraps a lambda. Build one by name from
// losses/registry.hpp.
#pragma once
#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

#include "losses/functional.hpp"

namespace spool::losses {

/// A loss: loss(input, target), reduced as its options say (none / mean / sum).
class Loss {
public:
    virtual ~Loss() = default;
    /// The loss of input against target.
    Tensor operator()(const Tensor& input, const Tensor& target) const { return forward(input, target, Tensor()); }
    /// With a mask (bool): AttentionAlignmentLoss's aligned positions. Losses that take no mask
    /// throw ValueError when given one.
    Tensor operator()(const Tensor& input, const Tensor& target, const Tensor& mask) const;
    /// The registry name, e.g. "cross_entropy".
    virtual std::string_view name() const = 0;
    /// Whether operator() accepts a mask.
    virtual bool takes_mask() const { return false; }

protected:
    virtual Tensor forward(const Tensor& input, const Tensor& target, const Tensor& mask) const = 0;
};

/// A Loss made from a function, for registering a loss without writing a class.
class FunctionLoss final : public Loss {
public:
    using Fn = std::function<Tensor(const Tensor& input, const Tensor& target)>;
    FunctionLoss(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
    std::string_view name() const override { return name_; }

protected:
    Tensor forward(const Tensor& input, const Tensor& target, const Tensor&) const override { return fn_(input, target); }

private:
    std::string name_;
    Fn fn_;
};

/// A loss name as a template argument: FunctionalLoss<..., "cross_entropy">.
template <std::size_t N>
struct LossName {
    char text[N];
    constexpr LossName(const char (&s)[N]) { std::copy_n(s, N, text); }
};

/// The Loss of a functional form fn(input, target, options) with fixed options, validated
/// on construction (the bad value in the message).
template <class Options, auto Fn, LossName Name>
class FunctionalLoss final : public Loss {
public:
    explicit FunctionalLoss(Options options = {}) : options_(std::move(options)) { validate(options_); }
    const Options& options() const { return options_; }
    std::string_view name() const override { return Name.text; }

protected:
    Tensor forward(const Tensor& input, const Tensor& target, const Tensor&) const override
    {
        return Fn(input, target, options_);
    }

private:
    Options options_;
};

/// torch.nn.CrossEntropyLoss: the fused cross-entropy (see spool::cross_entropy).
using CrossEntropy = FunctionalLoss<CrossEntropyOptions, &cross_entropy, "cross_entropy">;
/// "The Annotated Transformer"'s label smoothing as a KL divergence (see label_smoothing_kl).
using LabelSmoothingKL = FunctionalLoss<LabelSmoothingKLOptions, &label_smoothing_kl, "label_smoothing_kl">;
/// torch.nn.NLLLoss.
using NLLLoss = FunctionalLoss<NLLLossOptions, &nll_loss, "nll_loss">;
/// torch.nn.KLDivLoss.
using KLDivLoss = FunctionalLoss<KLDivLossOptions, &kl_div, "kl_div">;
/// torch.nn.MSELoss.
using MSELoss = FunctionalLoss<MSELossOptions, &mse_loss, "mse_loss">;
/// torch.nn.BCEWithLogitsLoss.
using BCEWithLogitsLoss =
    FunctionalLoss<BCEWithLogitsLossOptions, &binary_cross_entropy_with_logits, "binary_cross_entropy_with_logits">;
/// Multiclass focal loss (see focal_loss).
using FocalLoss = FunctionalLoss<FocalLossOptions, &focal_loss, "focal_loss">;
/// z-loss (see z_loss); the target may be undefined.
using ZLoss = FunctionalLoss<ZLossOptions, &z_loss, "z_loss">;

/// Supervised attention (see attention_alignment_loss): loss(attn, alignment[, mask]).
class AttentionAlignmentLoss final : public Loss {
public:
    explicit AttentionAlignmentLoss(AttentionAlignmentLossOptions options = {});
    const AttentionAlignmentLossOptions& options() const { return options_; }
    std::string_view name() const override { return "attention_alignment"; }
    bool takes_mask() const override { return true; }

protected:
    Tensor forward(const Tensor& input, const Tensor& target, const Tensor& mask) const override;

private:
    AttentionAlignmentLossOptions options_;
};

}  // namespace spool::losses
