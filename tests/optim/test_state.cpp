// State round trip: train 10 steps, save optimizer + schedule state, load both into fresh
// objects over fresh parameters, continue — the result must equal never stopping, bit for
// bit (parameters, moments, step counts, lrs). Also: saved dicts are copies, and loading
// checks the dict before changing anything.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "optim/adam.hpp"
#include "optim/schedule.hpp"
#include "optim/sgd.hpp"
#include "tensor/random.hpp"

using namespace spool;
using namespace spool::optim;

namespace {

bool bit_equal(const Value& a, const Value& b)
{
    if (a.defined() != b.defined()) return false;
    if (!a.defined()) return true;
    return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

/// Parameters of a few shapes (one float64), with values from a fixed seed.
std::vector<Tensor> make_params()
{
    manual_seed(7);
    return {randn({3, 5}, {.requires_grad = true}), randn({33}, {.requires_grad = true}),
            randn({4}, {.dtype = f64, .requires_grad = true})};
}

std::vector<Tensor> copy_params(const std::vector<Tensor>& ps)
{
    std::vector<Tensor> out;
    for (const Tensor& p : ps) out.emplace_back(p.value().clone(), true);
    return out;
}

/// A gradient that depends on the step and on the parameter (so that state matters);
/// parameter 1 has none at step 4, and step 6 carries a NaN (skipped by the guard).
void set_grads(std::vector<Tensor>& ps, int step)
{
    for (std::size_t i = 0; i < ps.size(); ++i) {
        Value& g = ps[i].impl()->grad;
        if (i == 1 && step == 4) {
            g = Value();
            continue;
        }
        const Value& v = ps[i].value();
        g = Value::empty(v.shape(), v.dtype());
        for (std::int64_t j = 0; j < v.numel(); ++j)
            g.set(j, 0.3 * v.at(j) + std::sin(0.7 * step + 1.3 * static_cast<double>(j) + static_cast<double>(i)));
        if (step == 6 && i == 0) g.set(2, std::numeric_limits<double>::quiet_NaN());
    }
}

struct Run {
    std::unique_ptr<Optimizer> opt;
    std::unique_ptr<LRScheduler> sched;
};

using Factory = std::function<Run(std::vector<Tensor>&)>;

/// Two groups (the float64 parameter on its own, with its own lr and weight decay).
std::vector<ParamGroup> groups_of(std::vector<Tensor>& ps)
{
    return {{.params = {ps[0], ps[1]}, .names = {"w", "b"}}, {.params = {ps[2]}, .lr = 0.02, .weight_decay = 0.0}};
}

void train(Run& r, std::vector<Tensor>& ps, int from, int to)
{
    for (int t = from; t < to; ++t) {
        set_grads(ps, t);
        r.opt->step();
        r.sched->step();
    }
}

void check_same_state(const StateDict& a, const StateDict& b)
{
    REQUIRE(a.size() == b.size());
    for (const auto& [key, va] : a) {
        INFO("key ", key);
        REQUIRE(b.count(key));
        const StateEntry& vb = b.at(key);
        REQUIRE(va.index() == vb.index());
        if (const Value* x = std::get_if<Value>(&va)) CHECK(bit_equal(*x, std::get<Value>(vb)));
        else if (const auto* i = std::get_if<std::int64_t>(&va)) CHECK(*i == std::get<std::int64_t>(vb));
        else if (const auto* d = std::get_if<double>(&va)) CHECK(*d == std::get<double>(vb));
        else CHECK(std::get<std::string>(va) == std::get<std::string>(vb));
    }
}

void check_round_trip(const Factory& make)
{
    // A: 20 steps without stopping
    std::vector<Tensor> pa = make_params();
    Run a = make(pa);
    a.opt->skip_nonfinite(true);
    train(a, pa, 0, 20);

    // B: 10 steps, save, load into fresh objects over fresh parameters, 10 more
    std::vector<Tensor> pb = make_params();
    StateDict opt_state, sched_state;
    std::vector<Tensor> saved_params;
    {
        Run b = make(pb);
        b.opt->skip_nonfinite(true);
        train(b, pb, 0, 10);
        opt_state = b.opt->state_dict();
        sched_state = b.sched->state_dict();
        saved_params = copy_params(pb);
        train(b, pb, 10, 12);  // keep going: the saved dicts must not change
    }
    std::vector<Tensor> pc = saved_params;
    Run c = make(pc);
    c.opt->skip_nonfinite(true);
    c.opt->load_state_dict(opt_state);
    c.sched->load_state_dict(sched_state);
    CHECK(c.sched->last_epoch() == 10);
    CHECK(c.opt->skipped_steps() == 1);
    train(c, pc, 10, 20);

    for (std::size_t i = 0; i < pa.size(); ++i) {
        INFO("parameter ", i);
        CHECK(bit_equal(pa[i].value(), pc[i].value()));
    }
    CHECK(a.sched->get_last_lr() == c.sched->get_last_lr());
    CHECK(a.sched->last_epoch() == c.sched->last_epoch());
    check_same_state(a.opt->state_dict(), c.opt->state_dict());
    check_same_state(a.sched->state_dict(), c.sched->state_dict());
}

}  // namespace

TEST_CASE("state round trip is bit-identical to never stopping")
{
    SUBCASE("SGD nesterov + WarmupLR cosine")
    {
        check_round_trip([](std::vector<Tensor>& ps) {
            Run r;
            r.opt = std::make_unique<SGD>(groups_of(ps), SGDOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3,
                                                                     .nesterov = true});
            r.sched = std::make_unique<WarmupLR>(*r.opt, WarmupOptions{.warmup_steps = 5, .total_steps = 20});
            return r;
        });
    }
    SUBCASE("Adam amsgrad + NoamLR")
    {
        check_round_trip([](std::vector<Tensor>& ps) {
            Run r;
            r.opt = std::make_unique<Adam>(groups_of(ps), AdamOptions{.lr = 1, .betas = {0.9, 0.98}, .eps = 1e-9,
                                                                       .weight_decay = 0.01, .amsgrad = true});
            r.sched = std::make_unique<NoamLR>(*r.opt, NoamOptions{.d_model = 32, .warmup_steps = 8});
            return r;
        });
    }
    SUBCASE("AdamW + SequentialLR")
    {
        check_round_trip([](std::vector<Tensor>& ps) {
            Run r;
            r.opt = std::make_unique<AdamW>(groups_of(ps), AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
            auto warm = std::make_shared<WarmupLR>(*r.opt, WarmupOptions{.warmup_steps = 4, .decay = Decay::constant});
            auto decay = std::make_shared<InverseSqrtLR>(*r.opt, InverseSqrtOptions{.timescale = 3});
            r.sched = std::make_unique<SequentialLR>(*r.opt, std::vector<std::shared_ptr<LRScheduler>>{warm, decay},
                                                     std::vector<std::int64_t>{7});
            return r;
        });
    }
}

TEST_CASE("state_dict layout: PyTorch's keys, flattened")
{
    std::vector<Tensor> ps = make_params();
    Adam opt(groups_of(ps), {.amsgrad = true});
    set_grads(ps, 0);
    opt.step();
    StateDict sd = opt.state_dict();
    CHECK(std::get<std::string>(sd.at("type")) == "Adam");
    CHECK(std::get<std::int64_t>(sd.at("param_groups")) == 2);
    CHECK(std::get<std::int64_t>(sd.at("param_groups.0.params")) == 2);
    CHECK(std::get<double>(sd.at("param_groups.1.lr")) == 0.02);
    CHECK(std::get<double>(sd.at("param_groups.0.betas.1")) == 0.999);
    CHECK(std::get<std::int64_t>(sd.at("state.2.step")) == 1);
    CHECK(std::get<Value>(sd.at("state.2.exp_avg")).dtype() == f64);
    CHECK(std::get<Value>(sd.at("state.1.max_exp_avg_sq")).shape() == Shape{33});
    CHECK(std::get<std::int64_t>(sd.at("skipped_steps")) == 0);
    // state_bytes counts the same tensors without copying them
    std::size_t bytes = 0;
    for (const auto& [key, entry] : sd)
        if (const Value* v = std::get_if<Value>(&entry)) bytes += v->nbytes();
    CHECK(bytes > 0);
    CHECK(opt.state_bytes() == bytes);
    // a copy: stepping on does not change it
    Value m = std::get<Value>(sd.at("state.0.exp_avg")).clone();
    set_grads(ps, 1);
    opt.step();
    CHECK(bit_equal(std::get<Value>(sd.at("state.0.exp_avg")), m));
}

TEST_CASE("load_state_dict checks before it changes anything")
{
    std::vector<Tensor> ps = make_params();
    Adam opt(groups_of(ps));
    set_grads(ps, 0);
    opt.step();
    const StateDict good = opt.state_dict();

    SGD sgd(groups_of(ps));
    CHECK_THROWS_WITH_AS(sgd.load_state_dict(good), "SGD: load_state_dict: the state was saved by Adam", ValueError);

    StateDict bad = good;
    bad.erase("state.1.exp_avg_sq");
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad), "Adam: load_state_dict: missing key 'state.1.exp_avg_sq'", ValueError);
    bad = good;
    bad["state.0.step"] = 1.5;
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad), "Adam: load_state_dict: key 'state.0.step' should hold an int64; got a double",
                         ValueError);
    bad = good;
    bad["state.1.exp_avg"] = Value::zeros({32}, f32);
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad),
                         "Adam: load_state_dict: state.1.exp_avg has shape (32,) but parameter 'b' has shape (33,)",
                         ShapeError);
    bad = good;
    bad["param_groups.0.betas.0"] = 1.0;
    CHECK_THROWS_WITH_AS(opt.load_state_dict(bad), "Adam: invalid beta1 parameter; got 1", ValueError);

    std::vector<Tensor> one = {ps[0]};
    Adam small(one);
    CHECK_THROWS_WITH_AS(small.load_state_dict(good),
                         "Adam: load_state_dict: the state has 2 parameter groups but the optimizer has 1", ValueError);

    // nothing changed by the failed loads
    CHECK(opt.options(0).betas[0] == 0.9);
    check_same_state(opt.state_dict(), good);
}

TEST_CASE("a schedule's state restores the optimizer's lr in either load order")
{
    std::vector<Tensor> ps = make_params();
    Adam opt(groups_of(ps));
    WarmupLR sched(opt, {.warmup_steps = 10, .total_steps = 100});
    for (int t = 0; t < 7; ++t) sched.step();
    const StateDict os = opt.state_dict(), ss = sched.state_dict();
    const double lr0 = opt.lr(0), lr1 = opt.lr(1);

    std::vector<Tensor> fresh = copy_params(ps);
    Adam opt2(groups_of(fresh));
    opt2.load_state_dict(os);  // optimizer first, then the schedule is constructed (it sets epoch 0's lr) ...
    WarmupLR sched2(opt2, {.warmup_steps = 10, .total_steps = 100});
    sched2.load_state_dict(ss);  // ... and loading it sets the saved lrs back
    CHECK(opt2.lr(0) == lr0);
    CHECK(opt2.lr(1) == lr1);
    CHECK(sched2.base_lrs() == sched.base_lrs());
    sched.step();
    sched2.step();
    CHECK(sched2.get_last_lr() == sched.get_last_lr());

    LambdaLR other(opt2, [](std::int64_t) { return 1.0; });
    CHECK_THROWS_WITH_AS(other.load_state_dict(ss), "LambdaLR: load_state_dict: the state was saved by WarmupLR",
                         ValueError);
}
