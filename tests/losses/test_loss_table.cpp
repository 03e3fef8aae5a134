// The loss table: every registered loss, every option combination, every reduction,
// gradient-checked in float64 (PyTorch's gradcheck defaults) through the registry, as the
// op table does for ops. A registered name without a row fails the suite, so a loss cannot
// be added unchecked. Rerun one loss with -sc=focal_loss.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "spool.hpp"

using namespace spool;

namespace {

using In = const std::vector<Tensor>&;
using L = const losses::Loss&;

struct LossCase {
    std::string label;
    std::vector<Shape> shapes;  ///< differentiable inputs (standard normal, float64)
    losses::LossOptions options;
    std::function<Tensor(In, L)> fn;
};

struct LossRow {
    std::string name;
    std::vector<LossCase> cases;
    std::vector<Reduction> reductions = {Reduction::none, Reduction::mean, Reduction::sum};
};

Tensor labels(const std::vector<std::int64_t>& v, const Shape& s) { return from_vector(v, s); }
Tensor f64s(const std::vector<double>& v, const Shape& s) { return from_vector(v, s, {.dtype = f64}); }
Tensor flags(const std::vector<bool>& v, const Shape& s) { return from_vector(v, s); }
std::string on_off(bool b, const char* what) { return b ? std::string(" +") + what : std::string(); }

// A user-defined loss, registered in one call the way docs/losses.md shows: cross-entropy plus
// z-loss on the same logits. It is a registered name, so it has a row below like the built-ins.
const bool custom_registered = [] {
    losses::register_loss(
        "cross_entropy_z",
        [](const losses::LossOptions& o) {
            return std::make_unique<losses::FunctionLoss>("cross_entropy_z", [o](const Tensor& x, const Tensor& y) {
                return losses::cross_entropy(x, y, {.ignore_index = o.ignore_index, .label_smoothing = o.label_smoothing}) +
                       losses::z_loss(x, y, {.coefficient = o.coefficient, .ignore_index = o.ignore_index});
            });
        },
        {"ignore_index", "label_smoothing", "coefficient"});
    return true;
}();

std::vector<LossCase> cross_entropy_cases()
{
    std::vector<LossCase> cs;
    for (bool weighted : {false, true})
        for (bool ignore : {false, true})
            for (double eps : {0.0, 0.1}) {
                losses::LossOptions o{.weight = weighted ? f64s({0.5, 2, 1, 1.5}, {4}) : Tensor(), .label_smoothing = eps};
                const Tensor y = labels({3, ignore ? -100 : 0, 1}, {3});
                cs.push_back({"indices" + on_off(weighted, "weights") + on_off(ignore, "ignore") + on_off(eps > 0, "smoothing"),
                              {Shape{3, 4}}, o, [y](In x, L l) { return l(x[0], y); }});
                if (ignore) continue;
                cs.push_back({"probabilities" + on_off(weighted, "weights") + on_off(eps > 0, "smoothing"),
                              {Shape{3, 4}, Shape{3, 4}}, o, [](In x, L l) { return l(x[0], softmax(x[1], -1)); }});
            }
    cs.push_back({"(N,C,d) indices +ignore", {Shape{2, 3, 2}}, {.label_smoothing = 0.2},
                  [](In x, L l) { return l(x[0], labels({0, -100, 2, 1}, {2, 2})); }});
    cs.push_back({"(N,C,d) probabilities", {Shape{2, 3, 2}, Shape{2, 3, 2}}, {},
                  [](In x, L l) { return l(x[0], softmax(x[1], 1)); }});
    cs.push_back({"unbatched (C)", {Shape{5}}, {.label_smoothing = 0.1}, [](In x, L l) { return l(x[0], labels({2}, {})); }});
    cs.push_back({"every target ignored", {Shape{2, 3}}, {}, [](In x, L l) { return l(x[0], labels({-100, -100}, {2})); }});
    return cs;
}

std::vector<LossCase> nll_cases()
{
    std::vector<LossCase> cs;
    for (bool weighted : {false, true})
        for (bool ignore : {false, true}) {
            const losses::LossOptions o{.weight = weighted ? f64s({1.5, 0.5, 2}, {3}) : Tensor(), .ignore_index = 1};
            const std::int64_t y1 = ignore ? 1 : 2;
            cs.push_back({"(N,C)" + on_off(weighted, "weights") + on_off(ignore, "ignore"), {Shape{3, 3}}, o,
                          [y1](In x, L l) { return l(log_softmax(x[0], 1), labels({0, y1, 2}, {3})); }});
            cs.push_back({"(N,C,d)" + on_off(weighted, "weights") + on_off(ignore, "ignore"), {Shape{2, 3, 2}}, o,
                          [y1](In x, L l) { return l(log_softmax(x[0], 1), labels({0, y1, 2, 0}, {2, 2})); }});
        }
    return cs;
}

std::vector<LossCase> kl_cases()
{
    return {{"log-probabilities vs probabilities", {Shape{3, 4}, Shape{3, 4}}, {},
             [](In x, L l) { return l(log_softmax(x[0], 1), softmax(x[1], 1)); }},
            {"log_target", {Shape{3, 4}, Shape{3, 4}}, {.log_target = true},
             [](In x, L l) { return l(log_softmax(x[0], 1), log_softmax(x[1], 1)); }},
            {"target with zeros", {Shape{2, 3}}, {},
             [](In x, L l) { return l(log_softmax(x[0], 1), f64s({0.5, 0, 0.5, 0, 0, 1}, {2, 3})); }}};
}

std::vector<LossCase> bce_cases()
{
    std::vector<LossCase> cs;
    for (bool weighted : {false, true})
        for (bool pos : {false, true}) {
            const losses::LossOptions o{.weight = weighted ? f64s({0.5, 2, 1}, {3, 1}) : Tensor(),
                                        .pos_weight = pos ? f64s({3, 0.5}, {2}) : Tensor()};
            cs.push_back({"(3,2)" + on_off(weighted, "weight") + on_off(pos, "pos_weight"), {Shape{3, 2}, Shape{3, 2}}, o,
                          [](In x, L l) { return l(x[0] * 2.0, sigmoid(x[1])); }});
        }
    return cs;
}

std::vector<LossCase> label_smoothing_kl_cases()
{
    std::vector<LossCase> cs;
    for (double eps : {0.0, 0.1, 0.4})
        for (std::int64_t pad : {0, 2})
            cs.push_back({"smoothing " + std::to_string(eps).substr(0, 3) + " padding " + std::to_string(pad),
                          {Shape{4, 5}}, {.label_smoothing = eps, .padding_idx = pad},
                          [](In x, L l) { return l(x[0], labels({1, 0, 2, 4}, {4})); }});
    return cs;
}

std::vector<LossCase> focal_cases()
{
    std::vector<LossCase> cs;
    for (double gamma : {0.0, 0.5, 2.0})
        for (bool alpha : {false, true})
            for (bool ignore : {false, true}) {
                const losses::LossOptions o{.gamma = gamma, .alpha = alpha ? f64s({0.25, 0.5, 1}, {3}) : Tensor()};
                const Tensor y = labels({2, ignore ? -100 : 1, 0}, {3});
                cs.push_back({"gamma " + std::to_string(gamma).substr(0, 3) + on_off(alpha, "alpha") + on_off(ignore, "ignore"),
                              {Shape{3, 3}}, o, [y](In x, L l) { return l(x[0] * 2.0, y); }});
            }
    cs.push_back({"(N,C,d)", {Shape{2, 3, 2}}, {}, [](In x, L l) { return l(x[0], labels({0, 2, 1, 1}, {2, 2})); }});
    return cs;
}

std::vector<LossCase> z_loss_cases()
{
    return {{"no target", {Shape{3, 4}}, {.coefficient = 0.1}, [](In x, L l) { return l(x[0] * 3.0, Tensor()); }},
            {"target +ignore", {Shape{3, 4}}, {.coefficient = 0.1},
             [](In x, L l) { return l(x[0] * 3.0, labels({1, -100, 3}, {3})); }},
            {"(N,C,d)", {Shape{2, 3, 2}}, {.coefficient = 0.1}, [](In x, L l) { return l(x[0], Tensor()); }}};
}

std::vector<LossCase> alignment_cases()
{
    std::vector<LossCase> cs;
    const Tensor mask = flags({true, false, true, true, true, false}, {2, 3});
    for (auto form : {losses::AlignmentForm::ce, losses::AlignmentForm::mse})
        for (int heads : {0, 2})
            for (std::int64_t head : {-1, 1}) {
                if (heads == 0 && head == 1) continue;
                const losses::LossOptions o{.form = form, .head = head};
                const Shape scores = heads ? Shape{2, heads, 3, 4} : Shape{2, 3, 4};
                const std::string what = std::string(losses::alignment_form_name(form)) +
                                         (heads ? head == -1 ? " heads mean" : " head 1" : "");
                cs.push_back({what + " index +mask", {scores}, o, [mask](In x, L l) {
                                  return l(softmax(x[0], -1), labels({3, 0, -100, 1, 2, 2}, {2, 3}), mask);
                              }});
                cs.push_back({what + " soft", {scores, Shape{2, 3, 4}}, o,
                              [](In x, L l) { return l(softmax(x[0], -1), softmax(x[1], -1)); }});
            }
    return cs;
}

const std::vector<LossRow>& loss_table()
{
    static const std::vector<LossRow> rows = {
        {"cross_entropy", cross_entropy_cases()},
        {"label_smoothing_kl", label_smoothing_kl_cases()},
        {"nll_loss", nll_cases()},
        {"kl_div", kl_cases(), {Reduction::none, Reduction::mean, Reduction::sum, Reduction::batchmean}},
        {"mse_loss", {{"(2,3)", {Shape{2, 3}, Shape{2, 3}}, {}, [](In x, L l) { return l(x[0], x[1]); }}}},
        {"binary_cross_entropy_with_logits", bce_cases()},
        {"focal_loss", focal_cases()},
        {"z_loss", z_loss_cases()},
        {"attention_alignment", alignment_cases()},
        {"cross_entropy_z", {{"indices +ignore +smoothing", {Shape{3, 4}}, {.label_smoothing = 0.1, .coefficient = 0.1},
                              [](In x, L l) { return l(x[0], labels({1, -100, 3}, {3})); }}},
         {Reduction::mean}},
    };
    return rows;
}

int g_checks = 0, g_failed = 0;

}  // namespace

TEST_CASE("loss table: every loss x option combination x reduction gradchecks in float64")
{
    REQUIRE(custom_registered);
    int row = 0;
    for (const auto& r : loss_table()) {
        SUBCASE(r.name.c_str())
        {
            int i = 0;
            for (const auto& c : r.cases)
                for (Reduction red : r.reductions) {
                    losses::LossOptions o = c.options;
                    o.reduction = red;
                    const auto loss = losses::make(r.name, o);
                    manual_seed(4000 + 97 * row + i++);
                    std::vector<Tensor> inputs;
                    for (const auto& s : c.shapes) inputs.push_back(randn(s, {.dtype = f64, .requires_grad = true}));
                    const auto res = gradcheck([&](In x) { return c.fn(x, *loss); }, inputs);
                    INFO(r.name, " [", c.label, ", reduction ", reduction_name(red), "]: ", res.message);
                    CHECK(res.ok);
                    CHECK(res.full_jacobian);
                    ++g_checks;
                    g_failed += !res.ok;
                }
        }
        ++row;
    }
}

TEST_CASE("loss table: summary")
{
    std::printf("loss table: %zu losses, %d gradchecks, %d failed\n", loss_table().size(), g_checks, g_failed);
    CHECK(g_failed == 0);
}

TEST_CASE("registry: every registered name has a row, builds with defaults, runs and gradchecks")
{
    std::map<std::string, const LossRow*> rows;
    for (const auto& r : loss_table()) rows[r.name] = &r;
    for (const auto& name : losses::registered_names()) {
        INFO("registered loss ", name);
        REQUIRE_MESSAGE(rows.count(name) == 1, "no loss-table row for registered loss ", name);
        const auto loss = losses::make(name);  // default options
        CHECK(loss->name() == name);
        const LossCase& c = rows.at(name)->cases.front();
        manual_seed(7);
        std::vector<Tensor> inputs;
        for (const auto& s : c.shapes) inputs.push_back(randn(s, {.dtype = f64, .requires_grad = true}));
        Tensor value = c.fn(inputs, *loss);
        CHECK(value.numel() == 1);  // the default reduction is mean
        CHECK(std::isfinite(value.item()));
        const auto res = gradcheck([&](In x) { return c.fn(x, *loss); }, inputs);
        INFO(res.message);
        CHECK(res.ok);
    }
    CHECK(rows.size() == losses::registered_names().size());
}
