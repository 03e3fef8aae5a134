// SGD with momentum, dampening, Nesterov momentum and weight decay: torch.optim.SGD's
// update, option names and defaults. Per parameter, with d = g (−g when maximize):
//   d ← d + weight_decay·θ                                       (weight_decay ≠ 0)
//   b ← d on the first step, else b ← momentum·b + (1 − dampening)·d   (momentum ≠ 0)
//   d ← d + momentum·b (nesterov) or d ← b
//   θ ← θ − lr·d
// One fused pass per parameter (kernels::sgd_step).
#pragma once
#include "optim/optimizer.hpp"

namespace spool::optim {

struct SGDOptions {
    static constexpr const char* name = "SGD";
    double lr = 1e-3;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;
    bool nesterov = false;
    bool maximize = false;
};

/// Per-parameter state: the momentum buffer (undefined until the first step with momentum).
struct SGDParamState {
    Value momentum_buffer;
    std::size_t nbytes() const { return momentum_buffer.nbytes(); }
};

/// Throws ValueError naming the bad option ("SGD: invalid momentum value; got -0.9").
void validate(const SGDOptions& o);

/// Constructed from a std::vector<Tensor>, NamedParameters or ParamGroups, and SGDOptions.
class SGD final : public detail::OptimizerWith<SGDOptions, SGDParamState> {
public:
    using OptimizerWith::OptimizerWith;

private:
    void update() override;
    void save(StateDict& sd) const override;
    void load(const StateDict& sd) override;
};

}  // namespace spool::optim
