// torch.optim parity: every trajectory of tests/fixtures/optim.json (made by
// make_optim_fixtures.py with Debian's python3-torch) replays its 50 steps — fixed
// gradients, parameter 1 without a gradient at some steps, optional clipping, a schedule —
// and every step's lr and parameters must match PyTorch's (tests/tolerances.hpp). The
// schedules are also checked on their own against LambdaLR at steps 0, 1, warmup − 1,
// warmup, warmup + 1 and the last. One SUBCASE per case: -sc=adam_noam/float32.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "optim/adam.hpp"
#include "optim/clip.hpp"
#include "optim/schedule.hpp"
#include "optim/sgd.hpp"
#include "tolerances.hpp"

using nlohmann::json;
using namespace spool;
using namespace spool::optim;

namespace {

const json& fixtures()
{
    static const json doc = [] {
        const std::string path = SPOOL_FIXTURE_DIR "/optim.json";
        std::ifstream in(path);
        if (!in) throw std::runtime_error("test_optim: cannot open " + path);
        return json::parse(in);
    }();
    return doc;
}

DType dtype_from(const std::string& name) { return name == "float64" ? f64 : f32; }

Value value_from(const json& data, const std::vector<std::int64_t>& shape, DType dt)
{
    // float32 data is the shortest decimal of each float32: parsing and narrowing is exact
    return from_vector(data.get<std::vector<double>>(), Shape(shape), {.dtype = dt}).value();
}

std::unique_ptr<Optimizer> make_optimizer(const json& c, const std::vector<Tensor>& params)
{
    const json& o = c.at("options");
    const std::string kind = c.at("optimizer");
    if (kind == "SGD")
        return std::make_unique<SGD>(params, SGDOptions{.lr = o.at("lr"),
                                                        .momentum = o.value("momentum", 0.0),
                                                        .dampening = o.value("dampening", 0.0),
                                                        .weight_decay = o.value("weight_decay", 0.0),
                                                        .nesterov = o.value("nesterov", false),
                                                        .maximize = o.value("maximize", false)});
    std::array<double, 2> betas = o.value("betas", std::array<double, 2>{0.9, 0.999});
    if (kind == "Adam")
        return std::make_unique<Adam>(params, AdamOptions{.lr = o.at("lr"),
                                                          .betas = betas,
                                                          .eps = o.value("eps", 1e-8),
                                                          .weight_decay = o.value("weight_decay", 0.0),
                                                          .amsgrad = o.value("amsgrad", false),
                                                          .maximize = o.value("maximize", false)});
    if (kind == "AdamW")
        return std::make_unique<AdamW>(params, AdamWOptions{.lr = o.at("lr"),
                                                            .betas = betas,
                                                            .eps = o.value("eps", 1e-8),
                                                            .weight_decay = o.value("weight_decay", 1e-2),
                                                            .amsgrad = o.value("amsgrad", false),
                                                            .maximize = o.value("maximize", false)});
    throw std::runtime_error("test_optim: unknown optimizer " + kind);
}

/// The spool schedule for a fixture's LambdaLR spec.
std::shared_ptr<LRScheduler> make_schedule(Optimizer& opt, const json& s)
{
    const std::string kind = s.at("kind");
    if (kind == "noam")
        return std::make_shared<NoamLR>(opt, NoamOptions{.d_model = s.at("d_model"),
                                                         .warmup_steps = s.at("warmup_steps"),
                                                         .factor = s.at("factor"),
                                                         .convention = s.at("convention") == "paper"
                                                                           ? NoamConvention::paper
                                                                           : NoamConvention::annotated});
    if (kind == "warmup") {
        const std::string d = s.at("decay");
        return std::make_shared<WarmupLR>(
            opt, WarmupOptions{.warmup_steps = s.at("warmup_steps"),
                               .total_steps = s.at("total_steps"),
                               .decay = d == "cosine" ? Decay::cosine : d == "linear" ? Decay::linear : Decay::constant,
                               .min_lr_ratio = s.value("min_lr_ratio", 0.0)});
    }
    if (kind == "inverse_sqrt")
        return std::make_shared<InverseSqrtLR>(
            opt, InverseSqrtOptions{.warmup_steps = s.at("warmup_steps"), .timescale = s.value("timescale", 0)});
    if (kind == "exponential") {
        const double gamma = s.at("gamma");
        return std::make_shared<LambdaLR>(opt, [gamma](std::int64_t e) { return std::pow(gamma, static_cast<double>(e)); });
    }
    if (kind == "sequential") {
        std::vector<std::shared_ptr<LRScheduler>> parts;
        for (const json& p : s.at("schedules")) parts.push_back(make_schedule(opt, p));
        return std::make_shared<SequentialLR>(opt, parts, s.at("milestones").get<std::vector<std::int64_t>>());
    }
    throw std::runtime_error("test_optim: unknown schedule " + kind);
}

}  // namespace

TEST_CASE("optimizer trajectories match torch.optim step by step")
{
    const json& doc = fixtures();
    const auto shapes = doc.at("shapes").get<std::vector<std::vector<std::int64_t>>>();
    for (const json& c : doc.at("cases")) {
        const std::string dn = c.at("dtype");
        SUBCASE((c.at("name").get<std::string>() + "/" + dn).c_str())
        {
            const DType dt = dtype_from(dn);
            const test::Tolerance tol = test::parity_tolerance(dt);
            std::vector<Tensor> params;
            for (std::size_t i = 0; i < shapes.size(); ++i)
                params.emplace_back(value_from(doc.at("init").at(dn)[i], shapes[i], dt), true);
            auto opt = make_optimizer(c, params);
            auto sched = make_schedule(*opt, c.at("schedule"));
            const json& grads = doc.at("grads").at(dn);
            const int steps = doc.at("steps");
            // worst |got - want| / (atol + rtol |want|) over every step and element: <= 1 passes
            double worst = 0;
            std::string where;
            for (int t = 0; t < steps; ++t) {
                for (std::size_t i = 0; i < params.size(); ++i) {
                    const json& g = grads[t][i];
                    params[i].impl()->grad = g.is_null() ? Value() : value_from(g, shapes[i], dt);
                }
                if (c.contains("clip_norm")) {
                    double norm = clip_grad_norm(params, c.at("clip_norm"));
                    double want = c.at("norm")[t];
                    INFO("step ", t, " clip norm ", norm, " want ", want);
                    CHECK(test::close(norm, want, tol));
                }
                if (c.contains("clip_value")) clip_grad_value(params, c.at("clip_value"));
                const double lr_want = c.at("lr")[t];
                INFO("step ", t, " lr ", opt->lr(0), " want ", lr_want);
                CHECK(test::close(opt->lr(0), lr_want, {.rtol = 1e-15, .atol = 0}));
                opt->step();
                sched->step();
                for (std::size_t i = 0; i < params.size(); ++i) {
                    const json& want = c.at("params")[t][i];
                    for (std::size_t j = 0; j < want.size(); ++j) {
                        const double got = params[i].value().at(static_cast<std::int64_t>(j)), w = want[j];
                        const double r = std::abs(got - w) / (tol.atol + tol.rtol * std::abs(w));
                        if (!(r <= worst)) {
                            worst = r;
                            where = ::spool::detail::cat("step ", t, " parameter ", i, " element ", j, ": got ", got,
                                                         " want ", w);
                        }
                    }
                }
            }
            INFO("worst error / tolerance ", worst, " at ", where);
            CHECK(worst <= 1.0);
            if (std::getenv("SPOOL_PARITY_REPORT")) MESSAGE("worst error / tolerance ", worst, " at ", where);
        }
    }
}

TEST_CASE("schedules match LambdaLR at steps 0, 1, warmup-1, warmup, warmup+1 and the last")
{
    const json& doc = fixtures();
    const auto epochs = doc.at("schedule_epochs").get<std::vector<std::int64_t>>();
    for (const json& s : doc.at("schedules")) {
        SUBCASE(s.at("name").get<std::string>().c_str())
        {
            Tensor p = zeros({1}, {.requires_grad = true});
            SGD opt({p}, {.lr = s.at("base_lr")});
            auto sched = make_schedule(opt, s.at("schedule"));
            const auto want = s.at("lrs").get<std::vector<double>>();
            std::size_t k = 0;
            for (std::int64_t e = 0; e <= epochs.back(); ++e) {
                if (e == epochs[k]) {
                    INFO("epoch ", e, ": got ", sched->get_last_lr()[0], " want ", want[k]);
                    CHECK(test::close(sched->get_last_lr()[0], want[k], {.rtol = 1e-15, .atol = 1e-300}));
                    CHECK(sched->get_last_lr()[0] == opt.lr(0));
                    CHECK(sched->lr_at(0, e) == sched->get_last_lr()[0]);
                    ++k;
                }
                sched->step();
            }
            CHECK(k == epochs.size());
        }
    }
}

TEST_CASE("Noam's step numbering: the paper's, and The Annotated Transformer's clamp of step 0")
{
    Tensor p = zeros({1}, {.requires_grad = true});
    Adam opt({p}, {.lr = 1, .betas = {0.9, 0.98}, .eps = 1e-9});
    NoamLR paper(opt, {.d_model = 512, .warmup_steps = 4000});
    CHECK(paper.step_number(0) == 1);  // update 1 runs with rate(1), never rate(0)
    CHECK(paper.step_number(3999) == 4000);
    CHECK(paper.lr_at(0, 0) == noam_rate(1, 512, 4000));
    CHECK(opt.lr(0) == noam_rate(1, 512, 4000));  // set by the constructor, before update 1
    // the peak, d_model^-0.5 * warmup^-0.5, at update `warmup` (epoch warmup - 1)
    CHECK(paper.lr_at(0, 3999) == doctest::Approx(std::pow(512.0, -0.5) * std::pow(4000.0, -0.5)).epsilon(1e-14));
    CHECK(paper.lr_at(0, 3999) > paper.lr_at(0, 3998));
    CHECK(paper.lr_at(0, 3999) > paper.lr_at(0, 4000));

    NoamLR annotated(opt, {.d_model = 512, .warmup_steps = 4000, .convention = NoamConvention::annotated});
    CHECK(annotated.step_number(0) == 1);  // step 0 clamped to 1 ...
    CHECK(annotated.step_number(1) == 1);  // ... so updates 1 and 2 share rate(1)
    CHECK(annotated.step_number(2) == 2);
    CHECK(annotated.lr_at(0, 4000) == paper.lr_at(0, 3999));  // one step behind the paper
}
