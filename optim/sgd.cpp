#include "optim/sgd.hpp"

#include "tensor/optim_kernels.hpp"

namespace spool::optim {

void validate(const SGDOptions& o)
{
    // !(x >= 0) also rejects NaN
    SPOOL_CHECK(o.lr >= 0, ValueError, "SGD: invalid learning rate; got ", o.lr);
    SPOOL_CHECK(o.momentum >= 0, ValueError, "SGD: invalid momentum value; got ", o.momentum);
    SPOOL_CHECK(o.weight_decay >= 0, ValueError, "SGD: invalid weight_decay value; got ", o.weight_decay);
    SPOOL_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), ValueError,
                "SGD: nesterov momentum requires a momentum and zero dampening; got momentum ", o.momentum,
                " and dampening ", o.dampening);
}

void SGD::update()
{
    for (const auto& o : options_) validate(o);
    const std::vector<std::vector<Value*>> grads = all_grads();  // checked before any state changes
    std::vector<kernels::SgdSlot> slots;
    for (std::size_t g = 0; g < options_.size(); ++g) {
        const SGDOptions& o = options_[g];
        for (std::size_t i = 0; i < state_[g].size(); ++i) {
            Value* grad = grads[g][i];
            if (!grad) continue;
            Value& param = group(g).params[i].impl()->value;
            kernels::SgdSlot s{.param = &param, .grad = grad};
            if (o.momentum != 0) {
                Value& buf = state_[g][i].momentum_buffer;
                s.init_buffer = !buf.defined();
                if (s.init_buffer) buf = Value::empty(param.shape(), param.dtype());
                s.momentum_buffer = &buf;
            }
            s.lr = o.lr;
            s.momentum = o.momentum;
            s.dampening = o.dampening;
            s.weight_decay = o.weight_decay;
            s.nesterov = o.nesterov;
            s.maximize = o.maximize;
            slots.push_back(s);
        }
    }
    kernels::sgd_step(slots);
}

void SGD::save(StateDict& sd) const
{
    for (std::size_t g = 0; g < options_.size(); ++g) {
        const SGDOptions& o = options_[g];
        const std::string k = group_key(g);
        sd[k + "lr"] = o.lr;
        sd[k + "momentum"] = o.momentum;
        sd[k + "dampening"] = o.dampening;
        sd[k + "weight_decay"] = o.weight_decay;
        sd[k + "nesterov"] = std::int64_t{o.nesterov};
        sd[k + "maximize"] = std::int64_t{o.maximize};
        for (std::size_t i = 0; i < state_[g].size(); ++i)
            if (state_[g][i].momentum_buffer.defined())
                sd[state_key(g, i) + "momentum_buffer"] = state_[g][i].momentum_buffer.clone();
    }
}

void SGD::load(const StateDict& sd)
{
    std::vector<SGDOptions> opts;
    std::vector<std::vector<SGDParamState>> state;
    for (std::size_t g = 0; g < options_.size(); ++g) {
        const std::string k = group_key(g);
        SGDOptions o{.lr = get_double(sd, k + "lr", "SGD"),
                     .momentum = get_double(sd, k + "momentum", "SGD"),
                     .dampening = get_double(sd, k + "dampening", "SGD"),
                     .weight_decay = get_double(sd, k + "weight_decay", "SGD"),
                     .nesterov = get_int(sd, k + "nesterov", "SGD") != 0,
                     .maximize = get_int(sd, k + "maximize", "SGD") != 0};
        validate(o);
        opts.push_back(o);
        state.emplace_back(state_[g].size());
        for (std::size_t i = 0; i < state_[g].size(); ++i) {
            const std::string key = state_key(g, i) + "momentum_buffer";
            if (sd.count(key)) state[g][i].momentum_buffer = load_buffer(sd, key, g, i);
        }
    }
    options_ = std::move(opts);
    state_ = std::move(state);
}

}  // namespace spool::optim
