// The Optimizer base (docs/optim.md): parameter groups, step() with the optional
// non-finite-gradient guard, zero_grad(), learning-rate access for schedules, and the
// state_dict frame (groups, guard counters) that each optimizer fills with its options
// and per-parameter state. The update equations live in sgd.hpp / adam.hpp; the fused
// kernels they call live in tensor/optim_kernels.hpp. Updates write into p.value() in
// place: run step() after backward, never while a tape still needs the old values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.hpp"
#include "optim/state_dict.hpp"

namespace spool::optim {

/// Parameters with options of their own; an unset option takes the optimizer's value.
struct ParamGroup {
    std::vector<Tensor> params = {};
    std::optional<double> lr = std::nullopt;
    std::optional<double> weight_decay = std::nullopt;
    std::vector<std::string> names = {};  ///< optional, one per parameter: used in messages
};

/// name -> parameter pairs, as a Module's named_parameters() will give them.
using NamedParameters = std::vector<std::pair<std::string, Tensor>>;

/// What the non-finite guard saw when it skipped a step.
struct SkipReport {
    std::int64_t skipped_steps = 0;  ///< steps skipped so far, this one included
    std::size_t group = 0, index = 0;  ///< the first parameter whose gradient is not finite
    std::string message;             ///< "Adam: step skipped: the gradient of parameter 'w' ..."
};

class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    /// Update every parameter that has a gradient (others are skipped, as in PyTorch).
    /// Returns false when the non-finite guard is on and skipped the whole step.
    bool step();
    /// Drop every gradient (set_to_none, PyTorch's default) or fill them with zeros.
    void zero_grad(bool set_to_none = true);

    const std::string& name() const { return name_; }
    std::size_t num_param_groups() const { return groups_.size(); }
    const std::vector<Tensor>& params(std::size_t group) const;
    /// Every parameter of every group, in order (the numbering of state_dict's "state.<k>").
    std::vector<Tensor> parameters() const;
    /// "'name'" when the parameter was given a name, else its number k.
    std::string param_label(std::size_t group, std::size_t index) const;

    virtual double lr(std::size_t group) const = 0;
    virtual void set_lr(std::size_t group, double lr) = 0;
    /// The lr schedules start from (PyTorch's group["initial_lr"]); set by the first schedule.
    std::optional<double> initial_lr(std::size_t group) const;
    void set_initial_lr(std::size_t group, double lr);

    /// The non-finite guard (off by default): when on, step() first checks every gradient
    /// and, if any holds NaN or Inf, changes nothing (parameters, moments, step counts),
    /// counts the skip and reports it through on_skip and last_skip().
    void skip_nonfinite(bool on, std::function<void(const SkipReport&)> on_skip = {});
    bool skips_nonfinite() const { return guard_; }
    std::int64_t skipped_steps() const { return skipped_; }
    const std::optional<SkipReport>& last_skip() const { return last_skip_; }

    /// Options of every group, per-parameter state, guard counter: copies, plain data.
    StateDict state_dict() const;
    /// Bytes of per-parameter tensor state held now (moments, momentum buffers), without a
    /// copy; the default counts the tensors of a state_dict().
    virtual std::size_t state_bytes() const;
    /// Restore from state_dict() of an optimizer of the same kind over parameters of the
    /// same shapes; everything is checked before anything changes.
    void load_state_dict(const StateDict& sd);

protected:
    Optimizer(std::string name, const std::vector<ParamGroup>& groups);

    struct Group {
        std::vector<Tensor> params;
        std::vector<std::string> names;
        std::optional<double> initial_lr;
    };
    const Group& group(std::size_t g) const { return groups_[g]; }
    /// The gradient of parameter i of group g, checked against the parameter's shape and
    /// dtype; nullptr when it has none.
    Value* grad_of(std::size_t g, std::size_t i) const;
    /// grad_of for every parameter, [group][index].
    std::vector<std::vector<Value*>> all_grads() const;
    /// "state.<k>." for parameter i of group g; "param_groups.<g>." for group g.
    std::string state_key(std::size_t g, std::size_t i) const;
    static std::string group_key(std::size_t g);
    /// A copy of the tensor at key, checked against parameter i of group g's shape and
    /// cast to its dtype (for load()).
    Value load_buffer(const StateDict& sd, const std::string& key, std::size_t g, std::size_t i) const;

    virtual void update() = 0;
    virtual void save(StateDict& sd) const = 0;
    /// Check everything in sd first, then replace options and state (strong guarantee).
    virtual void load(const StateDict& sd) = 0;

private:
    std::string name_;
    std::vector<Group> groups_;
    std::vector<std::size_t> first_index_;  ///< global number of each group's first parameter
    bool guard_ = false;
    std::function<void(const SkipReport&)> on_skip_;
    std::int64_t skipped_ = 0;
    std::optional<SkipReport> last_skip_;
};

namespace detail {

/// One group holding params (names from a NamedParameters list when given).
std::vector<ParamGroup> as_groups(std::vector<Tensor> params);
std::vector<ParamGroup> as_groups(const NamedParameters& params);

/// What every optimizer shares: the constructors, one Options per group (the defaults
/// with the group's overrides, checked by validate(Options)), one State per parameter
/// (with nbytes(): the bytes of its tensors).
template <class Options, class State>
class OptimizerWith : public Optimizer {
public:
    OptimizerWith(std::vector<Tensor> params, Options defaults = {})
        : OptimizerWith(as_groups(std::move(params)), defaults)
    {
    }
    OptimizerWith(const NamedParameters& params, Options defaults = {}) : OptimizerWith(as_groups(params), defaults) {}
    OptimizerWith(const std::vector<ParamGroup>& groups, Options defaults = {}) : Optimizer(Options::name, groups)
    {
        for (const ParamGroup& pg : groups) {
            Options o = defaults;
            if (pg.lr) o.lr = *pg.lr;
            if (pg.weight_decay) o.weight_decay = *pg.weight_decay;
            validate(o);
            options_.push_back(o);
            state_.emplace_back(pg.params.size());
        }
    }

    double lr(std::size_t group) const override { return options(group).lr; }
    std::size_t state_bytes() const override
    {
        std::size_t bytes = 0;
        for (const auto& group : state_)
            for (const State& s : group) bytes += s.nbytes();
        return bytes;
    }
    void set_lr(std::size_t group, double lr) override { options(group).lr = lr; }
    /// The options of a group; changes take effect (and are validated) at the next step.
    Options& options(std::size_t group)
    {
        params(group);  // range check
        return options_[group];
    }
    const Options& options(std::size_t group) const
    {
        params(group);
        return options_[group];
    }
    const State& state(std::size_t group, std::size_t index) const
    {
        SPOOL_CHECK(index < params(group).size(), ValueError, Options::name, ": parameter ", index,
                    " is out of range for group ", group);
        return state_[group][index];
    }

protected:
    std::vector<Options> options_;
    std::vector<std::vector<State>> state_;
};

}  // namespace detail

}  // namespace spool::optim
