// Learning-rate schedules: objects that set every group's lr, PyTorch's LRScheduler
// protocol. Construction sets the lr for the first update (epoch 0); each step() after an
// optimizer step advances last_epoch by one and sets the next lr, so update k (k = 1, 2,
// ...) runs with lr_at(k − 1). Every schedule here is a closed form — a pure function of
// the epoch — so its state is only the epoch and the base lrs (docs/optim.md).
// Base lrs are the groups' initial_lr, recorded by the first schedule attached.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.hpp"

namespace spool::optim {

class LRScheduler {
public:
    virtual ~LRScheduler() = default;
    LRScheduler(const LRScheduler&) = delete;
    LRScheduler& operator=(const LRScheduler&) = delete;

    /// Advance one epoch (call after optimizer.step()) and set every group's lr.
    void step();
    /// The lrs set last, one per group.
    const std::vector<double>& get_last_lr() const { return last_lr_; }
    /// Steps taken since construction (0 right after it).
    std::int64_t last_epoch() const { return last_epoch_; }
    /// The lr of group g at epoch e; a pure function, nothing is set.
    virtual double lr_at(std::size_t group, std::int64_t epoch) const = 0;

    const std::string& name() const { return name_; }
    Optimizer& optimizer() const { return opt_; }
    const std::vector<double>& base_lrs() const { return base_lrs_; }

    /// last_epoch, base lrs and last lrs (the options are the constructor's, not saved).
    StateDict state_dict() const;
    /// Restores the epoch and sets the saved lrs into the optimizer's groups.
    void load_state_dict(const StateDict& sd);

protected:
    /// The optimizer must outlive the schedule.
    LRScheduler(std::string name, Optimizer& opt);
    /// Derived constructors call this last: sets epoch 0's lrs.
    void initial_step();

private:
    void apply();
    std::string name_;
    Optimizer& opt_;
    std::vector<double> base_lrs_, last_lr_;
    std::int64_t last_epoch_ = 0;
};

// ---- LambdaLR -------------------------------------------------------------------------------

/// lr = base_lr · fn(epoch), one function for all groups or one per group.
class LambdaLR final : public LRScheduler {
public:
    using Fn = std::function<double(std::int64_t epoch)>;
    LambdaLR(Optimizer& opt, Fn fn);
    LambdaLR(Optimizer& opt, std::vector<Fn> per_group);
    double lr_at(std::size_t group, std::int64_t epoch) const override;

private:
    std::vector<Fn> fns_;
};

// ---- Noam -------------------------------------------------------------------------------------

/// factor · d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5) for step >= 1: rises
/// linearly to its peak at step == warmup_steps, then decays as step^-0.5. Step 0 throws.
double noam_rate(std::int64_t step, std::int64_t d_model, std::int64_t warmup_steps, double factor = 1.0);

/// Which step number update k gets (see docs/optim.md).
enum class NoamConvention {
    paper,      ///< update k uses noam_rate(k): epoch e -> step e + 1 (never 0)
    annotated,  ///< "The Annotated Transformer": LambdaLR with step 0 clamped to 1 — epoch e -> max(e, 1), so updates 1 and 2 both use noam_rate(1)
};

struct NoamOptions {
    std::int64_t d_model = 512;
    std::int64_t warmup_steps = 4000;
    double factor = 1.0;
    NoamConvention convention = NoamConvention::paper;
};

/// Sets lr = noam_rate(...) itself: the groups' own lrs are ignored (use LambdaLR with
/// noam_rate to scale groups differently).
class NoamLR final : public LRScheduler {
public:
    NoamLR(Optimizer& opt, NoamOptions o = {});
    double lr_at(std::size_t group, std::int64_t epoch) const override;
    /// The step number fed to noam_rate at epoch e under the convention.
    std::int64_t step_number(std::int64_t epoch) const;

private:
    NoamOptions o_;
};

// ---- warmup, then decay ------------------------------------------------------------------------

enum class Decay { cosine, linear, constant };

struct WarmupOptions {
    std::int64_t warmup_steps = 0;
    std::int64_t total_steps = 0;  ///< end of the decay (cosine, linear); unused by constant
    Decay decay = Decay::cosine;
    double min_lr_ratio = 0;       ///< the decay ends at base_lr · min_lr_ratio
};

/// The multiplier at epoch e, as Hugging Face's get_{cosine,linear,constant}_schedule_with_warmup:
///   e < warmup_steps : e / max(1, warmup_steps)
///   then, with p = (e − warmup_steps) / max(1, total_steps − warmup_steps) clamped to [0, 1]:
///   cosine 0.5·(1 + cos(π·p)), linear 1 − p, constant 1; mapped to r + (1 − r)·f with r = min_lr_ratio.
double warmup_factor(std::int64_t epoch, const WarmupOptions& o);

class WarmupLR final : public LRScheduler {
public:
    WarmupLR(Optimizer& opt, WarmupOptions o);
    double lr_at(std::size_t group, std::int64_t epoch) const override;

private:
    WarmupOptions o_;
};

// ---- inverse square root ---------------------------------------------------------------------

struct InverseSqrtOptions {
    std::int64_t warmup_steps = 0;
    std::int64_t timescale = 0;  ///< 0: warmup_steps, or 10000 without warmup
};

/// Hugging Face's get_inverse_sqrt_schedule: linear warmup e / max(1, warmup_steps), then
/// 1 / sqrt((e + timescale − warmup_steps) / timescale) — with timescale == warmup_steps,
/// sqrt(warmup_steps / e): continuous at the end of warmup.
class InverseSqrtLR final : public LRScheduler {
public:
    InverseSqrtLR(Optimizer& opt, InverseSqrtOptions o = {});
    double lr_at(std::size_t group, std::int64_t epoch) const override;

private:
    std::int64_t warmup_, timescale_;
};

// ---- sequence -----------------------------------------------------------------------------------

/// schedules[k] runs from milestones[k − 1] (0 for k = 0), restarted at its own epoch 0,
/// as torch.optim.lr_scheduler.SequentialLR does with closed-form schedules. All must
/// belong to opt; they are used as formulas (their own step() is never called).
class SequentialLR final : public LRScheduler {
public:
    SequentialLR(Optimizer& opt, std::vector<std::shared_ptr<LRScheduler>> schedules,
                 std::vector<std::int64_t> milestones);
    double lr_at(std::size_t group, std::int64_t epoch) const override;

private:
    std::vector<std::shared_ptr<LRScheduler>> schedules_;
    std::vector<std::int64_t> milestones_;
};

}  // namespace spool::optim
