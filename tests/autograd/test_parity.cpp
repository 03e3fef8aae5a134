// PyTorch parity: every case of tests/fixtures/ops.json (made by make_fixtures.py with
// Debian's python3-torch) runs forward and backward on a spool::Tape with the recorded
// seed gradient; the output and every input gradient must match PyTorch's within
// tests/tolerances.hpp. One SUBCASE per case ("softmax_dim0/float32", rerun one with
// -sc=softmax_dim0/float32). PyTorch itself is never needed here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "compare.hpp"
#include "tolerances.hpp"

using nlohmann::json;
using spool::Tensor;

namespace {

const json& fixtures()
{
    static const json doc = [] {
        const std::string path = SPOOL_FIXTURE_DIR "/ops.json";
        std::ifstream in(path);
        if (!in) throw std::runtime_error("test_parity: cannot open " + path);
        return json::parse(in);
    }();
    return doc;
}

spool::DType dtype_from(const std::string& name)
{
    if (name == "float32") return spool::f32;
    if (name == "float64") return spool::f64;
    if (name == "int64") return spool::i64;
    if (name == "bool") return spool::bool_;
    throw std::runtime_error("test_parity: unknown dtype " + name);
}

spool::Shape shape_from(const json& t) { return spool::Shape(t.at("shape").get<std::vector<std::int64_t>>()); }

/// A fixture tensor {"shape", "dtype", "data"} as a spool Tensor of its dtype.
Tensor tensor_from(const json& t, bool requires_grad = false)
{
    const spool::Shape shape = shape_from(t);
    const spool::DType dt = dtype_from(t.at("dtype").get<std::string>());
    if (dt == spool::i64) return spool::from_vector(t.at("data").get<std::vector<std::int64_t>>(), shape);
    if (dt == spool::bool_) return spool::from_vector(t.at("data").get<std::vector<bool>>(), shape);
    // float32 data was written as the exact double of each float32, so narrowing is exact
    return spool::from_vector(t.at("data").get<std::vector<double>>(), shape,
                              {.dtype = dt, .requires_grad = requires_grad});
}

std::vector<int> ints(const json& j) { return j.get<std::vector<int>>(); }

/// A case's differentiable inputs, aux tensors (masks, indices) and parameters.
struct Args {
    std::vector<Tensor> in;
    std::map<std::string, Tensor> aux;
    const json& p;
};

using OpFn = std::function<Tensor(const Args&)>;

/// Fixture "op" -> the spool call, with the parameters make_fixtures.py wrote.
const std::map<std::string, OpFn>& dispatch()
{
    static const std::map<std::string, OpFn> table = {
        {"add", [](const Args& a) { return spool::add(a.in[0], a.in[1]); }},
        {"sub", [](const Args& a) { return spool::sub(a.in[0], a.in[1]); }},
        {"mul", [](const Args& a) { return spool::mul(a.in[0], a.in[1]); }},
        {"div", [](const Args& a) { return spool::div(a.in[0], a.in[1]); }},
        {"neg", [](const Args& a) { return spool::neg(a.in[0]); }},
        {"pow", [](const Args& a) { return spool::pow(a.in[0], a.p.at("p").get<double>()); }},
        {"exp", [](const Args& a) { return spool::exp(a.in[0]); }},
        {"log", [](const Args& a) { return spool::log(a.in[0]); }},
        {"sqrt", [](const Args& a) { return spool::sqrt(a.in[0]); }},
        {"abs", [](const Args& a) { return spool::abs(a.in[0]); }},
        {"tanh", [](const Args& a) { return spool::tanh(a.in[0]); }},
        {"sigmoid", [](const Args& a) { return spool::sigmoid(a.in[0]); }},
        {"relu", [](const Args& a) { return spool::relu(a.in[0]); }},
        {"gelu", [](const Args& a) { return spool::gelu(a.in[0], a.p.at("approximate").get<std::string>()); }},
        {"clamp",
         [](const Args& a) {
             auto bound = [&](const char* k) -> std::optional<double> {
                 if (!a.p.contains(k) || a.p.at(k).is_null()) return std::nullopt;
                 return a.p.at(k).get<double>();
             };
             return spool::clamp(a.in[0], bound("min"), bound("max"));
         }},
        {"softmax", [](const Args& a) { return spool::softmax(a.in[0], a.p.at("dim").get<int>()); }},
        {"log_softmax", [](const Args& a) { return spool::log_softmax(a.in[0], a.p.at("dim").get<int>()); }},
        {"sum",
         [](const Args& a) {
             if (!a.p.contains("dims")) return spool::sum(a.in[0]);
             return spool::sum(a.in[0], ints(a.p.at("dims")), a.p.at("keepdim").get<bool>());
         }},
        {"mean",
         [](const Args& a) {
             if (!a.p.contains("dims")) return spool::mean(a.in[0]);
             return spool::mean(a.in[0], ints(a.p.at("dims")), a.p.at("keepdim").get<bool>());
         }},
        {"max",
         [](const Args& a) {
             if (!a.p.contains("dim")) return spool::max(a.in[0]);
             return spool::max(a.in[0], a.p.at("dim").get<int>(), a.p.at("keepdim").get<bool>());
         }},
        {"var",
         [](const Args& a) {
             const int correction = a.p.at("correction").get<int>();
             if (!a.p.contains("dims")) return spool::var(a.in[0], correction);
             return spool::var(a.in[0], ints(a.p.at("dims")), correction, a.p.at("keepdim").get<bool>());
         }},
        {"reshape",
         [](const Args& a) { return spool::reshape(a.in[0], a.p.at("shape").get<std::vector<std::int64_t>>()); }},
        {"permute", [](const Args& a) { return spool::permute(a.in[0], ints(a.p.at("dims"))); }},
        {"transpose",
         [](const Args& a) {
             return spool::transpose(a.in[0], a.p.at("dim0").get<int>(), a.p.at("dim1").get<int>());
         }},
        {"reshape_permute",
         [](const Args& a) {
             Tensor r = spool::reshape(a.in[0], a.p.at("shape").get<std::vector<std::int64_t>>());
             return spool::permute(r, ints(a.p.at("dims")));
         }},
        {"slice",
         [](const Args& a) {
             return spool::slice(a.in[0], a.p.at("dim").get<int>(), a.p.at("start").get<std::int64_t>(),
                                 a.p.at("end").get<std::int64_t>(), a.p.at("step").get<std::int64_t>());
         }},
        {"cat", [](const Args& a) { return spool::cat(a.in, a.p.at("dim").get<int>()); }},
        {"split",
         [](const Args& a) {
             const int dim = a.p.at("dim").get<int>();
             const auto pieces = a.p.contains("sizes")
                                     ? spool::split(a.in[0], a.p.at("sizes").get<std::vector<std::int64_t>>(), dim)
                                     : spool::split(a.in[0], a.p.at("split_size").get<std::int64_t>(), dim);
             return pieces.at(a.p.at("index").get<std::size_t>());
         }},
        {"broadcast_to",
         [](const Args& a) {
             return spool::broadcast_to(a.in[0], spool::Shape(a.p.at("shape").get<std::vector<std::int64_t>>()));
         }},
        {"matmul", [](const Args& a) { return spool::matmul(a.in[0], a.in[1]); }},
        {"index_select",
         [](const Args& a) { return spool::index_select(a.in[0], a.p.at("dim").get<int>(), a.aux.at("index")); }},
        {"embedding", [](const Args& a) { return spool::embedding(a.in[0], a.aux.at("ids")); }},
        {"masked_fill",
         [](const Args& a) { return spool::masked_fill(a.in[0], a.aux.at("mask"), a.p.at("value").get<double>()); }},
        {"where", [](const Args& a) { return spool::where(a.aux.at("cond"), a.in[0], a.in[1]); }},
        {"to",
         [](const Args& a) { return spool::to(a.in[0], dtype_from(a.p.at("dtype").get<std::string>())); }},
    };
    return table;
}

/// Compare a spool tensor with a fixture tensor: dtype, shape, then every element within
/// the dtype's parity tolerance. Reports the first few mismatches with both values.
void expect_matches(const std::string& what, const Tensor& got, const json& want)
{
    const spool::DType dt = dtype_from(want.at("dtype").get<std::string>());
    const spool::Shape shape = shape_from(want);
    const auto ref = want.at("data").get<std::vector<double>>();
    INFO(what);
    REQUIRE(got.defined());
    CHECK_MESSAGE(got.dtype() == dt, "dtype ", spool::dtype_name(got.dtype()), ", PyTorch ", spool::dtype_name(dt));
    REQUIRE_MESSAGE(got.shape() == shape, "shape ", spool::to_string(got.shape()), ", PyTorch ",
                    spool::to_string(shape));
    spool::test::expect_close(what, got.tolist(), ref, spool::test::parity_tolerance(dt));
}

void run_case(const json& c)
{
    const std::string name = c.at("name").get<std::string>() + "/" + c.at("dtype").get<std::string>();
    const auto& table = dispatch();
    const auto op = table.find(c.at("op").get<std::string>());
    REQUIRE_MESSAGE(op != table.end(), name, ": no dispatch for op ", c.at("op"));

    Args args{{}, {}, c.at("params")};
    for (const auto& t : c.at("inputs")) args.in.push_back(tensor_from(t, /*requires_grad=*/true));
    for (const auto& [key, t] : c.at("aux").items()) args.aux.emplace(key, tensor_from(t));

    spool::Tape tape;
    const Tensor out = op->second(args);
    expect_matches(name + " output", out, c.at("output"));
    tape.backward(out, tensor_from(c.at("seed")));

    const auto& grads = c.at("grads");
    REQUIRE(grads.size() == args.in.size());
    for (std::size_t i = 0; i < args.in.size(); ++i) {
        const std::string what = name + " grad of input " + std::to_string(i);
        Tensor g = args.in[i].grad();
        // no gradient reached the input: only right if PyTorch's is all zeros
        if (!g.defined()) g = spool::zeros(args.in[i].shape(), {.dtype = args.in[i].dtype()});
        expect_matches(what, g, grads[i]);
    }
}

}  // namespace

TEST_CASE("parity: the fixtures cover both dtypes and the op set")
{
    const json& cases = fixtures().at("cases");
    std::set<std::string> ops, names;
    std::map<std::string, std::set<std::string>> dtypes_of_op;
    for (const auto& c : cases) {
        const std::string op = c.at("op").get<std::string>();
        ops.insert(op);
        names.insert(c.at("name").get<std::string>() + "/" + c.at("dtype").get<std::string>());
        dtypes_of_op[op].insert(c.at("dtype").get<std::string>());
    }
    INFO("torch ", fixtures().at("torch_version").get<std::string>());
    CHECK(cases.size() >= 48);
    CHECK(ops.size() >= 20);
    CHECK_MESSAGE(names.size() == cases.size(), "case names are not unique");
    const std::set<std::string> both{"float32", "float64"};
    for (const auto& [op, dts] : dtypes_of_op) {
        CHECK_MESSAGE(dts == both, op, " lacks a dtype");
        CHECK_MESSAGE(dispatch().count(op) == 1, "no dispatch for fixture op ", op);
    }
    // the op families the parity suite must exercise
    for (const char* op : {"add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "tanh", "sigmoid",
                           "relu", "gelu", "clamp", "softmax", "log_softmax", "sum", "mean", "max", "var", "reshape",
                           "permute", "transpose", "slice", "split", "cat", "broadcast_to", "matmul", "index_select",
                           "embedding", "masked_fill", "where"})
        CHECK_MESSAGE(ops.count(op) == 1, "no fixture case for ", op);
}

TEST_CASE("parity: ops match PyTorch in output and input gradients")
{
    for (const auto& c : fixtures().at("cases")) {
        const std::string name = c.at("name").get<std::string>() + "/" + c.at("dtype").get<std::string>();
        SUBCASE(name.c_str()) { run_case(c); }
    }
}
