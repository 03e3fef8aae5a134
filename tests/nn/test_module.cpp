// The Module system: registration order and dotted names, state_dict round trips, strict
// loading errors, dtype conversion, train/eval, copy vs clone, printing, init bounds.
#include <doctest/doctest.h>

#include <cmath>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using namespace spool::nn;

namespace {
std::vector<std::string> names_of(const NamedTensors& nt)
{
    std::vector<std::string> out;
    for (const auto& [n, t] : nt) out.push_back(n);
    return out;
}
}  // namespace

TEST_CASE("Linear, Embedding, LayerNorm: PyTorch's parameter names, shapes and init bounds")
{
    manual_seed(0);
    Linear lin(LinearOptions{.in_features = 16, .out_features = 4});
    CHECK(names_of(lin.named_parameters()) == std::vector<std::string>{"weight", "bias"});
    CHECK(lin.weight.shape() == Shape({4, 16}));
    CHECK(lin.num_parameters() == 68);
    for (double v : lin.weight.tolist()) CHECK(std::abs(v) <= 0.25);  // 1/sqrt(16)
    Linear nob(3, 2, false);
    CHECK(names_of(nob.named_parameters()) == std::vector<std::string>{"weight"});
    Embedding emb({.num_embeddings = 5, .embedding_dim = 3, .padding_idx = -1});
    CHECK(emb.options.padding_idx == 4);
    for (int j = 0; j < 3; ++j) CHECK(emb.weight.at({4, j}) == 0);
    LayerNorm ln({.normalized_shape = {6}});
    CHECK(names_of(ln.named_parameters()) == std::vector<std::string>{"weight", "bias"});
    LayerNorm ln2({.normalized_shape = {6}, .bias = false});
    CHECK(names_of(ln2.named_parameters()) == std::vector<std::string>{"weight"});
    LayerNorm ln3({.normalized_shape = {6}, .elementwise_affine = false});
    CHECK(ln3.named_parameters().empty());
}

TEST_CASE("Embedding's padding row gets no gradient")
{
    Embedding emb({.num_embeddings = 4, .embedding_dim = 2, .padding_idx = 1});
    Tape tape;
    Tensor out = emb(from_vector(std::vector<std::int64_t>{1, 2, 1, 0}, {4}));
    tape.backward(sum(out * 3.0));
    Tensor g = emb.weight.grad();
    CHECK(g.at({1, 0}) == 0);
    CHECK(g.at({1, 1}) == 0);
    CHECK(g.at({2, 0}) == 3);
    CHECK(g.at({0, 1}) == 3);
}

TEST_CASE("dotted names through submodules, state_dict round trip, strict errors")
{
    manual_seed(1);
    MultiheadAttention a({.embed_dim = 8, .num_heads = 2});
    CHECK(names_of(a.named_parameters()) ==
          std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
    MultiheadAttention b({.embed_dim = 8, .num_heads = 2});
    auto sd = a.state_dict();
    b.load_state_dict(sd);
    CHECK(b.in_proj_weight.tolist() == a.in_proj_weight.tolist());
    CHECK_FALSE(b.in_proj_weight.value().shares_storage(a.in_proj_weight.value()));  // copied, not shared

    NamedTensors bad = sd;
    bad.erase(bad.begin() + 1);                          // missing in_proj_bias
    bad.emplace_back("extra.weight", zeros({2}));        // unexpected
    bad[0].second = zeros({3, 8});                       // wrong shape
    try {
        b.load_state_dict(bad);
        FAIL("expected ValueError");
    } catch (const ValueError& e) {
        CHECK(std::string(e.what()) ==
              "MultiheadAttention.load_state_dict: error(s) in loading the state dict:\n"
              "  size mismatches (1):\n"
              "    'in_proj_weight': expected (24, 8), got (3, 8)\n"
              "  missing keys (1): 'in_proj_bias'\n"
              "  unexpected keys (1): 'extra.weight'");
    }
    NamedTensors partial(sd.begin(), sd.begin() + 2);
    LoadResult r = b.load_state_dict(partial, false);
    CHECK(r.missing_keys == std::vector<std::string>{"out_proj.weight", "out_proj.bias"});
    CHECK(r.unexpected_keys.empty());
}

TEST_CASE("to(f64) keeps handles valid; zero_grad; train/eval reach every submodule")
{
    TransformerEncoderLayer layer({.d_model = 4, .nhead = 2, .dim_feedforward = 8});
    Tensor w = layer.linear1->weight;
    layer.to(f64);
    CHECK(w.dtype() == f64);  // the handle held outside sees the conversion
    CHECK(layer.named_parameters()[0].second.dtype() == f64);
    layer.eval();
    CHECK_FALSE(layer.dropout1->is_training());
    CHECK_FALSE(layer.self_attn->out_proj->is_training());
    layer.train();
    CHECK(layer.dropout->is_training());
    {
        Tape tape;
        Tensor x = randn({3, 2, 4}, {.dtype = f64});
        tape.backward(sum(layer(x)));
    }
    CHECK(w.grad().defined());
    layer.zero_grad();
    CHECK_FALSE(w.grad().defined());
}

TEST_CASE("copying a module shares parameters; clone() deep-copies")
{
    Linear a(3, 2);
    Linear shared = a;
    CHECK(shared.weight.same(a.weight));
    auto c = a.clone_as();
    CHECK_FALSE(c->weight.same(a.weight));
    CHECK(c->weight.tolist() == a.weight.tolist());
    c->weight.value().set(0, 42.0);
    CHECK(a.weight.at(0) != 42.0);
    TransformerEncoder enc(TransformerEncoderLayer({.d_model = 4, .nhead = 2, .dim_feedforward = 8}), 2);
    // PyTorch deep-copies the layer: both layers start with identical weights, in separate tensors
    CHECK((*enc.layers)[0]->linear1->weight.tolist() == (*enc.layers)[1]->linear1->weight.tolist());
    CHECK_FALSE((*enc.layers)[0]->linear1->weight.same((*enc.layers)[1]->linear1->weight));
    Sequential seq;
    seq.push_back(std::make_shared<Linear>(3, 4)).push_back(std::make_shared<ReLU>()).push_back(std::make_shared<Linear>(4, 1));
    CHECK(names_of(seq.named_parameters()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
    auto sc = seq.clone();
    Tensor x = randn({2, 3});
    CHECK(std::static_pointer_cast<Sequential>(sc)->forward(x).tolist() == seq(x).tolist());
}

TEST_CASE("printing shows the tree like PyTorch, with parameter counts")
{
    MultiheadAttention a({.embed_dim = 4, .num_heads = 2});
    CHECK(a.repr() ==
          "MultiheadAttention(\n"
          "  (out_proj): NonDynamicallyQuantizableLinear(in_features=4, out_features=4, bias=True)  # 20 params\n"
          ")  # 80 params");
    CHECK(LayerNorm({.normalized_shape = {4}}).repr() == "LayerNorm((4,), eps=1e-05, elementwise_affine=True)  # 8 params");
    CHECK(Dropout({.p = 0.1}).repr() == "Dropout(p=0.1, inplace=False)");
}

TEST_CASE("init: xavier and kaiming bounds, fan computation")
{
    manual_seed(2);
    Tensor w = empty({30, 20});
    init::xavier_uniform_(w);
    double b = std::sqrt(6.0 / 50);
    double mx = 0;
    for (double v : w.tolist()) mx = std::max(mx, std::abs(v));
    CHECK(mx <= b);
    CHECK(mx > 0.9 * b);
    CHECK(init::fan_in_and_fan_out(empty({5, 4, 3})) == std::pair<std::int64_t, std::int64_t>{12, 15});
    CHECK_THROWS_AS(init::fan_in_and_fan_out(empty({5})), ValueError);
}

TEST_CASE("positional encodings: the sinusoid table and offsets")
{
    PositionalEncoding pe({.d_model = 4, .max_len = 10});
    CHECK(pe.named_parameters().empty());
    CHECK(pe.state_dict().empty());  // non-persistent buffer
    CHECK(pe.pe.at({3, 0}) == doctest::Approx(std::sin(3.0)));
    CHECK(pe.pe.at({3, 1}) == doctest::Approx(std::cos(3.0)));
    CHECK(pe.pe.at({3, 2}) == doctest::Approx(std::sin(3.0 / 100)));
    Tensor x = zeros({2, 1, 4});
    Tensor y = pe(x, 5);
    CHECK(y.at({1, 0, 0}) == doctest::Approx(std::sin(6.0)));
    CHECK_THROWS_AS(pe(zeros({8, 1, 4}), 5), ValueError);
}

TEST_CASE("option validation names the module and the value")
{
    auto msg = [](auto f) { return test::message_of<std::exception>(f); };
    CHECK(msg([] { MultiheadAttention({.embed_dim = 10, .num_heads = 3}); }) ==
          "MultiheadAttention: embed_dim must be divisible by num_heads; got embed_dim 10 and num_heads 3");
    CHECK(msg([] { TransformerEncoderLayer({.d_model = 8, .nhead = 3}); }) ==
          "TransformerEncoderLayer: nhead must divide d_model; got d_model 8 and nhead 3");
    CHECK(msg([] { TransformerEncoderLayer({.d_model = 8, .nhead = 2, .activation = "tanh"}); }) ==
          "TransformerEncoderLayer: activation should be relu/gelu, not tanh");
    CHECK(msg([] { Linear(LinearOptions{.in_features = 0, .out_features = 2}); }) ==
          "Linear: in_features and out_features must be positive; got in_features=0, out_features=2");
    CHECK(msg([] { Dropout({.p = -0.1}); }) == "Dropout: probability has to be between 0 and 1; got -0.1");
}
