// PyTorch parity of the Transformer family from tests/fixtures/nn/*.safetensors (made by
// make_nn_fixtures.py with Debian's python3-torch): build the module the metadata names with
// its options, load PyTorch's state dict strictly, run the recorded forward on a Tape with
// loss = sum(output * seed) over outputs, and match outputs, loss and every parameter and
// input gradient within nn_parity_f32. One SUBCASE per case (-sc=mha_cross reruns one).
// Also: named_parameters() names, order and shapes against PyTorch's (nn/names.json).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "io/safetensors.hpp"
#include "nn/transformer.hpp"
#include "compare.hpp"
#include "tolerances.hpp"

using nlohmann::json;
using spool::Tensor;
namespace nn = spool::nn;

namespace {

/// make_nn_fixtures.py writes this many cases; fewer files means a case went missing.
constexpr std::size_t expected_cases = 39;

const std::string fixture_dir = SPOOL_FIXTURE_DIR "/nn";

/// The case names (file stems) in the fixture directory, sorted.
std::vector<std::string> case_names()
{
    std::vector<std::string> names;
    if (!std::filesystem::is_directory(fixture_dir)) return names;
    for (const auto& entry : std::filesystem::directory_iterator(fixture_dir))
        if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
    std::sort(names.begin(), names.end());
    return names;
}

/// A loaded case: tensors by full name ("param.linear1.weight", "input.src", ...), the
/// state dict in file order, metadata with options and forward parsed.
struct Case {
    std::string name;
    std::string module;
    json options;
    json forward;
    double loss = 0;
    std::map<std::string, Tensor> tensors;
    nn::NamedTensors params;  ///< "param." stripped, in file (= PyTorch state_dict) order
    std::vector<std::string> outputs;  ///< output names in file order

    bool has(const std::string& key) const { return tensors.count(key) == 1; }
    const Tensor& at(const std::string& key) const
    {
        const auto it = tensors.find(key);
        if (it == tensors.end()) throw std::runtime_error(name + ": the fixture has no tensor " + key);
        return it->second;
    }
};

Case load_case(const std::string& name)
{
    const spool::io::SafetensorsFile file = spool::io::load_safetensors(fixture_dir + "/" + name + ".safetensors");
    Case c;
    c.name = name;
    c.module = file.metadata.at("module");
    c.options = json::parse(file.metadata.at("options"));
    c.forward = json::parse(file.metadata.at("forward"));
    c.loss = std::stod(file.metadata.at("loss"));
    for (const auto& [key, t] : file.tensors) {
        c.tensors.emplace(key, t);
        if (key.rfind("param.", 0) == 0) c.params.emplace_back(key.substr(6), t);
        if (key.rfind("output.", 0) == 0) c.outputs.push_back(key.substr(7));
    }
    return c;
}

// ---- options from the fixture's JSON (spool's field names = PyTorch's) ----------------------

nn::MultiheadAttentionOptions mha_options(const json& o)
{
    nn::MultiheadAttentionOptions r{.embed_dim = o.at("embed_dim"), .num_heads = o.at("num_heads"),
                                    .dropout = o.at("dropout"), .bias = o.at("bias"), .batch_first = o.at("batch_first")};
    if (o.contains("kdim")) r.kdim = o.at("kdim").get<std::int64_t>();
    if (o.contains("vdim")) r.vdim = o.at("vdim").get<std::int64_t>();
    return r;
}

nn::TransformerEncoderLayerOptions layer_options(const json& o)
{
    return {.d_model = o.at("d_model"), .nhead = o.at("nhead"), .dim_feedforward = o.at("dim_feedforward"),
            .dropout = o.at("dropout"), .activation = o.at("activation"), .layer_norm_eps = o.at("layer_norm_eps"),
            .batch_first = o.at("batch_first"), .norm_first = o.at("norm_first"), .bias = o.at("bias")};
}

nn::TransformerEncoderOptions stack_options(const json& o)
{
    return {.layer = layer_options(o.at("layer")), .num_layers = o.at("num_layers"), .final_norm = o.at("final_norm")};
}

nn::TransformerOptions transformer_options(const json& o)
{
    return {.d_model = o.at("d_model"), .nhead = o.at("nhead"), .num_encoder_layers = o.at("num_encoder_layers"),
            .num_decoder_layers = o.at("num_decoder_layers"), .dim_feedforward = o.at("dim_feedforward"),
            .dropout = o.at("dropout"), .activation = o.at("activation"), .layer_norm_eps = o.at("layer_norm_eps"),
            .batch_first = o.at("batch_first"), .norm_first = o.at("norm_first"), .bias = o.at("bias")};
}

// ---- the forward call ------------------------------------------------------------------------

/// The forward call's arguments: tensor arguments name an input of the case, flags are
/// booleans. Every argument must be consumed, so a fixture argument the test does not
/// pass on cannot be dropped silently.
class ForwardArgs {
public:
    ForwardArgs(const Case& c, const std::map<std::string, Tensor>& inputs) : c_(c), inputs_(inputs) {}
    /// The input the argument names, or an undefined tensor when the call does not pass it.
    Tensor tensor(const std::string& arg)
    {
        used_.insert(arg);
        if (!c_.forward.contains(arg)) return {};
        const std::string input = c_.forward.at(arg).get<std::string>();
        const auto it = inputs_.find(input);
        if (it == inputs_.end()) throw std::runtime_error(c_.name + ": forward argument " + arg + " names no input " + input);
        return it->second;
    }
    bool flag(const std::string& arg, bool fallback)
    {
        used_.insert(arg);
        return c_.forward.contains(arg) ? c_.forward.at(arg).get<bool>() : fallback;
    }
    void check_all_used() const
    {
        for (const auto& [arg, value] : c_.forward.items())
            if (!used_.count(arg)) throw std::runtime_error(c_.name + ": forward argument " + arg + " is not passed on");
    }

private:
    const Case& c_;
    const std::map<std::string, Tensor>& inputs_;
    std::set<std::string> used_;
};

using Outputs = std::map<std::string, Tensor>;

/// A spool module built from a case and the function running its recorded forward call.
struct Built {
    std::shared_ptr<nn::Module> module;
    std::function<Outputs(ForwardArgs&)> forward;
};

nn::EncoderArgs encoder_args(ForwardArgs& a)
{
    return {.mask = a.tensor("mask"), .src_key_padding_mask = a.tensor("src_key_padding_mask"),
            .is_causal = a.flag("is_causal", false)};
}

nn::DecoderArgs decoder_args(ForwardArgs& a)
{
    return {.tgt_mask = a.tensor("tgt_mask"), .memory_mask = a.tensor("memory_mask"),
            .tgt_key_padding_mask = a.tensor("tgt_key_padding_mask"),
            .memory_key_padding_mask = a.tensor("memory_key_padding_mask"),
            .tgt_is_causal = a.flag("tgt_is_causal", false), .memory_is_causal = a.flag("memory_is_causal", false)};
}

Built build(const Case& c)
{
    const json& o = c.options;
    if (c.module == "MultiheadAttention") {
        auto m = std::make_shared<nn::MultiheadAttention>(mha_options(o));
        return {m, [m](ForwardArgs& a) {
                    nn::AttentionArgs args{.key_padding_mask = a.tensor("key_padding_mask"),
                                           .need_weights = a.flag("need_weights", true),
                                           .attn_mask = a.tensor("attn_mask"),
                                           .average_attn_weights = a.flag("average_attn_weights", true),
                                           .is_causal = a.flag("is_causal", false)};
                    auto [out, w] = m->forward(a.tensor("query"), a.tensor("key"), a.tensor("value"), args);
                    Outputs r{{"attn_output", out}};
                    if (args.need_weights) r.emplace("attn_weights", w);
                    return r;
                }};
    }
    if (c.module == "TransformerEncoderLayer") {
        auto m = std::make_shared<nn::TransformerEncoderLayer>(layer_options(o));
        return {m, [m](ForwardArgs& a) { return Outputs{{"output", m->forward(a.tensor("src"), encoder_args(a))}}; }};
    }
    if (c.module == "TransformerEncoder") {
        auto m = std::make_shared<nn::TransformerEncoder>(stack_options(o));
        return {m, [m](ForwardArgs& a) { return Outputs{{"output", m->forward(a.tensor("src"), encoder_args(a))}}; }};
    }
    if (c.module == "TransformerDecoderLayer") {
        auto m = std::make_shared<nn::TransformerDecoderLayer>(layer_options(o));
        return {m, [m](ForwardArgs& a) {
                    return Outputs{{"output", m->forward(a.tensor("tgt"), a.tensor("memory"), decoder_args(a)).output}};
                }};
    }
    if (c.module == "TransformerDecoder") {
        auto m = std::make_shared<nn::TransformerDecoder>(stack_options(o));
        return {m, [m](ForwardArgs& a) {
                    return Outputs{{"output", m->forward(a.tensor("tgt"), a.tensor("memory"), decoder_args(a)).output}};
                }};
    }
    if (c.module == "Transformer") {
        auto m = std::make_shared<nn::Transformer>(transformer_options(o));
        return {m, [m](ForwardArgs& a) {
                    nn::TransformerArgs args{
                        .src_mask = a.tensor("src_mask"), .tgt_mask = a.tensor("tgt_mask"),
                        .memory_mask = a.tensor("memory_mask"), .src_key_padding_mask = a.tensor("src_key_padding_mask"),
                        .tgt_key_padding_mask = a.tensor("tgt_key_padding_mask"),
                        .memory_key_padding_mask = a.tensor("memory_key_padding_mask"),
                        .src_is_causal = a.flag("src_is_causal", false), .tgt_is_causal = a.flag("tgt_is_causal", false),
                        .memory_is_causal = a.flag("memory_is_causal", false)};
                    return Outputs{{"output", m->forward(a.tensor("src"), a.tensor("tgt"), args)}};
                }};
    }
    throw std::runtime_error(c.name + ": unknown module type " + c.module);
}

// ---- comparison -------------------------------------------------------------------------------

/// Compare a spool tensor with PyTorch's, element by element within nn_parity_f32; the
/// first mismatches are reported with case, tensor, index and both values.
void expect_matches(const std::string& case_name, const std::string& what, const Tensor& got, const Tensor& want)
{
    INFO(case_name, ": ", what);
    REQUIRE_MESSAGE(got.defined(), case_name, ": spool gave no ", what);
    CHECK_MESSAGE(got.dtype() == want.dtype(), case_name, ": ", what, " dtype ", spool::dtype_name(got.dtype()),
                  ", PyTorch ", spool::dtype_name(want.dtype()));
    REQUIRE_MESSAGE(got.shape() == want.shape(), case_name, ": ", what, " shape ", spool::to_string(got.shape()),
                    ", PyTorch ", spool::to_string(want.shape()));
    spool::test::expect_close(case_name + ": " + what, got.tolist(), want.tolist(), spool::test::nn_parity_f32);
}

void run_case(const Case& c)
{
    Built b = build(c);
    b.module->load_state_dict(c.params, /*strict=*/true);

    // inputs: PyTorch's differentiable ones (those with a grad.input.*) become leaves
    std::map<std::string, Tensor> inputs;
    for (const auto& [key, t] : c.tensors)
        if (key.rfind("input.", 0) == 0) {
            const std::string name = key.substr(6);
            Tensor x = t;
            if (c.has("grad.input." + name)) x.requires_grad_(true);
            inputs.emplace(name, x);
        }

    spool::Tape tape;
    ForwardArgs args(c, inputs);
    const Outputs out = b.forward(args);
    args.check_all_used();

    // outputs and loss = sum over outputs of sum(output * seed)
    std::set<std::string> produced;
    for (const auto& [name, t] : out) produced.insert(name);
    CHECK_MESSAGE(produced == std::set<std::string>(c.outputs.begin(), c.outputs.end()), c.name,
                  ": spool's outputs differ from the fixture's");
    Tensor loss;
    double loss_tol = 0;  // the loss error that outputs within tolerance can add up to
    for (const std::string& name : c.outputs) {
        const Tensor& want = c.at("output." + name);
        const Tensor& seed = c.at("seed." + name);
        const auto it = out.find(name);
        REQUIRE_MESSAGE(it != out.end(), c.name, ": spool gave no output ", name);
        expect_matches(c.name, "output " + name, it->second, want);
        const Tensor term = spool::sum(it->second * seed);
        loss = loss.defined() ? loss + term : term;
        const auto s = seed.tolist(), w = want.tolist();
        for (std::size_t i = 0; i < s.size(); ++i)
            loss_tol += std::abs(s[i]) * (spool::test::nn_parity_f32.atol + spool::test::nn_parity_f32.rtol * std::abs(w[i]));
    }
    CHECK_MESSAGE(std::abs(loss.item() - c.loss) <= loss_tol, c.name, ": loss: spool ", loss.item(), ", PyTorch ",
                  c.loss, ", tolerance ", loss_tol);
    tape.backward(loss);

    // every parameter's gradient (strict loading made spool's parameters the fixture's)
    const nn::NamedTensors params = b.module->named_parameters();
    CHECK_MESSAGE(params.size() == c.params.size(), c.name, ": spool has ", params.size(), " parameters, PyTorch ",
                  c.params.size());
    for (const auto& [name, p] : params) {
        Tensor g = p.grad();
        if (!g.defined()) g = spool::zeros(p.shape(), {.dtype = p.dtype()});  // none arrived: must be zero
        expect_matches(c.name, "grad of " + name, g, c.at("grad." + name));
    }
    int input_grads = 0;
    for (const auto& [name, x] : inputs) {
        if (!x.requires_grad()) continue;
        ++input_grads;
        Tensor g = x.grad();
        if (!g.defined()) g = spool::zeros(x.shape(), {.dtype = x.dtype()});
        expect_matches(c.name, "grad of input " + name, g, c.at("grad.input." + name));
    }
    CHECK_MESSAGE(input_grads > 0, c.name, ": no input gradient compared");
}

}  // namespace

TEST_CASE("nn parity: the fixtures cover every module and option")
{
    const auto names = case_names();
    INFO("fixture directory ", fixture_dir);
    CHECK(names.size() >= expected_cases);
    std::map<std::string, int> per_module;
    std::map<std::string, std::set<std::string>> seen;  // "<module> <option>" -> values
    for (const auto& name : names) {
        const Case c = load_case(name);
        CHECK_MESSAGE(c.params.size() > 0, name, ": no parameters");
        CHECK_MESSAGE(c.outputs.size() > 0, name, ": no outputs");
        ++per_module[c.module];
        const json& o = c.options.contains("layer") ? c.options.at("layer") : c.options;
        for (const char* key : {"norm_first", "activation", "batch_first", "bias"})
            if (o.contains(key)) seen[c.module + " " + key].insert(o.at(key).dump());
        for (const char* key : {"need_weights", "average_attn_weights"})
            if (c.forward.contains(key)) seen[c.module + " " + key].insert(c.forward.at(key).dump());
        if (c.options.contains("kdim")) seen[c.module + " kdim"].insert("set");
    }
    for (const char* m : {"MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer", "TransformerEncoder",
                          "TransformerDecoder", "Transformer"})
        CHECK_MESSAGE(per_module[m] >= 1, "no case for ", m);
    CHECK(per_module["MultiheadAttention"] >= 10);
    CHECK(per_module["Transformer"] >= 4);
    const std::set<std::string> both{"false", "true"}, acts{"\"gelu\"", "\"relu\""};
    for (const char* m : {"TransformerEncoderLayer", "TransformerDecoderLayer", "Transformer"}) {
        const std::string s = m;
        CHECK_MESSAGE(seen[s + " norm_first"] == both, m, " lacks a norm_first setting");
        CHECK_MESSAGE(seen[s + " activation"] == acts, m, " lacks an activation");
        CHECK_MESSAGE(seen[s + " batch_first"] == both, m, " lacks a batch_first setting");
        CHECK_MESSAGE(seen[s + " bias"] == both, m, " lacks a bias setting");
    }
    for (const char* key : {"batch_first", "bias", "need_weights", "average_attn_weights"})
        CHECK_MESSAGE(seen[std::string("MultiheadAttention ") + key] == both, "MultiheadAttention lacks a ", key,
                      " setting");
    CHECK_MESSAGE(seen["MultiheadAttention kdim"].size() == 1, "no MultiheadAttention case with kdim/vdim");
}

TEST_CASE("nn parity: modules match PyTorch in outputs, loss and gradients")
{
    const auto names = case_names();
    REQUIRE(names.size() >= expected_cases);
    for (const auto& name : names) {
        SUBCASE(name.c_str()) { run_case(load_case(name)); }
    }
}

TEST_CASE("nn parity: named_parameters() names, order and shapes equal PyTorch's")
{
    const std::string path = fixture_dir + "/names.json";
    std::ifstream in(path);
    REQUIRE_MESSAGE(in, "cannot open ", path);
    const json doc = json::parse(in);
    const json& mods = doc.at("modules");
    REQUIRE(mods.size() == 3);
    auto check = [](const std::string& what, const nn::Module& m, const json& want) {
        INFO(what, " (torch's ", want.at("type").get<std::string>(), ")");
        CHECK(m.type_name() == want.at("type").get<std::string>());
        const nn::NamedTensors got = m.named_parameters();
        const json& ps = want.at("parameters");
        CHECK_MESSAGE(got.size() == ps.size(), what, ": spool has ", got.size(), " parameters, PyTorch ", ps.size());
        for (std::size_t i = 0; i < std::min(got.size(), ps.size()); ++i) {
            const std::string name = ps[i].at("name");
            const spool::Shape shape(ps[i].at("shape").get<std::vector<std::int64_t>>());
            CHECK_MESSAGE(got[i].first == name, what, ": parameter ", i, " is ", got[i].first, ", PyTorch ", name);
            CHECK_MESSAGE(got[i].second.shape() == shape, what, ": ", name, " has shape ",
                          spool::to_string(got[i].second.shape()), ", PyTorch ", spool::to_string(shape));
        }
        // the state dict holds the same names (these modules have no buffers)
        const nn::NamedTensors state = m.state_dict();
        CHECK(state.size() == ps.size());
    };

    const json& t = mods.at("transformer").at("options");
    nn::Transformer transformer(nn::TransformerOptions{.d_model = t.at("d_model"), .nhead = t.at("nhead"),
                                                       .num_encoder_layers = t.at("num_encoder_layers"),
                                                       .num_decoder_layers = t.at("num_decoder_layers"),
                                                       .dim_feedforward = t.at("dim_feedforward")});
    check("Transformer", transformer, mods.at("transformer"));
    CHECK(mods.at("transformer").at("parameters").size() == 64);

    for (const char* key : {"mha", "mha_kdim_vdim"}) {
        const json& o = mods.at(key).at("options");
        nn::MultiheadAttentionOptions mo{.embed_dim = o.at("embed_dim"), .num_heads = o.at("num_heads")};
        if (o.contains("kdim")) mo.kdim = o.at("kdim").get<std::int64_t>();
        if (o.contains("vdim")) mo.vdim = o.at("vdim").get<std::int64_t>();
        check(key, nn::MultiheadAttention(mo), mods.at(key));
    }
}
