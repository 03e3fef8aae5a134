// nn API that users reach for directly (issue 11): Seq2SeqTransformer's separate
// share_embeddings / tie_generator options, a module written outside spool (docs/nn.md,
// "Writing your own module"), and load_state_dict's error text for large mismatches.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using namespace spool::nn;
using spool::test::message_of;

namespace {

std::vector<std::string> names_of(const NamedTensors& ts)
{
    std::vector<std::string> out;
    for (const auto& [n, t] : ts) out.push_back(n);
    return out;
}

/// The names among ts that belong to the embeddings or the generator, in order.
std::vector<std::string> table_names(const NamedTensors& ts)
{
    std::vector<std::string> out;
    for (const auto& n : names_of(ts))
        if (n.starts_with("src_embed") || n.starts_with("tgt_embed") || n.starts_with("generator")) out.push_back(n);
    return out;
}

const Tensor& tensor_named(const NamedTensors& ts, const std::string& name)
{
    for (const auto& [n, t] : ts)
        if (n == name) return t;
    FAIL("no tensor named ", name);
    return ts.front().second;
}

Seq2SeqOptions tiny(bool share, bool tie_generator, std::int64_t src_vocab = 7)
{
    return {.src_vocab = src_vocab, .tgt_vocab = 7, .d_model = 4, .nhead = 2, .num_encoder_layers = 1,
            .num_decoder_layers = 1, .dim_feedforward = 6, .dropout = 0.0, .max_len = 8,
            .share_embeddings = share, .tie_generator = tie_generator, .dtype = f64};
}

// ids [S, N] / [T, N] for the tiny models
Tensor src_ids() { return from_vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {3, 2}); }
Tensor tgt_ids() { return from_vector(std::vector<std::int64_t>{2, 6, 4, 1}, {2, 2}); }

/// A loss that reaches every logit: cross-entropy of the flattened [T·N, V] logits.
Tensor tiny_loss(const Seq2SeqTransformer& m)
{
    Tensor logits = m(src_ids(), tgt_ids());
    return cross_entropy(reshape(logits, {-1, 7}), from_vector(std::vector<std::int64_t>{3, 0, 5, 2}, {4}));
}

}  // namespace

// ---- Seq2SeqTransformer: share_embeddings and tie_generator -----------------------------------

TEST_CASE("Seq2SeqTransformer: share_embeddings, tie_generator and tie_weights — names, identity, counts")
{
    manual_seed(3);
    Seq2SeqTransformer none(tiny(false, false)), shared(tiny(true, false)), tied(tiny(false, true));
    Seq2SeqOptions both_opts = tiny(false, false);
    both_opts.tie_weights = true;  // the old option: both at once
    Seq2SeqTransformer both(both_opts);
    const std::int64_t table = 7 * 4;

    // named_parameters lists a shared tensor once, under its first name (PyTorch's remove_duplicate)
    CHECK(table_names(none.named_parameters()) ==
          std::vector<std::string>{"src_embed.weight", "tgt_embed.weight", "generator.weight", "generator.bias"});
    CHECK(table_names(shared.named_parameters()) ==
          std::vector<std::string>{"src_embed.weight", "generator.weight", "generator.bias"});
    CHECK(table_names(tied.named_parameters()) ==
          std::vector<std::string>{"src_embed.weight", "tgt_embed.weight", "generator.bias"});
    CHECK(table_names(both.named_parameters()) == std::vector<std::string>{"src_embed.weight", "generator.bias"});
    CHECK(shared.num_parameters() == none.num_parameters() - table);
    CHECK(tied.num_parameters() == none.num_parameters() - table);
    CHECK(both.num_parameters() == none.num_parameters() - 2 * table);

    // state_dict keeps every name, as PyTorch's does; identity says which are one tensor
    for (Seq2SeqTransformer* m : {&none, &shared, &tied, &both}) {
        const NamedTensors sd = m->state_dict();
        CHECK(table_names(sd) ==
              std::vector<std::string>{"src_embed.weight", "tgt_embed.weight", "generator.weight", "generator.bias"});
        const bool share = m == &shared || m == &both, tie = m == &tied || m == &both;
        CHECK(tensor_named(sd, "tgt_embed.weight").same(tensor_named(sd, "src_embed.weight")) == share);
        CHECK(tensor_named(sd, "generator.weight").same(tensor_named(sd, "tgt_embed.weight")) == tie);
        CHECK((m->src_embed.get() == m->tgt_embed.get()) == share);
    }

    // tie_generator alone allows different vocabularies; share_embeddings does not
    Seq2SeqTransformer tied_other(tiny(false, true, 5));
    CHECK(tied_other.src_embed->weight.shape() == Shape({5, 4}));
    CHECK(tied_other.generator->weight.same(tied_other.tgt_embed->weight));
    CHECK(message_of<ValueError>([] { Seq2SeqTransformer bad(tiny(true, false, 5)); }) ==
          "Seq2SeqTransformer: share_embeddings needs src_vocab == tgt_vocab; got 5 and 7");

    // a clone shares the same way, with tensors of its own
    auto copy = shared.clone_as();
    CHECK(copy->tgt_embed->weight.same(copy->src_embed->weight));
    CHECK_FALSE(copy->src_embed->weight.same(shared.src_embed->weight));
    CHECK_FALSE(copy->generator->weight.same(copy->tgt_embed->weight));
    CHECK(copy->src_embed->weight.tolist() == shared.src_embed->weight.tolist());
}

TEST_CASE("Seq2SeqTransformer share_embeddings: the shared table's gradient is the source's plus the target's")
{
    manual_seed(4);
    Seq2SeqTransformer shared(tiny(true, false));
    // the same weights in two separate tables
    Seq2SeqTransformer separate(tiny(false, false));
    separate.load_state_dict(shared.state_dict());
    CHECK(separate.tgt_embed->weight.tolist() == shared.src_embed->weight.tolist());
    {
        Tape tape;
        tiny_loss(shared).backward();
    }
    {
        Tape tape;
        tiny_loss(separate).backward();
    }
    const std::vector<double> g = shared.src_embed->weight.grad().tolist();
    const std::vector<double> gs = separate.src_embed->weight.grad().tolist(), gt = separate.tgt_embed->weight.grad().tolist();
    double src_mass = 0, tgt_mass = 0;
    for (std::size_t i = 0; i < g.size(); ++i) {
        CHECK_MESSAGE(std::abs(g[i] - (gs[i] + gt[i])) <= 1e-14, "[", i, "] ", g[i], " vs ", gs[i], " + ", gt[i]);
        src_mass += std::abs(gs[i]);
        tgt_mass += std::abs(gt[i]);
    }
    CHECK(src_mass > 1e-3);  // both sides really contribute
    CHECK(tgt_mass > 1e-3);
    // the generator is independent of the table: its own weight, its own (equal) gradient
    CHECK_FALSE(shared.generator->weight.same(shared.src_embed->weight));
    CHECK(shared.generator->weight.grad().tolist() == separate.generator->weight.grad().tolist());
}

TEST_CASE("gradcheck: Seq2SeqTransformer with share_embeddings, and with tie_generator alone")
{
    for (const auto& options : {std::pair{true, false}, std::pair{false, true}}) {
        const bool share = options.first, tie = options.second;  // not a structured binding: INFO captures them
        manual_seed(5);
        Seq2SeqTransformer m(tiny(share, tie));
        auto res = gradcheck([&](const std::vector<Tensor>&) { return tiny_loss(m); }, m.parameters());
        INFO("share ", share, " tie ", tie, ": ", res.message);
        CHECK(res.ok);
    }
}

// ---- a module written by a user -----------------------------------------------------------------

namespace {

struct GatedMixOptions {
    std::int64_t d_model = 0;
    double gate_init = 0.5;
    DType dtype = DType::f32;
};

/// y = x + g ⊙ proj(norm(x)): a submodule, a LayerNorm, and a parameter of its own.
class GatedMix : public Cloneable<GatedMix> {
public:
    explicit GatedMix(const GatedMixOptions& o) : Cloneable("GatedMix"), options(o)
    {
        gate = register_parameter("gate", full({o.d_model}, o.gate_init, {.dtype = o.dtype}));
        norm = register_module("norm", std::make_shared<LayerNorm>(LayerNormOptions{.normalized_shape = {o.d_model},
                                                                                     .dtype = o.dtype}));
        proj = register_module("proj", std::make_shared<Linear>(LinearOptions{o.d_model, o.d_model, true, o.dtype}));
    }
    Tensor forward(const Tensor& x) const { return x + gate * proj->forward(norm->forward(x)); }
    std::string extra_repr() const override { return "d_model=" + std::to_string(options.d_model); }

    GatedMixOptions options;
    Tensor gate;
    std::shared_ptr<LayerNorm> norm;
    std::shared_ptr<Linear> proj;
};

}  // namespace

TEST_CASE("a user module: names, state_dict round trip, clone, printing, gradcheck")
{
    manual_seed(6);
    GatedMix m({.d_model = 3});
    CHECK(names_of(m.named_parameters()) ==
          std::vector<std::string>{"gate", "norm.weight", "norm.bias", "proj.weight", "proj.bias"});
    CHECK(m.num_parameters() == 3 + 3 + 3 + 9 + 3);
    CHECK(m.repr().starts_with("GatedMix(d_model=3\n  (norm): LayerNorm("));

    GatedMix other({.d_model = 3, .gate_init = -2});
    other.load_state_dict(m.state_dict());
    Tensor x = randn({2, 3});
    CHECK(other.forward(x).tolist() == m.forward(x).tolist());

    auto c = m.clone_as();  // deep: from m.options, then every value copied
    CHECK(c->options.d_model == 3);
    CHECK_FALSE(c->gate.same(m.gate));
    CHECK(c->gate.same(tensor_named(c->state_dict(), "gate")));  // the field and the registered tensor are one
    m.gate.data<float>()[0] = 10;
    CHECK(c->gate.at(0) == 0.5);
    CHECK(c->forward(x).tolist() == other.forward(x).tolist());

    m.to(f64);
    Tensor x64 = randn({2, 3}, {.dtype = f64, .requires_grad = true});
    std::vector<Tensor> inputs = m.parameters();
    inputs.push_back(x64);
    auto res = gradcheck([&](const std::vector<Tensor>&) { return m.forward(x64); }, inputs);
    INFO(res.message);
    CHECK(res.ok);
}

// ---- load_state_dict's message ------------------------------------------------------------------

TEST_CASE("load_state_dict: a 200-key mismatch gives a short, multi-line message with counts")
{
    Sequential seq;
    for (int i = 0; i < 100; ++i) seq.push_back(std::make_shared<Linear>(2, 2));
    NamedTensors wrapped;  // saved from a wrapper that named the model "module"
    for (const auto& [n, t] : seq.state_dict()) wrapped.emplace_back("module." + n, t);
    const std::string msg = message_of<ValueError>([&] { seq.load_state_dict(wrapped); });
    CHECK(msg ==
          "Sequential.load_state_dict: error(s) in loading the state dict:\n"
          "  missing keys (200): '0.weight', '0.bias', '1.weight', '1.bias', '2.weight', '2.bias', '3.weight', "
          "'3.bias', '4.weight', '4.bias' and 190 more\n"
          "  unexpected keys (200): 'module.0.weight', 'module.0.bias', 'module.1.weight', 'module.1.bias', "
          "'module.2.weight', 'module.2.bias', 'module.3.weight', 'module.3.bias', 'module.4.weight', "
          "'module.4.bias' and 190 more\n"
          "  (each unexpected key is a missing key with the prefix 'module.': the state dict was saved from a "
          "wrapper; strip the prefix)");
    CHECK(msg.size() < 700);

    // size mismatches: one per line, the first 10, then a count
    NamedTensors wide = seq.state_dict();
    for (auto& [n, t] : wide)
        if (n.ends_with(".weight")) t = zeros({2, 3});
    const std::string sizes = message_of<ValueError>([&] { seq.load_state_dict(wide); });
    CHECK(sizes.starts_with("Sequential.load_state_dict: error(s) in loading the state dict:\n"
                            "  size mismatches (100):\n"
                            "    '0.weight': expected (2, 2), got (2, 3)\n"
                            "    '1.weight': expected (2, 2), got (2, 3)\n"));
    CHECK(sizes.ends_with("\n    '9.weight': expected (2, 2), got (2, 3)\n    and 90 more"));
    CHECK(std::count(sizes.begin(), sizes.end(), '\n') == 12);

    // a state dict saved from a submodule: the hint points the other way
    TransformerEncoderLayer layer({.d_model = 4, .nhead = 2, .dim_feedforward = 4});
    const std::string sub = message_of<ValueError>([&] { layer.load_state_dict(layer.self_attn->state_dict()); });
    CHECK(sub.find("missing keys (12): 'self_attn.in_proj_weight'") != std::string::npos);
    CHECK(sub.find("unexpected keys (4): 'in_proj_weight'") != std::string::npos);
    CHECK(sub.find("(each missing key") == std::string::npos);  // 12 vs 4: not a pure prefix shift
    const std::string sub_only = load_error_message("M", {}, {}, {"attn.w", "attn.b"}, {"w", "b"});
    CHECK(sub_only ==
          "M.load_state_dict: error(s) in loading the state dict:\n"
          "  missing keys (2): 'attn.w', 'attn.b'\n"
          "  unexpected keys (2): 'w', 'b'\n"
          "  (each missing key is an unexpected key with the prefix 'attn.': the state dict was saved from that "
          "submodule; load it there)");
}
