// PyTorch parity of the losses: every case of tests/fixtures/losses.json (made by
// make_loss_fixtures.py with Debian's python3-torch) is built through the registry
// (losses::make with the case's options), run forward and backward on a Tape with the
// recorded seed, and its value and input gradients compared within tests/tolerances.hpp.
// One SUBCASE per case ("ce_smoothing_mean/float32"); PyTorch itself is never needed here.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "spool.hpp"
#include "compare.hpp"
#include "tolerances.hpp"

using nlohmann::json;
using namespace spool;

namespace {

const json& loss_fixtures()
{
    static const json doc = [] {
        const std::string path = SPOOL_FIXTURE_DIR "/losses.json";
        std::ifstream in(path);
        if (!in) throw std::runtime_error("test_loss_parity: cannot open " + path);
        return json::parse(in);
    }();
    return doc;
}

DType dtype_named(const std::string& s)
{
    return s == "float32" ? f32 : s == "float64" ? f64 : s == "int64" ? i64 : bool_;
}

/// A fixture tensor as a spool Tensor (float32 data was written as exact doubles).
Tensor from_json(const json& t, bool requires_grad = false)
{
    const Shape shape(t.at("shape").get<std::vector<std::int64_t>>());
    const DType dt = dtype_named(t.at("dtype").get<std::string>());
    if (dt == i64) return from_vector(t.at("data").get<std::vector<std::int64_t>>(), shape);
    if (dt == bool_) return from_vector(t.at("data").get<std::vector<bool>>(), shape);
    return from_vector(t.at("data").get<std::vector<double>>(), shape, {.dtype = dt, .requires_grad = requires_grad});
}

/// Element by element within the dtype's parity tolerance; reports the first mismatches.
void check_close(const std::string& what, const Tensor& got, const json& want)
{
    INFO(what);
    REQUIRE(got.defined());
    REQUIRE_MESSAGE(got.shape() == Shape(want.at("shape").get<std::vector<std::int64_t>>()), "shape ",
                    to_string(got.shape()));
    test::expect_close(what, got.tolist(), want.at("data").get<std::vector<double>>(), test::parity_tolerance(got.dtype()));
}

/// The case's options as registry options (tensors from the case's aux).
losses::LossOptions options_of(const json& p, const std::map<std::string, Tensor>& aux)
{
    losses::LossOptions o;
    auto tensor = [&](const char* k) { return aux.count(k) ? aux.at(k) : Tensor(); };
    o.weight = tensor("weight");
    o.pos_weight = tensor("pos_weight");
    o.alpha = tensor("alpha");
    if (p.contains("reduction")) o.reduction = parse_reduction(p.at("reduction").get<std::string>());
    if (p.contains("ignore_index")) o.ignore_index = p.at("ignore_index").get<std::int64_t>();
    if (p.contains("label_smoothing")) o.label_smoothing = p.at("label_smoothing").get<double>();
    if (p.contains("smoothing")) o.label_smoothing = p.at("smoothing").get<double>();
    if (p.contains("padding_idx")) o.padding_idx = p.at("padding_idx").get<std::int64_t>();
    if (p.contains("log_target")) o.log_target = p.at("log_target").get<bool>();
    if (p.contains("gamma")) o.gamma = p.at("gamma").get<double>();
    if (p.contains("coefficient")) o.coefficient = p.at("coefficient").get<double>();
    if (p.contains("head")) o.head = p.at("head").get<std::int64_t>();
    if (p.contains("form")) o.form = p.at("form") == "ce" ? losses::AlignmentForm::ce : losses::AlignmentForm::mse;
    return o;
}

Tensor run(const json& c, const std::vector<Tensor>& in, const std::map<std::string, Tensor>& aux)
{
    const std::string op = c.at("op").get<std::string>();
    const json& p = c.at("params");
    if (op == "logsumexp") return logsumexp(in[0], p.at("dim").get<int>(), p.at("keepdim").get<bool>());
    if (op == "logsigmoid") return logsigmoid(in[0]);
    const auto loss = losses::make(op, options_of(p, aux));
    const Tensor target = in.size() > 1 ? in[1] : aux.at("target");
    return aux.count("mask") ? (*loss)(in[0], target, aux.at("mask")) : (*loss)(in[0], target);
}

}  // namespace

TEST_CASE("loss parity: the fixtures cover every built-in loss")
{
    std::set<std::string> ops;
    for (const auto& c : loss_fixtures().at("cases")) ops.insert(c.at("op").get<std::string>());
    INFO("torch ", loss_fixtures().at("torch_version").get<std::string>());
    for (const char* name : {"cross_entropy", "nll_loss", "kl_div", "mse_loss", "binary_cross_entropy_with_logits",
                             "label_smoothing_kl", "focal_loss", "z_loss", "attention_alignment"})
        CHECK_MESSAGE(ops.count(name) == 1, "no fixture for ", name);
    CHECK(ops.count("logsumexp") == 1);
    CHECK(ops.count("logsigmoid") == 1);
    CHECK(loss_fixtures().at("cases").size() >= 100);
}

TEST_CASE("loss parity: values and input gradients match PyTorch")
{
    for (const auto& c : loss_fixtures().at("cases")) {
        const std::string name = c.at("name").get<std::string>() + "/" + c.at("dtype").get<std::string>();
        SUBCASE(name.c_str())
        {
            std::vector<Tensor> in;
            for (const auto& t : c.at("inputs")) in.push_back(from_json(t, true));
            std::map<std::string, Tensor> aux;
            for (const auto& [k, t] : c.at("aux").items()) aux.emplace(k, from_json(t));
            Tape tape;
            const Tensor out = run(c, in, aux);
            check_close(name + " value", out, c.at("output"));
            tape.backward(out, from_json(c.at("seed")));
            for (std::size_t i = 0; i < in.size(); ++i) {
                Tensor g = in[i].grad();
                if (!g.defined()) g = zeros(in[i].shape(), {.dtype = in[i].dtype()});
                check_close(name + " grad of input " + std::to_string(i), g, c.at("grads")[i]);
            }
        }
    }
}
