// Error messages of the common mistakes, asserted word for word: invalid options (with
// the bad value), bad parameter lists, bad schedules, clipping a non-finite norm; and the
// non-finite guard's skip, count and report.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "optim/adam.hpp"
#include "optim/clip.hpp"
#include "optim/schedule.hpp"
#include "optim/sgd.hpp"

using namespace spool;
using namespace spool::optim;

namespace {

std::vector<Tensor> two_params()
{
    return {full({2, 3}, 1.0, {.requires_grad = true}), full({4}, -1.0, {.requires_grad = true})};
}

void set_grad(Tensor& p, double v) { p.impl()->grad = Value::full(p.shape(), v, p.dtype()); }

}  // namespace

TEST_CASE("Adam and AdamW reject invalid options with the bad value")
{
    auto ps = two_params();
    CHECK_THROWS_WITH_AS(Adam(ps, {.lr = -0.1}), "Adam: invalid learning rate; got -0.1", ValueError);
    CHECK_THROWS_WITH_AS(Adam(ps, {.betas = {1.5, 0.999}}), "Adam: invalid beta1 parameter; got 1.5", ValueError);
    CHECK_THROWS_WITH_AS(Adam(ps, {.betas = {0.9, 1.0}}), "Adam: invalid beta2 parameter; got 1", ValueError);
    CHECK_THROWS_WITH_AS(Adam(ps, {.betas = {-0.1, 0.9}}), "Adam: invalid beta1 parameter; got -0.1", ValueError);
    CHECK_THROWS_WITH_AS(Adam(ps, {.eps = -1e-8}), "Adam: invalid epsilon value; got -1e-08", ValueError);
    CHECK_THROWS_WITH_AS(Adam(ps, {.weight_decay = -0.01}), "Adam: invalid weight_decay value; got -0.01", ValueError);
    CHECK_THROWS_WITH_AS(Adam(ps, {.lr = std::nan("")}), "Adam: invalid learning rate; got nan", ValueError);
    CHECK_THROWS_WITH_AS(AdamW(ps, {.betas = {0.9, 1.2}}), "AdamW: invalid beta2 parameter; got 1.2", ValueError);
    CHECK_THROWS_WITH_AS(Adam(std::vector<ParamGroup>{{.params = ps, .lr = -1.0}}),
                         "Adam: invalid learning rate; got -1", ValueError);
    // options changed after construction are checked at the next step
    Adam opt(ps);
    opt.options(0).eps = -1;
    set_grad(ps[0], 1);
    CHECK_THROWS_WITH_AS(opt.step(), "Adam: invalid epsilon value; got -1", ValueError);
}

TEST_CASE("SGD rejects invalid options with the bad value")
{
    auto ps = two_params();
    CHECK_THROWS_WITH_AS(SGD(ps, {.lr = -1}), "SGD: invalid learning rate; got -1", ValueError);
    CHECK_THROWS_WITH_AS(SGD(ps, {.momentum = -0.9}), "SGD: invalid momentum value; got -0.9", ValueError);
    CHECK_THROWS_WITH_AS(SGD(ps, {.weight_decay = -1e-4}), "SGD: invalid weight_decay value; got -0.0001", ValueError);
    CHECK_THROWS_WITH_AS(SGD(ps, {.nesterov = true}),
                         "SGD: nesterov momentum requires a momentum and zero dampening; got momentum 0 and dampening 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(SGD(ps, {.momentum = 0.9, .dampening = 0.1, .nesterov = true}),
                         "SGD: nesterov momentum requires a momentum and zero dampening; got momentum 0.9 and "
                         "dampening 0.1",
                         ValueError);
}

TEST_CASE("bad parameter lists")
{
    auto ps = two_params();
    CHECK_THROWS_WITH_AS(Adam(std::vector<Tensor>{}), "Adam: got an empty parameter list", ValueError);
    CHECK_THROWS_WITH_AS(Adam(std::vector<Tensor>{ps[0], ps[1], ps[0]}),
                         "Adam: parameter 2 appears more than once; a parameter can be in only one group, once",
                         ValueError);
    CHECK_THROWS_WITH_AS(SGD(std::vector<ParamGroup>{{.params = {ps[0]}}, {.params = {ps[1], ps[0]}}}),
                         "SGD: parameter 2 appears more than once; a parameter can be in only one group, once",
                         ValueError);
    CHECK_THROWS_WITH_AS(Adam(std::vector<Tensor>{ps[0], Tensor()}), "Adam: parameter 1 is undefined", ValueError);
    CHECK_THROWS_WITH_AS(Adam(NamedParameters{{"w", ps[0]}, {"steps", arange(3)}}),
                         "Adam: parameter 'steps' must be float32 or float64; got int64", TypeError);
    CHECK_THROWS_WITH_AS(Adam(std::vector<ParamGroup>{{.params = ps, .names = {"w"}}}),
                         "Adam: group 0 has 2 parameters but 1 names", ValueError);

    Adam opt(NamedParameters{{"w", ps[0]}, {"b", ps[1]}});
    ps[1].impl()->grad = Value::zeros({3}, f32);
    CHECK_THROWS_WITH_AS(opt.step(), "Adam: the gradient of parameter 'b' has shape (3,) but the parameter has shape (4,)",
                         ShapeError);
    CHECK(opt.state(0, 0).step == 0);  // checked before anything changed
}

TEST_CASE("bad schedules")
{
    auto ps = two_params();
    Adam opt(ps);
    CHECK_THROWS_WITH_AS(NoamLR(opt, {.d_model = 0}), "NoamLR: d_model must be >= 1; got 0", ValueError);
    CHECK_THROWS_WITH_AS(NoamLR(opt, {.warmup_steps = 0}), "NoamLR: warmup_steps must be >= 1; got 0", ValueError);
    CHECK_THROWS_WITH_AS(noam_rate(0, 512, 4000),
                         "noam_rate: step must be >= 1 (the formula gives 0 at step 0 and divides by zero in "
                         "step^-0.5; see NoamConvention); got 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(WarmupLR(opt, {.warmup_steps = 20, .total_steps = 10}),
                         "WarmupLR: total_steps must be >= warmup_steps; got total_steps 10 and warmup_steps 20",
                         ValueError);
    CHECK_THROWS_WITH_AS(WarmupLR(opt, {.total_steps = 10, .min_lr_ratio = 2}),
                         "WarmupLR: min_lr_ratio must be in [0, 1]; got 2", ValueError);
    CHECK_THROWS_WITH_AS(InverseSqrtLR(opt, {.warmup_steps = -1}), "InverseSqrtLR: warmup_steps must be >= 0; got -1",
                         ValueError);
    auto a = std::make_shared<LambdaLR>(opt, [](std::int64_t) { return 1.0; });
    auto b = std::make_shared<LambdaLR>(opt, [](std::int64_t) { return 0.5; });
    CHECK_THROWS_WITH_AS(SequentialLR(opt, {a, b}, {}),
                         "SequentialLR: expected one milestone fewer than schedules; got 2 schedules and 0 milestones",
                         ValueError);
    CHECK_THROWS_WITH_AS(SequentialLR(opt, {a, b}, {0}),
                         "SequentialLR: milestones must be positive and increasing; got 0 at index 0", ValueError);
    SGD other(ps);
    auto c = std::make_shared<LambdaLR>(other, [](std::int64_t) { return 1.0; });
    CHECK_THROWS_WITH_AS(SequentialLR(opt, {a, c}, {5}), "SequentialLR: schedule 1 belongs to another optimizer",
                         ValueError);
    CHECK_THROWS_WITH_AS(LambdaLR(opt, std::vector<LambdaLR::Fn>{{}, {}}),
                         "LambdaLR: expected 1 function or one per parameter group (1); got 2", ValueError);
}

TEST_CASE("clip_grad_norm on a non-finite norm, clip_grad_value with a negative value")
{
    auto ps = two_params();
    set_grad(ps[0], 1);
    set_grad(ps[1], 1);
    ps[1].impl()->grad.set(2, std::numeric_limits<double>::infinity());
    CHECK_THROWS_WITH_AS(clip_grad_norm(ps, 1.0, 2.0, true),
                         "clip_grad_norm: the total norm of order 2 of the gradients is non-finite (inf), so it cannot "
                         "be clipped; pass error_if_nonfinite = false to scale by it anyway",
                         ValueError);
    CHECK(ps[0].grad().at(0) == 1);  // untouched
    CHECK(std::isinf(clip_grad_norm(ps, 1.0)));  // PyTorch's default: scale by 1 / inf anyway
    CHECK(ps[0].grad().at(0) == 0);
    CHECK_THROWS_WITH_AS(clip_grad_norm(ps, 1.0, -1), "clip_grad_norm: norm_type must be positive (or INFINITY); got -1",
                         ValueError);
    CHECK_THROWS_WITH_AS(clip_grad_value(ps, -0.5), "clip_grad_value: clip_value must be non-negative; got -0.5",
                         ValueError);
}

TEST_CASE("the non-finite guard skips the whole step, counts it and reports it")
{
    auto ps = two_params();
    Adam opt(NamedParameters{{"w", ps[0]}, {"b", ps[1]}}, {.lr = 0.1});
    std::vector<std::string> reports;
    opt.skip_nonfinite(true, [&](const SkipReport& r) { reports.push_back(r.message); });

    set_grad(ps[0], 1);
    set_grad(ps[1], 1);
    CHECK(opt.step());
    const Value w = ps[0].value().clone(), b = ps[1].value().clone();

    ps[1].impl()->grad.set(3, std::nan(""));
    CHECK_FALSE(opt.step());
    CHECK(opt.skipped_steps() == 1);
    REQUIRE(opt.last_skip());
    CHECK(opt.last_skip()->group == 0);
    CHECK(opt.last_skip()->index == 1);
    CHECK(opt.last_skip()->message ==
          "Adam: step skipped: the gradient of parameter 'b' holds NaN or Inf; 1 step(s) skipped so far");
    REQUIRE(reports.size() == 1);
    // nothing moved: parameters, moments, step counts
    for (std::int64_t i = 0; i < 6; ++i) CHECK(ps[0].value().at(i) == w.at(i));
    for (std::int64_t i = 0; i < 4; ++i) CHECK(ps[1].value().at(i) == b.at(i));
    CHECK(opt.state(0, 0).step == 1);
    CHECK(opt.state(0, 1).step == 1);

    set_grad(ps[1], 1);
    CHECK(opt.step());
    CHECK(opt.state(0, 1).step == 2);

    // guard off: the NaN goes through, as in PyTorch
    opt.skip_nonfinite(false);
    ps[0].impl()->grad.set(0, std::numeric_limits<double>::infinity());
    CHECK(opt.step());
    CHECK(std::isnan(ps[0].value().at(0)));
}
