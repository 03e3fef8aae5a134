#include "optim/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace spool::optim {

// ---- LRScheduler ------------------------------------------------------------------------------

LRScheduler::LRScheduler(std::string name, Optimizer& opt) : name_(std::move(name)), opt_(opt)
{
    for (std::size_t g = 0; g < opt.num_param_groups(); ++g) {
        if (!opt.initial_lr(g)) opt.set_initial_lr(g, opt.lr(g));
        base_lrs_.push_back(*opt.initial_lr(g));
    }
}

void LRScheduler::initial_step()
{
    last_epoch_ = 0;
    apply();
}

void LRScheduler::step()
{
    ++last_epoch_;
    apply();
}

void LRScheduler::apply()
{
    std::vector<double> lrs;
    for (std::size_t g = 0; g < base_lrs_.size(); ++g) lrs.push_back(lr_at(g, last_epoch_));
    for (std::size_t g = 0; g < lrs.size(); ++g) opt_.set_lr(g, lrs[g]);
    last_lr_ = std::move(lrs);
}

StateDict LRScheduler::state_dict() const
{
    StateDict sd;
    sd["type"] = name_;
    sd["last_epoch"] = last_epoch_;
    sd["param_groups"] = static_cast<std::int64_t>(base_lrs_.size());
    for (std::size_t g = 0; g < base_lrs_.size(); ++g) {
        sd["base_lrs." + std::to_string(g)] = base_lrs_[g];
        sd["last_lr." + std::to_string(g)] = last_lr_[g];
    }
    return sd;
}

void LRScheduler::load_state_dict(const StateDict& sd)
{
    const char* who = name_.c_str();
    check_saved_by(sd, name_, base_lrs_.size());
    const std::int64_t epoch = get_int(sd, "last_epoch", who);
    SPOOL_CHECK(epoch >= 0, ValueError, name_, ": load_state_dict: last_epoch must be >= 0; got ", epoch);
    std::vector<double> base, last;
    for (std::size_t g = 0; g < base_lrs_.size(); ++g) {
        base.push_back(get_double(sd, "base_lrs." + std::to_string(g), who));
        last.push_back(get_double(sd, "last_lr." + std::to_string(g), who));
    }
    last_epoch_ = epoch;
    base_lrs_ = std::move(base);
    last_lr_ = std::move(last);
    for (std::size_t g = 0; g < last_lr_.size(); ++g) opt_.set_lr(g, last_lr_[g]);
}

// ---- LambdaLR ---------------------------------------------------------------------------------

LambdaLR::LambdaLR(Optimizer& opt, Fn fn) : LambdaLR(opt, std::vector<Fn>{std::move(fn)}) {}

LambdaLR::LambdaLR(Optimizer& opt, std::vector<Fn> per_group) : LRScheduler("LambdaLR", opt), fns_(std::move(per_group))
{
    SPOOL_CHECK(fns_.size() == 1 || fns_.size() == opt.num_param_groups(), ValueError,
                "LambdaLR: expected 1 function or one per parameter group (", opt.num_param_groups(), "); got ",
                fns_.size());
    for (const auto& f : fns_) SPOOL_CHECK(f, ValueError, "LambdaLR: a schedule function is empty");
    initial_step();
}

double LambdaLR::lr_at(std::size_t group, std::int64_t epoch) const
{
    return base_lrs()[group] * fns_[fns_.size() == 1 ? 0 : group](epoch);
}

// ---- Noam -------------------------------------------------------------------------------------

double noam_rate(std::int64_t step, std::int64_t d_model, std::int64_t warmup_steps, double factor)
{
    SPOOL_CHECK(step >= 1, ValueError, "noam_rate: step must be >= 1 (the formula gives 0 at step 0 and divides by "
                "zero in step^-0.5; see NoamConvention); got ", step);
    SPOOL_CHECK(d_model >= 1, ValueError, "noam_rate: d_model must be >= 1; got ", d_model);
    SPOOL_CHECK(warmup_steps >= 1, ValueError, "noam_rate: warmup_steps must be >= 1; got ", warmup_steps);
    const double s = static_cast<double>(step), w = static_cast<double>(warmup_steps);
    return factor * std::pow(static_cast<double>(d_model), -0.5) * std::min(std::pow(s, -0.5), s * std::pow(w, -1.5));
}

NoamLR::NoamLR(Optimizer& opt, NoamOptions o) : LRScheduler("NoamLR", opt), o_(o)
{
    SPOOL_CHECK(o.d_model >= 1, ValueError, "NoamLR: d_model must be >= 1; got ", o.d_model);
    SPOOL_CHECK(o.warmup_steps >= 1, ValueError, "NoamLR: warmup_steps must be >= 1; got ", o.warmup_steps);
    SPOOL_CHECK(o.factor >= 0, ValueError, "NoamLR: factor must be >= 0; got ", o.factor);
    initial_step();
}

std::int64_t NoamLR::step_number(std::int64_t epoch) const
{
    return o_.convention == NoamConvention::paper ? epoch + 1 : std::max<std::int64_t>(epoch, 1);
}

double NoamLR::lr_at(std::size_t, std::int64_t epoch) const
{
    return noam_rate(step_number(epoch), o_.d_model, o_.warmup_steps, o_.factor);
}

// ---- warmup, then decay ------------------------------------------------------------------------

double warmup_factor(std::int64_t epoch, const WarmupOptions& o)
{
    if (epoch < o.warmup_steps) return static_cast<double>(epoch) / static_cast<double>(std::max<std::int64_t>(1, o.warmup_steps));
    if (o.decay == Decay::constant) return 1.0;
    double p = static_cast<double>(epoch - o.warmup_steps) /
               static_cast<double>(std::max<std::int64_t>(1, o.total_steps - o.warmup_steps));
    p = std::clamp(p, 0.0, 1.0);
    const double f = o.decay == Decay::cosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * p)) : 1.0 - p;
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * f;
}

WarmupLR::WarmupLR(Optimizer& opt, WarmupOptions o) : LRScheduler("WarmupLR", opt), o_(o)
{
    SPOOL_CHECK(o.warmup_steps >= 0, ValueError, "WarmupLR: warmup_steps must be >= 0; got ", o.warmup_steps);
    SPOOL_CHECK(o.decay == Decay::constant || o.total_steps >= o.warmup_steps, ValueError,
                "WarmupLR: total_steps must be >= warmup_steps; got total_steps ", o.total_steps, " and warmup_steps ",
                o.warmup_steps);
    SPOOL_CHECK(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, ValueError, "WarmupLR: min_lr_ratio must be in [0, 1]; got ",
                o.min_lr_ratio);
    initial_step();
}

double WarmupLR::lr_at(std::size_t group, std::int64_t epoch) const { return base_lrs()[group] * warmup_factor(epoch, o_); }

// ---- inverse square root ---------------------------------------------------------------------

InverseSqrtLR::InverseSqrtLR(Optimizer& opt, InverseSqrtOptions o)
    : LRScheduler("InverseSqrtLR", opt), warmup_(o.warmup_steps),
      timescale_(o.timescale ? o.timescale : (o.warmup_steps ? o.warmup_steps : 10000))
{
    SPOOL_CHECK(o.warmup_steps >= 0, ValueError, "InverseSqrtLR: warmup_steps must be >= 0; got ", o.warmup_steps);
    SPOOL_CHECK(o.timescale >= 0, ValueError, "InverseSqrtLR: timescale must be >= 0; got ", o.timescale);
    initial_step();
}

double InverseSqrtLR::lr_at(std::size_t group, std::int64_t epoch) const
{
    double f;
    if (epoch < warmup_) {
        f = static_cast<double>(epoch) / static_cast<double>(std::max<std::int64_t>(1, warmup_));
    } else {
        const double shifted = static_cast<double>(epoch + timescale_ - warmup_) / static_cast<double>(timescale_);
        f = 1.0 / std::sqrt(shifted);
    }
    return base_lrs()[group] * f;
}

// ---- sequence -----------------------------------------------------------------------------------

SequentialLR::SequentialLR(Optimizer& opt, std::vector<std::shared_ptr<LRScheduler>> schedules,
                           std::vector<std::int64_t> milestones)
    : LRScheduler("SequentialLR", opt), schedules_(std::move(schedules)), milestones_(std::move(milestones))
{
    SPOOL_CHECK(!schedules_.empty(), ValueError, "SequentialLR: expected at least one schedule");
    SPOOL_CHECK(milestones_.size() + 1 == schedules_.size(), ValueError,
                "SequentialLR: expected one milestone fewer than schedules; got ", schedules_.size(), " schedules and ",
                milestones_.size(), " milestones");
    for (std::size_t k = 0; k < schedules_.size(); ++k) {
        SPOOL_CHECK(schedules_[k], ValueError, "SequentialLR: schedule ", k, " is null");
        SPOOL_CHECK(&schedules_[k]->optimizer() == &opt, ValueError, "SequentialLR: schedule ", k,
                    " belongs to another optimizer");
    }
    for (std::size_t k = 0; k < milestones_.size(); ++k)
        SPOOL_CHECK(milestones_[k] > (k ? milestones_[k - 1] : 0), ValueError,
                    "SequentialLR: milestones must be positive and increasing; got ", milestones_[k], " at index ", k);
    initial_step();
}

double SequentialLR::lr_at(std::size_t group, std::int64_t epoch) const
{
    auto k = static_cast<std::size_t>(std::upper_bound(milestones_.begin(), milestones_.end(), epoch) - milestones_.begin());
    const std::int64_t start = k ? milestones_[k - 1] : 0;
    return schedules_[k]->lr_at(group, epoch - start);
}

}  // namespace spool::optim
