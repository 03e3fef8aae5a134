#include "optim/optimizer.hpp"

#include <algorithm>

#include "tensor/kernels.hpp"
#include "tensor/optim_kernels.hpp"
#include "tensor/profiler.hpp"

namespace spool::optim {

Optimizer::Optimizer(std::string name, const std::vector<ParamGroup>& groups) : name_(std::move(name))
{
    std::size_t total = 0;
    for (const auto& g : groups) total += g.params.size();
    SPOOL_CHECK(total > 0, ValueError, name_, ": got an empty parameter list");
    for (std::size_t g = 0; g < groups.size(); ++g) {
        const ParamGroup& pg = groups[g];
        SPOOL_CHECK(pg.names.empty() || pg.names.size() == pg.params.size(), ValueError, name_, ": group ", g, " has ",
                    pg.params.size(), " parameters but ", pg.names.size(), " names");
        first_index_.push_back(g == 0 ? 0 : first_index_[g - 1] + groups_[g - 1].params.size());
        groups_.push_back({pg.params, pg.names, std::nullopt});
        for (std::size_t i = 0; i < pg.params.size(); ++i) {
            const Tensor& p = pg.params[i];
            SPOOL_CHECK(p.defined(), ValueError, name_, ": parameter ", param_label(g, i), " is undefined");
            SPOOL_CHECK(is_floating(p.dtype()), TypeError, name_, ": parameter ", param_label(g, i),
                        " must be float32 or float64; got ", dtype_name(p.dtype()));
        }
    }
    // a parameter in two places would be updated twice per step
    std::vector<const TensorImpl*> seen;
    for (std::size_t g = 0; g < groups_.size(); ++g)
        for (std::size_t i = 0; i < groups_[g].params.size(); ++i) {
            const TensorImpl* impl = groups_[g].params[i].impl().get();
            for (const TensorImpl* s : seen)
                SPOOL_CHECK(s != impl, ValueError, name_, ": parameter ", param_label(g, i),
                            " appears more than once; a parameter can be in only one group, once");
            seen.push_back(impl);
        }
}

const std::vector<Tensor>& Optimizer::params(std::size_t group) const
{
    SPOOL_CHECK(group < groups_.size(), ValueError, name_, ": group ", group, " is out of range; there are ",
                groups_.size(), " parameter groups");
    return groups_[group].params;
}

std::vector<Tensor> Optimizer::parameters() const
{
    std::vector<Tensor> all;
    for (const auto& g : groups_) all.insert(all.end(), g.params.begin(), g.params.end());
    return all;
}

std::string Optimizer::param_label(std::size_t g, std::size_t i) const
{
    if (g < groups_.size() && i < groups_[g].names.size()) return "'" + groups_[g].names[i] + "'";
    return std::to_string(g < first_index_.size() ? first_index_[g] + i : i);
}

std::optional<double> Optimizer::initial_lr(std::size_t group) const
{
    params(group);  // range check
    return groups_[group].initial_lr;
}

void Optimizer::set_initial_lr(std::size_t group, double lr)
{
    params(group);
    groups_[group].initial_lr = lr;
}

void Optimizer::skip_nonfinite(bool on, std::function<void(const SkipReport&)> on_skip)
{
    guard_ = on;
    on_skip_ = std::move(on_skip);
}

Value* Optimizer::grad_of(std::size_t g, std::size_t i) const
{
    TensorImpl& p = *groups_[g].params[i].impl();
    if (!p.grad.defined()) return nullptr;
    SPOOL_CHECK(p.grad.shape() == p.value.shape(), ShapeError, name_, ": the gradient of parameter ", param_label(g, i),
                " has shape ", to_string(p.grad.shape()), " but the parameter has shape ", to_string(p.value.shape()));
    SPOOL_CHECK(p.grad.dtype() == p.value.dtype(), TypeError, name_, ": the gradient of parameter ", param_label(g, i),
                " is ", dtype_name(p.grad.dtype()), " but the parameter is ", dtype_name(p.value.dtype()));
    return &p.grad;
}

std::vector<std::vector<Value*>> Optimizer::all_grads() const
{
    std::vector<std::vector<Value*>> grads(groups_.size());
    for (std::size_t g = 0; g < groups_.size(); ++g)
        for (std::size_t i = 0; i < groups_[g].params.size(); ++i) grads[g].push_back(grad_of(g, i));
    return grads;
}

std::string Optimizer::state_key(std::size_t g, std::size_t i) const
{
    return "state." + std::to_string(first_index_[g] + i) + ".";
}

std::string Optimizer::group_key(std::size_t g) { return "param_groups." + std::to_string(g) + "."; }

Value Optimizer::load_buffer(const StateDict& sd, const std::string& key, std::size_t g, std::size_t i) const
{
    const Value& v = get_value(sd, key, name_.c_str());
    const Value& param = groups_[g].params[i].value();
    SPOOL_CHECK(v.shape() == param.shape(), ShapeError, name_, ": load_state_dict: ", key, " has shape ",
                to_string(v.shape()), " but parameter ", param_label(g, i), " has shape ", to_string(param.shape()));
    return kernels::cast(v, param.dtype()).clone();  // a copy: the dict stays untouched
}

bool Optimizer::step()
{
    profiler::Scope prof(name_.c_str(), profiler::Pass::optimizer);  // a row named "Adam", pass "optim"
    if (guard_) {
        std::vector<const Value*> grads;
        for (const auto& group : all_grads()) grads.insert(grads.end(), group.begin(), group.end());
        if (!kernels::all_finite(grads)) {  // undefined (nullptr) entries are skipped
            SkipReport r;
            r.skipped_steps = ++skipped_;
            bool found = false;
            for (std::size_t g = 0; g < groups_.size() && !found; ++g)
                for (std::size_t i = 0; i < groups_[g].params.size() && !found; ++i)
                    if (const Value* d = grad_of(g, i); d && !kernels::all_finite(*d)) {
                        r.group = g;
                        r.index = i;
                        found = true;
                    }
            r.message = ::spool::detail::cat(name_, ": step skipped: the gradient of parameter ", param_label(r.group, r.index),
                                    " holds NaN or Inf; ", skipped_, " step(s) skipped so far");
            last_skip_ = r;
            if (on_skip_) on_skip_(r);
            return false;
        }
    }
    update();
    return true;
}

void Optimizer::zero_grad(bool set_to_none)
{
    for (auto& g : groups_)
        for (auto& p : g.params) {
            Value& d = p.impl()->grad;
            if (set_to_none || !d.defined()) {
                d = Value();
            } else {
                if (d.use_count() > 1) d = Value::zeros(d.shape(), d.dtype());  // shared: do not zero the other owner
                else std::fill_n(static_cast<char*>(d.raw()), d.nbytes(), char(0));
            }
        }
}

StateDict Optimizer::state_dict() const
{
    StateDict sd;
    sd["type"] = name_;
    sd["param_groups"] = static_cast<std::int64_t>(groups_.size());
    for (std::size_t g = 0; g < groups_.size(); ++g) {
        sd[group_key(g) + "params"] = static_cast<std::int64_t>(groups_[g].params.size());
        if (groups_[g].initial_lr) sd[group_key(g) + "initial_lr"] = *groups_[g].initial_lr;
    }
    sd["skipped_steps"] = skipped_;
    save(sd);
    return sd;
}

std::size_t Optimizer::state_bytes() const
{
    std::size_t bytes = 0;
    for (const auto& [key, entry] : state_dict())
        if (const Value* v = std::get_if<Value>(&entry)) bytes += v->nbytes();
    return bytes;
}

void Optimizer::load_state_dict(const StateDict& sd)
{
    const char* who = name_.c_str();
    check_saved_by(sd, name_, groups_.size());
    std::vector<std::optional<double>> initial(groups_.size());
    for (std::size_t g = 0; g < groups_.size(); ++g) {
        const std::int64_t np = get_int(sd, group_key(g) + "params", who);
        SPOOL_CHECK(np == static_cast<std::int64_t>(groups_[g].params.size()), ValueError, name_,
                    ": load_state_dict: group ", g, " of the state has ", np, " parameters but the optimizer's has ",
                    groups_[g].params.size());
        if (sd.count(group_key(g) + "initial_lr")) initial[g] = get_double(sd, group_key(g) + "initial_lr", who);
    }
    const std::int64_t skipped = get_int(sd, "skipped_steps", who);
    load(sd);  // checks its part, then commits; nothing below can throw
    for (std::size_t g = 0; g < groups_.size(); ++g) groups_[g].initial_lr = initial[g];
    skipped_ = skipped;
}

namespace detail {

std::vector<ParamGroup> as_groups(std::vector<Tensor> params) { return {ParamGroup{.params = std::move(params)}}; }

std::vector<ParamGroup> as_groups(const NamedParameters& params)
{
    ParamGroup g;
    for (const auto& [name, p] : params) {
        g.names.push_back(name);
        g.params.push_back(p);
    }
    return {std::move(g)};
}

}  // namespace detail

}  // namespace spool::optim
