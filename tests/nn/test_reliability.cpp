// Issue 9 at the module level: an undefined tensor in a state dict is a clear error, and
// training is bit-identical at any thread count (every reduction sums in an order fixed by
// the shapes, never by the thread split — a guarantee PyTorch does not give).
#include <doctest/doctest.h>

#include <vector>

#include "messages.hpp"
#include "spool.hpp"
#include "tensor/nn_kernels.hpp"
#include "tensor/threads.hpp"

using namespace spool;
using spool::test::message_of;

namespace {

/// Runs f at n threads and restores the previous count.
template <class F>
auto at_threads(int n, F f)
{
    const int before = get_num_threads();
    set_num_threads(n);
    struct Restore {
        int n;
        ~Restore() { set_num_threads(n); }
    } restore{before};
    return f();
}

/// How many elements of two equally long runs differ (a NaN counts as differing).
std::size_t differences(const std::vector<double>& one, const std::vector<double>& two)
{
    std::size_t n = 0;
    for (std::size_t i = 0; i < one.size(); ++i) n += one[i] != two[i];
    return n;
}

/// Token ids in [0, 50) from the targets in [0, 70).
Tensor remainder_ids(const Tensor& t)
{
    std::vector<std::int64_t> ids;
    for (double v : t.tolist()) ids.push_back(static_cast<std::int64_t>(v) % 50);
    return from_vector(ids, t.shape());
}

std::vector<float> bits_of(const Value& v)
{
    return std::vector<float>(v.data<float>(), v.data<float>() + v.numel());
}

}  // namespace

TEST_CASE("load_state_dict rejects an undefined tensor by name and leaves the module as it was")
{
    manual_seed(1);
    nn::Linear lin(3, 2);
    std::vector<double> before = lin.weight.tolist();
    nn::NamedTensors state = lin.state_dict();
    for (auto& [name, t] : state)
        if (name == "weight") t = Tensor();
    CHECK(message_of<ValueError>([&] { lin.load_state_dict(state); }) ==
          "Linear.load_state_dict: error(s) in loading the state dict:\n  undefined tensors (1): 'weight'");
    CHECK(lin.weight.tolist() == before);
}

TEST_CASE("layer_norm's weight and bias gradients are bit-identical at 1 and 2 threads")
{
    manual_seed(3);
    const std::int64_t N = 515, D = 96;  // above the parallel grain; N not a multiple of the blocks
    Value x = randn({N, D}).value(), dy = randn({N, D}).value();
    Value w = randn({D}).value(), b = randn({D}).value();
    auto run = [&] {
        kernels::LayerNormSaved saved;
        kernels::layer_norm(x, D, w, b, 1e-5, &saved);
        Value dw, db;
        Value dx = kernels::layer_norm_backward(dy, x, D, w, saved, &dw, &db);
        return std::vector<std::vector<float>>{bits_of(dx), bits_of(dw), bits_of(db)};
    };
    auto one = at_threads(1, run);
    auto two = at_threads(2, run);
    CHECK(one[0] == two[0]);
    CHECK(one[1] == two[1]);
    CHECK(one[2] == two[2]);
}

TEST_CASE("every reduction and GEMM gives the same bits at 1 and 2 threads, gradients included")
{
    // sizes above the parallel grain and not multiples of the SIMD width or the GEMM tiles
    auto run = [] {
        manual_seed(11);
        Tensor x = randn({97, 41, 33}, {.requires_grad = true});
        Tensor w = randn({33, 70}, {.requires_grad = true});
        Tensor emb = randn({50, 33}, {.requires_grad = true});
        std::vector<std::int64_t> ids(97 * 41);
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i * 13 % 70);
        Tensor target = from_vector(ids, {97 * 41});
        Tape tape;
        Tensor h = matmul(x + reshape(embedding(emb, remainder_ids(target)), {97, 41, 33}), w);  // [97, 41, 70]
        std::vector<Tensor> parts{sum(h, {0}), mean(h, {1}), var(h, {0, 2}), softmax(h, 2), log_softmax(h, 1),
                                  max(h, 0), layer_norm(h, {70})};
        Tensor loss = cross_entropy(reshape(h, {-1, 70}), target, {.label_smoothing = 0.1});
        for (const Tensor& p : parts) loss = loss + mean(p * p);
        tape.backward(loss);
        std::vector<double> out{loss.item(), optim::clip_grad_norm({x, w, emb}, 1.0)};
        for (const Tensor& t : {x.grad(), w.grad(), emb.grad(), h})
            for (double v : t.tolist()) out.push_back(v);
        for (const Tensor& p : parts)
            for (double v : p.tolist()) out.push_back(v);
        return out;
    };
    std::vector<double> one = at_threads(1, run);
    std::vector<double> two = at_threads(2, run);
    REQUIRE(one.size() == two.size());
    const std::size_t differ = differences(one, two);
    CHECK(differ == 0);
}

TEST_CASE("three Adam steps of a Transformer with dropout give bit-identical parameters at 1 and 2 threads")
{
    // B x T x d_model = 8 x 64 x 64 rows reach the parallel grain, so both runs really split work
    const std::int64_t B = 8, T = 64, V = 40;
    auto train = [&] {
        manual_seed(2024);
        nn::Seq2SeqTransformer model({.src_vocab = V, .tgt_vocab = V, .d_model = 64, .nhead = 4,
                                      .num_encoder_layers = 1, .num_decoder_layers = 1, .dim_feedforward = 128,
                                      .dropout = 0.1, .batch_first = true});
        optim::Adam opt(model.parameters(), {.lr = 1e-3});
        std::vector<std::int64_t> src(B * T), tgt(B * T);
        for (std::int64_t i = 0; i < B * T; ++i) {
            src[i] = (i * 7 + 3) % V;
            tgt[i] = (i * 11 + 5) % V;
        }
        Tensor s = from_vector(src, {B, T}), t = from_vector(tgt, {B, T});
        std::vector<double> out;
        for (int step = 0; step < 3; ++step) {
            Tape tape;
            Tensor logits = model(s, t);
            Tensor loss = cross_entropy(reshape(logits, {-1, V}), reshape(t, {-1}));
            tape.backward(loss);
            opt.step();
            opt.zero_grad();
            out.push_back(loss.item());
        }
        for (const Tensor& p : model.parameters())
            for (double v : p.tolist()) out.push_back(v);
        return out;
    };
    std::vector<double> one = at_threads(1, train);
    std::vector<double> two = at_threads(2, train);
    REQUIRE(one.size() == two.size());
    const std::size_t differ = differences(one, two);
    INFO("losses at 1 thread: ", one[0], " ", one[1], " ", one[2], "; at 2: ", two[0], " ", two[1], " ", two[2]);
    CHECK(differ == 0);
    CHECK(one[2] < one[0]);  // it did train
}
