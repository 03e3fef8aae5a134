// Adam and AdamW: torch.optim.Adam / AdamW's update, option names and defaults. Per
// parameter at step t (counted per parameter, from 1), with g = ∇ (−∇ when maximize):
//   AdamW: θ ← θ·(1 − lr·λ)            Adam: g ← g + λ·θ   (λ = weight_decay; coupled only if λ ≠ 0)
//   m ← β1·m + (1 − β1)·g              v ← β2·v + (1 − β2)·g²
//   v̂ ← max(v̂, v) with amsgrad, else v̂ = v
//   θ ← θ − lr/(1 − β1^t) · m / (sqrt(v̂)/sqrt(1 − β2^t) + ε)      (ε added after the bias correction)
// One fused pass per parameter (kernels::adam_step). The Transformer recipe is
// Adam(params, {.lr = 1, .betas = {0.9, 0.98}, .eps = 1e-9}) with a NoamLR schedule.
#pragma once
#include <array>

#include "optim/optimizer.hpp"

namespace spool::optim {

/// Adam's options; AdamWOptions has the same fields, with weight decay decoupled and 1e-2
/// by default.
template <bool Decoupled>
struct AdamOptionsT {
    static constexpr const char* name = Decoupled ? "AdamW" : "Adam";
    static constexpr bool decoupled_weight_decay = Decoupled;
    double lr = 1e-3;
    std::array<double, 2> betas = {0.9, 0.999};
    double eps = 1e-8;
    double weight_decay = Decoupled ? 1e-2 : 0.0;
    bool amsgrad = false;
    bool maximize = false;
};
using AdamOptions = AdamOptionsT<false>;
using AdamWOptions = AdamOptionsT<true>;

/// Per-parameter state; buffers are created (zeros) at the parameter's first update.
struct AdamParamState {
    std::int64_t step = 0;
    Value exp_avg, exp_avg_sq, max_exp_avg_sq;  ///< max_exp_avg_sq with amsgrad only
    std::size_t nbytes() const { return exp_avg.nbytes() + exp_avg_sq.nbytes() + max_exp_avg_sq.nbytes(); }
};

/// Throws ValueError naming the bad option ("Adam: invalid beta1 parameter; got 1.5").
template <bool Decoupled>
void validate(const AdamOptionsT<Decoupled>& o);

namespace detail {

/// Adam and AdamW share everything but the decay; Options says which.
template <class Options>
class AdamImpl : public OptimizerWith<Options, AdamParamState> {
public:
    using OptimizerWith<Options, AdamParamState>::OptimizerWith;

private:
    void update() override;
    void save(StateDict& sd) const override;
    void load(const StateDict& sd) override;
};

extern template class AdamImpl<AdamOptions>;
extern template class AdamImpl<AdamWOptions>;

}  // namespace detail

/// Constructed from a std::vector<Tensor>, NamedParameters or ParamGroups, and AdamOptions.
class Adam final : public detail::AdamImpl<AdamOptions> {
public:
    using AdamImpl::AdamImpl;
};

/// Constructed like Adam, with AdamWOptions.
class AdamW final : public detail::AdamImpl<AdamWOptions> {
public:
    using AdamImpl::AdamImpl;
};

}  // namespace spool::optim
