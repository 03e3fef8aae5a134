#include "optim/adam.hpp"

#include "tensor/optim_kernels.hpp"

namespace spool::optim {

template <bool Decoupled>
void validate(const AdamOptionsT<Decoupled>& o)
{
    const char* who = AdamOptionsT<Decoupled>::name;
    // written as !(in range) so that NaN is rejected too
    SPOOL_CHECK(o.lr >= 0, ValueError, who, ": invalid learning rate; got ", o.lr);
    SPOOL_CHECK(o.eps >= 0, ValueError, who, ": invalid epsilon value; got ", o.eps);
    SPOOL_CHECK(o.betas[0] >= 0 && o.betas[0] < 1, ValueError, who, ": invalid beta1 parameter; got ", o.betas[0]);
    SPOOL_CHECK(o.betas[1] >= 0 && o.betas[1] < 1, ValueError, who, ": invalid beta2 parameter; got ", o.betas[1]);
    SPOOL_CHECK(o.weight_decay >= 0, ValueError, who, ": invalid weight_decay value; got ", o.weight_decay);
}

template void validate(const AdamOptions& o);
template void validate(const AdamWOptions& o);

namespace detail {

template <class Options>
void AdamImpl<Options>::update()
{
    auto& options_ = this->options_;
    auto& state_ = this->state_;
    for (const auto& o : options_) validate(o);
    const std::vector<std::vector<Value*>> grads = this->all_grads();  // checked before any state changes
    std::vector<kernels::AdamSlot> slots;
    for (std::size_t g = 0; g < options_.size(); ++g) {
        const Options& o = options_[g];
        for (std::size_t i = 0; i < state_[g].size(); ++i) {
            Value* grad = grads[g][i];
            if (!grad) continue;  // no gradient: no update, no state, as in PyTorch
            Value& param = this->group(g).params[i].impl()->value;
            AdamParamState& st = state_[g][i];
            if (!st.exp_avg.defined()) {
                st.exp_avg = Value::zeros(param.shape(), param.dtype());
                st.exp_avg_sq = Value::zeros(param.shape(), param.dtype());
            }
            if (o.amsgrad && !st.max_exp_avg_sq.defined())
                st.max_exp_avg_sq = Value::zeros(param.shape(), param.dtype());
            ++st.step;
            slots.push_back({.param = &param,
                             .grad = grad,
                             .exp_avg = &st.exp_avg,
                             .exp_avg_sq = &st.exp_avg_sq,
                             .max_exp_avg_sq = o.amsgrad ? &st.max_exp_avg_sq : nullptr,
                             .step = st.step,
                             .lr = o.lr,
                             .beta1 = o.betas[0],
                             .beta2 = o.betas[1],
                             .eps = o.eps,
                             .weight_decay = o.weight_decay,
                             .decoupled = Options::decoupled_weight_decay,
                             .maximize = o.maximize});
        }
    }
    kernels::adam_step(slots);
}

template <class Options>
void AdamImpl<Options>::save(StateDict& sd) const
{
    const auto& options_ = this->options_;
    const auto& state_ = this->state_;
    for (std::size_t g = 0; g < options_.size(); ++g) {
        const Options& o = options_[g];
        const std::string k = this->group_key(g);
        sd[k + "lr"] = o.lr;
        sd[k + "betas.0"] = o.betas[0];
        sd[k + "betas.1"] = o.betas[1];
        sd[k + "eps"] = o.eps;
        sd[k + "weight_decay"] = o.weight_decay;
        sd[k + "amsgrad"] = std::int64_t{o.amsgrad};
        sd[k + "maximize"] = std::int64_t{o.maximize};
        for (std::size_t i = 0; i < state_[g].size(); ++i) {
            const AdamParamState& st = state_[g][i];
            if (st.step == 0) continue;
            const std::string s = this->state_key(g, i);
            sd[s + "step"] = st.step;
            sd[s + "exp_avg"] = st.exp_avg.clone();
            sd[s + "exp_avg_sq"] = st.exp_avg_sq.clone();
            if (st.max_exp_avg_sq.defined()) sd[s + "max_exp_avg_sq"] = st.max_exp_avg_sq.clone();
        }
    }
}

template <class Options>
void AdamImpl<Options>::load(const StateDict& sd)
{
    const char* who = Options::name;
    std::vector<Options> opts;
    std::vector<std::vector<AdamParamState>> state;
    for (std::size_t g = 0; g < this->options_.size(); ++g) {
        const std::string k = this->group_key(g);
        Options o;
        o.lr = get_double(sd, k + "lr", who);
        o.betas = {get_double(sd, k + "betas.0", who), get_double(sd, k + "betas.1", who)};
        o.eps = get_double(sd, k + "eps", who);
        o.weight_decay = get_double(sd, k + "weight_decay", who);
        o.amsgrad = get_int(sd, k + "amsgrad", who) != 0;
        o.maximize = get_int(sd, k + "maximize", who) != 0;
        validate(o);
        opts.push_back(o);
        state.emplace_back(this->state_[g].size());
        for (std::size_t i = 0; i < state[g].size(); ++i) {
            const std::string s = this->state_key(g, i);
            if (!sd.count(s + "step")) continue;
            AdamParamState& st = state[g][i];
            st.step = get_int(sd, s + "step", who);
            SPOOL_CHECK(st.step >= 1, ValueError, who, ": load_state_dict: ", s, "step must be >= 1; got ", st.step);
            st.exp_avg = this->load_buffer(sd, s + "exp_avg", g, i);
            st.exp_avg_sq = this->load_buffer(sd, s + "exp_avg_sq", g, i);
            if (sd.count(s + "max_exp_avg_sq")) st.max_exp_avg_sq = this->load_buffer(sd, s + "max_exp_avg_sq", g, i);
        }
    }
    this->options_ = std::move(opts);
    this->state_ = std::move(state);
}

template class AdamImpl<AdamOptions>;
template class AdamImpl<AdamWOptions>;

}  // namespace detail

}  // namespace spool::optim
