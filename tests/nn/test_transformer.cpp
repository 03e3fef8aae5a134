// The Transformer family: float64 gradcheck of every module on tiny sizes (masks, both
// norm_first settings, both activations, dropout off), fully masked rows, KV-cache
// decoding equal to full recomputation, bad input errors.
#include <doctest/doctest.h>

#include <cmath>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using namespace spool::nn;

namespace {

/// Gradcheck a module's forward in float64 with respect to every parameter and the inputs.
template <class F>
GradcheckResult check_module(Module& m, const std::vector<Tensor>& inputs, F forward)
{
    m.to(f64);
    std::vector<Tensor> all = m.parameters();
    for (const auto& t : inputs) all.push_back(t);
    return gradcheck([&](const std::vector<Tensor>&) { return forward(); }, all);
}

Tensor x64(const Shape& s) { return randn(s, {.dtype = f64, .requires_grad = true}); }

Tensor padding(const std::vector<bool>& v, std::int64_t n, std::int64_t s) { return from_vector(v, {n, s}); }

}  // namespace

TEST_CASE("gradcheck: MultiheadAttention with masks, weights, kdim/vdim, batch_first, no bias")
{
    manual_seed(10);
    for (bool batch_first : {false, true})
        for (bool bias : {true, false}) {
            MultiheadAttention mha({.embed_dim = 4, .num_heads = 2, .bias = bias, .batch_first = batch_first});
            Tensor q = x64(batch_first ? Shape{2, 3, 4} : Shape{3, 2, 4});
            Tensor kv = x64(batch_first ? Shape{2, 4, 4} : Shape{4, 2, 4});
            Tensor kpm = padding({false, false, true, false, false, false, false, true}, 2, 4);
            Tensor am = from_vector(std::vector<double>{0, -0.5, 0, 1, 0, 0, -1, 0, 0.3, 0, 0, 0}, {3, 4}, {.dtype = f64});
            auto res = check_module(mha, {q, kv}, [&] {
                auto [out, w] = mha(q, kv, kv, {.key_padding_mask = kpm, .attn_mask = am, .average_attn_weights = false});
                return concat({reshape(out, {-1}), reshape(w, {-1})});
            });
            INFO("batch_first ", batch_first, " bias ", bias, ": ", res.message);
            CHECK(res.ok);
        }
    MultiheadAttention kv_dims({.embed_dim = 4, .num_heads = 2, .kdim = 3, .vdim = 5});
    Tensor q = x64({2, 2, 4}), k = x64({3, 2, 3}), v = x64({3, 2, 5});
    auto res = check_module(kv_dims, {q, k, v}, [&] { return kv_dims(q, k, v).first; });
    INFO(res.message);
    CHECK(res.ok);
}

TEST_CASE("gradcheck: encoder and decoder layers, both norm_first, both activations")
{
    manual_seed(11);
    for (bool norm_first : {false, true})
        for (const char* act : {"relu", "gelu"}) {
            TransformerEncoderLayerOptions o{.d_model = 4, .nhead = 2, .dim_feedforward = 6, .dropout = 0.0,
                                             .activation = act, .norm_first = norm_first};
            TransformerEncoderLayer enc(o);
            Tensor src = x64({3, 2, 4});
            Tensor kpm = padding({false, false, true, false, false, false}, 2, 3);
            auto r1 = check_module(enc, {src}, [&] { return enc(src, {.src_key_padding_mask = kpm}); });
            INFO("encoder norm_first ", norm_first, " ", act, ": ", r1.message);
            CHECK(r1.ok);

            TransformerDecoderLayer dec(o);
            Tensor tgt = x64({3, 2, 4}), mem = x64({2, 2, 4});
            Tensor causal = generate_square_subsequent_mask(3, f64);
            auto r2 = check_module(dec, {tgt, mem}, [&] {
                auto out = dec.forward(tgt, mem, {.tgt_mask = causal, .need_weights = true});
                return concat({reshape(out.output, {-1}), reshape(out.cross_attention[0], {-1})});
            });
            INFO("decoder norm_first ", norm_first, " ", act, ": ", r2.message);
            CHECK(r2.ok);
        }
}

TEST_CASE("gradcheck: nn::Transformer 2+2 layers with causal target mask and padding masks")
{
    manual_seed(12);
    for (bool norm_first : {false, true}) {
        Transformer model({.d_model = 4, .nhead = 2, .num_encoder_layers = 2, .num_decoder_layers = 2,
                           .dim_feedforward = 4, .dropout = 0.0, .norm_first = norm_first});
        Tensor src = x64({3, 2, 4}), tgt = x64({2, 2, 4});
        TransformerArgs args{.tgt_mask = generate_square_subsequent_mask(2, f64),
                             .src_key_padding_mask = padding({false, false, true, false, false, false}, 2, 3),
                             .memory_key_padding_mask = padding({false, false, true, false, false, false}, 2, 3)};
        auto res = check_module(model, {src, tgt}, [&] { return model(src, tgt, args); });
        INFO("norm_first ", norm_first, ": ", res.message);
        CHECK(res.ok);
    }
}

TEST_CASE("a fully masked attention row gives zeros, never NaN, and zero gradients")
{
    MultiheadAttention mha({.embed_dim = 4, .num_heads = 2});
    Tensor x = randn({3, 1, 4}, {.requires_grad = true});
    Tensor am = from_vector(std::vector<bool>{true, true, true, false, false, false, false, false, false}, {3, 3});
    Tape tape;
    auto [out, w] = mha(x, x, x, {.attn_mask = am});
    for (double v : out.tolist()) CHECK(std::isfinite(v));
    for (int j = 0; j < 3; ++j) CHECK(w.at({0, 0, j}) == 0);  // query 0 attends nothing
    // its output row is just out_proj's bias (zero-initialised)
    for (int e = 0; e < 4; ++e) CHECK(out.at({0, 0, e}) == 0);
    tape.backward(sum(out));
    for (double v : x.grad().tolist()) CHECK(std::isfinite(v));
}

TEST_CASE("KV-cache decoding gives the same outputs as recomputing the whole prefix")
{
    manual_seed(13);
    for (bool norm_first : {false, true}) {
        TransformerDecoder dec(TransformerDecoderLayer({.d_model = 8, .nhead = 2, .dim_feedforward = 16,
                                                        .norm_first = norm_first}),
                               2, true);
        dec.eval();
        const std::int64_t T = 5, N = 3, S = 4;
        Tensor tgt = randn({T, N, 8}), mem = randn({S, N, 8});
        Tensor mpad = padding({false, false, false, true, false, false, false, false, false, false, true, true}, N, S);
        std::vector<DecoderLayerCache> caches;
        for (std::int64_t t = 0; t < T; ++t) {
            Tensor prefix = slice(tgt, 0, 0, t + 1);
            Tensor full = dec.forward(prefix, mem,
                                      {.tgt_mask = generate_square_subsequent_mask(t + 1), .memory_key_padding_mask = mpad})
                              .output;
            Tensor step = dec.forward_step(slice(tgt, 0, t, t + 1), mem, caches, mpad);
            Tensor last = slice(full, 0, t, t + 1);
            REQUIRE(step.shape() == last.shape());
            double err = 0;
            for (std::int64_t i = 0; i < step.numel(); ++i) err = std::max(err, std::abs(step.at(i) - last.at(i)));
            INFO("norm_first ", norm_first, " step ", t);
            CHECK(err < 1e-5);
        }
        CHECK(caches[0].self.length() == T);
        CHECK(caches[0].cross.length() == S);
    }
}

TEST_CASE("bad input names the module and the shapes")
{
    auto msg = [](auto f) { return test::message_of<std::exception>(f); };
    MultiheadAttention mha({.embed_dim = 4, .num_heads = 2});
    Tensor x = zeros({3, 2, 4});
    CHECK(msg([&] { mha(zeros({3, 2, 5}), x, x); }) ==
          "MultiheadAttention: query's last dimension must be embed_dim 4; got query (3, 2, 5)");
    CHECK(msg([&] { mha(zeros({3, 4}), x, x); }) ==
          "MultiheadAttention: expected 3-D (batched) query, key and value; got (3, 4), (3, 2, 4) and (3, 2, 4)");
    CHECK(msg([&] { mha(x, x, x, {.attn_mask = zeros({2, 3})}); }) ==
          "MultiheadAttention: attn_mask must be (3, 3) or (4, 3, 3); got (2, 3)");
    CHECK(msg([&] { mha(x, x, x, {.key_padding_mask = from_vector(std::vector<bool>{true, false}, {1, 2})}); }) ==
          "MultiheadAttention: key_padding_mask must be (2, 3); got (1, 2)");
    Transformer model({.d_model = 4, .nhead = 2, .num_encoder_layers = 1, .num_decoder_layers = 1, .dim_feedforward = 4});
    CHECK(msg([&] { model(zeros({3, 2, 4}), zeros({3, 5, 4})); }) ==
          "Transformer: the batch number of src and tgt must be equal; got src (3, 2, 4) and tgt (3, 5, 4)");
    CHECK(msg([&] { model(zeros({3, 2, 6}), zeros({3, 2, 4})); }) ==
          "Transformer: expected src of rank 3 with last dimension d_model 4; got (3, 2, 6)");
    TransformerEncoderLayer enc({.d_model = 4, .nhead = 2, .dim_feedforward = 4});
    NamedTensors sd = enc.state_dict();
    sd[0].second = zeros({4, 4});
    CHECK(msg([&] { enc.load_state_dict(sd); }).find("\n    'self_attn.in_proj_weight': expected (12, 4), got (4, 4)") !=
          std::string::npos);
}

// ---- models beyond torch.nn ---------------------------------------------------------------------

namespace {
Seq2SeqTransformer small_seq2seq(bool tie, bool batch_first = false)
{
    manual_seed(21);
    Seq2SeqTransformer m({.src_vocab = 11, .tgt_vocab = 11, .d_model = 8, .nhead = 2, .num_encoder_layers = 2,
                          .num_decoder_layers = 2, .dim_feedforward = 16, .dropout = 0.1, .batch_first = batch_first,
                          .max_len = 64, .tie_weights = tie});
    m.eval();
    return m;
}

Tensor random_ids(const Shape& s, std::int64_t vocab, std::uint64_t seed)
{
    manual_seed(seed);
    Tensor u = rand(s, {.dtype = f64});
    std::vector<std::int64_t> ids;
    for (double v : u.tolist()) ids.push_back(3 + static_cast<std::int64_t>(v * (vocab - 3)));
    return from_vector(ids, s);
}

double max_abs_diff(const Tensor& a, const Tensor& b)
{
    REQUIRE(a.shape() == b.shape());
    double m = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.at(i) - b.at(i)));
    return m;
}
}  // namespace

TEST_CASE("Seq2SeqTransformer: tied weights are one tensor, listed once, saved under each name")
{
    Seq2SeqTransformer m = small_seq2seq(true);
    CHECK(m.generator->weight.same(m.src_embed->weight));
    CHECK(m.tgt_embed.get() == m.src_embed.get());
    auto names = m.named_parameters();
    std::int64_t hits = 0;
    for (const auto& [n, t] : names) hits += t.same(m.src_embed->weight);
    CHECK(hits == 1);
    auto sd = m.state_dict();
    std::vector<std::string> keys;
    for (const auto& [n, t] : sd) keys.push_back(n);
    for (const char* k : {"src_embed.weight", "tgt_embed.weight", "generator.weight", "generator.bias"})
        CHECK(std::find(keys.begin(), keys.end(), k) != keys.end());
    // training reaches the shared table from both the embedding and the generator
    m.train();
    Tape tape;
    Tensor logits = m(random_ids({4, 2}, 11, 1), random_ids({3, 2}, 11, 2));
    CHECK(logits.shape() == Shape({3, 2, 11}));
    tape.backward(mean(logits * logits));
    CHECK(m.src_embed->weight.grad().defined());
}

TEST_CASE("KV-cache decoding: every step's logits equal a full recomputation of the prefix")
{
    for (bool batch_first : {false, true}) {
        Seq2SeqTransformer m = small_seq2seq(false, batch_first);
        const std::int64_t N = 3, S = 5;
        Tensor src = random_ids(batch_first ? Shape{N, S} : Shape{S, N}, 11, 3);
        Tensor kpm = from_vector(std::vector<bool>{false, false, false, false, true, false, false, false, false, false,
                                                   false, false, false, true, true},
                                 {N, S});
        Tensor memory = m.encode(src, kpm);
        std::vector<DecoderLayerCache> caches;
        std::vector<std::int64_t> prefix(N, 1);  // BOS for every row
        std::vector<std::vector<std::int64_t>> rows(N, std::vector<std::int64_t>{1});
        for (std::int64_t t = 0; t < 6; ++t) {
            Tensor step_in = from_vector(std::vector<std::int64_t>(prefix), batch_first ? Shape{N, 1} : Shape{1, N});
            Tensor cached = m.decode_step(step_in, memory, caches, t, kpm);
            // the whole prefix through the uncached model
            std::vector<std::int64_t> flat;
            const std::int64_t T = t + 1;
            for (std::int64_t a = 0; a < (batch_first ? N : T); ++a)
                for (std::int64_t b = 0; b < (batch_first ? T : N); ++b)
                    flat.push_back(batch_first ? rows[a][b] : rows[b][a]);
            Tensor tgt = from_vector(flat, batch_first ? Shape{N, T} : Shape{T, N});
            Tensor full = m(src, tgt, {.src_key_padding_mask = kpm, .memory_key_padding_mask = kpm});
            Tensor last = squeeze(slice(full, batch_first ? 1 : 0, T - 1, T), batch_first ? 1 : 0);
            INFO("batch_first ", batch_first, " step ", t);
            CHECK(max_abs_diff(cached, last) < 2e-5);
            Tensor next = argmax(cached, -1);
            for (std::int64_t n = 0; n < N; ++n) {
                prefix[n] = static_cast<std::int64_t>(next.at(n));
                rows[n].push_back(prefix[n]);
            }
        }
    }
}

TEST_CASE("beam search with width 1 equals greedy decoding; rows decode independently")
{
    Seq2SeqTransformer m = small_seq2seq(false);
    for (std::uint64_t seed : {5, 6, 7}) {
        Tensor src = random_ids({6, 4}, 11, seed);
        GenerationOptions o{.max_new_tokens = 8, .bos_id = 1, .eos_id = 2};
        Tensor g = greedy_decode(m, src, {}, o);
        o.beam_width = 1;
        Tensor b = beam_search(m, src, {}, o);
        CHECK(g.tolist() == b.tolist());
        CHECK(g.shape()[0] == 4);
        o.beam_width = 3;
        Tensor b3 = beam_search(m, src, {}, o);
        Tensor b3_row = beam_search(m, slice(src, 1, 2, 3), {}, o);
        CHECK(b3.shape()[0] == 4);
        std::vector<double> row2;
        for (std::int64_t j = 0; j < b3_row.shape()[1]; ++j) row2.push_back(b3.at({2, j}));
        CHECK(row2 == b3_row.tolist());
    }
}

TEST_CASE("TransformerLM: causal forward, cached steps equal the full forward")
{
    manual_seed(31);
    TransformerLM lm({.vocab = 13, .d_model = 8, .nhead = 2, .num_layers = 2, .dim_feedforward = 16, .max_len = 32});
    lm.eval();
    Tensor ids = random_ids({6, 2}, 13, 9);
    Tensor full = lm(ids);
    CHECK(full.shape() == Shape({6, 2, 13}));
    // causality: changing the last token leaves earlier logits unchanged
    std::vector<std::int64_t> changed;
    for (double v : ids.tolist()) changed.push_back(static_cast<std::int64_t>(v));
    changed[10] = (changed[10] + 1) % 13;
    Tensor full2 = lm(from_vector(changed, {6, 2}));
    CHECK(max_abs_diff(slice(full, 0, 0, 5), slice(full2, 0, 0, 5)) < 1e-6);
    std::vector<KVCache> caches;
    Tensor first = lm.step(slice(ids, 0, 0, 3), caches, 0);  // a 3-token prompt at once
    CHECK(max_abs_diff(first, squeeze(slice(full, 0, 2, 3), 0)) < 2e-5);
    for (std::int64_t t = 3; t < 6; ++t) {
        Tensor s = lm.step(slice(ids, 0, t, t + 1), caches, t);
        CHECK(max_abs_diff(s, squeeze(slice(full, 0, t, t + 1), 0)) < 2e-5);
    }
    Tensor gen = generate(lm, slice(ids, 0, 0, 2), {.max_new_tokens = 4, .eos_id = 99});
    CHECK(gen.shape() == Shape({2, 4}));
}

TEST_CASE("a KV cache grows in place past its capacity, fed one or several positions at a time")
{
    manual_seed(17);
    for (bool batch_first : {false, true}) {
        MultiheadAttention mha({.embed_dim = 8, .num_heads = 2, .batch_first = batch_first});
        mha.eval();
        const std::int64_t T = 40, N = 3;
        const int td = batch_first ? 1 : 0;
        Tensor x = batch_first ? randn({N, T, 8}) : randn({T, N, 8});
        Tensor full = mha(x, x, x, {.need_weights = false, .is_causal = true}).first;
        KVCache cache;
        std::int64_t t = 0;
        std::vector<std::int64_t> capacities;
        for (std::int64_t n : {1, 3, 12, 1, 1, 7, 15}) {  // lengths 1, 4, 16, 17, 18, 25, 40
            Tensor step = mha.forward_cached(slice(x, td, t, t + n), cache);
            INFO("batch_first ", batch_first, ", positions ", t, "..", t + n);
            CHECK(max_abs_diff(step, slice(full, td, t, t + n)) < 1e-5);
            t += n;
            CHECK(cache.length() == t);
            capacities.push_back(cache.capacity());
        }
        CHECK(capacities == std::vector<std::int64_t>{16, 16, 16, 32, 32, 32, 64});
        CHECK(cache.keys().shape() == Shape({N, 2, T, 4}));
        CHECK(cache.values().shape() == Shape({N, 2, T, 4}));
        // the cached keys are the key projection of x, head by head
        Tensor k = linear(x, slice(mha.in_proj_weight, 0, 8, 16), slice(mha.in_proj_bias, 0, 8, 16));
        Tensor kh = batch_first ? permute(reshape(k, {N, T, 2, 4}), {0, 2, 1, 3}) : permute(reshape(k, {T, N, 2, 4}), {1, 2, 0, 3});
        CHECK(max_abs_diff(cache.keys(), kh) < 1e-6);
    }
    // inference only: under a recording tape it says so instead of dropping the gradients
    MultiheadAttention mha({.embed_dim = 4, .num_heads = 2});
    KVCache cache;
    Tape tape;
    CHECK(test::message_of<std::exception>([&] { mha.forward_cached(zeros({1, 2, 4}), cache); }) ==
          "MultiheadAttention: forward_cached is for inference (it writes the key/value cache in place and records no "
          "gradients); run it under NoGrad or without a Tape");
    CHECK(test::message_of<std::exception>([&] { mha.forward_cached(zeros({1, 2, 5}), cache); }) ==
          "MultiheadAttention: forward_cached expects the new positions as [T, N, E] with E = 4; got (1, 2, 5)");
}

TEST_CASE("gradcheck: the remaining modules — Linear, Embedding, LayerNorm, positions, Sequential, models")
{
    manual_seed(41);
    auto ok = [](const GradcheckResult& r, const char* what) {
        INFO(what, ": ", r.message);
        CHECK(r.ok);
    };
    Linear lin(3, 2);
    Tensor x = x64({4, 3});
    ok(check_module(lin, {x}, [&] { return lin(x); }), "Linear");
    Embedding emb({.num_embeddings = 5, .embedding_dim = 2, .padding_idx = 0});
    Tensor ids = from_vector(std::vector<std::int64_t>{1, 4, 4, 2}, {2, 2});
    ok(check_module(emb, {}, [&] { return emb(ids); }), "Embedding");
    LayerNorm ln({.normalized_shape = {3}, .eps = 1e-5});
    Tensor y = x64({2, 3});
    ok(check_module(ln, {y}, [&] { return ln(y) * y; }), "LayerNorm");
    LearnedPositionalEmbedding lpe({.d_model = 2, .max_len = 6});
    PositionalEncoding spe({.d_model = 2, .max_len = 6});
    Tensor z = x64({3, 1, 2});
    ok(check_module(lpe, {z}, [&] { return lpe(z, 2); }), "LearnedPositionalEmbedding");
    ok(check_module(spe, {z}, [&] { return spe(z, 1) * z; }), "PositionalEncoding");
    Sequential seq;
    seq.push_back(std::make_shared<Linear>(3, 4)).push_back(std::make_shared<GELU>()).push_back(std::make_shared<Linear>(4, 2));
    ok(check_module(seq, {x}, [&] { return seq(x); }), "Sequential");

    Seq2SeqTransformer s2s({.src_vocab = 6, .tgt_vocab = 6, .d_model = 4, .nhead = 2, .num_encoder_layers = 1,
                            .num_decoder_layers = 1, .dim_feedforward = 4, .dropout = 0.0, .max_len = 8,
                            .tie_weights = true});
    Tensor src = from_vector(std::vector<std::int64_t>{1, 2, 3, 4, 5, 1}, {3, 2});
    Tensor tgt = from_vector(std::vector<std::int64_t>{1, 1, 2, 5}, {2, 2});
    ok(check_module(s2s, {}, [&] {
           auto o = s2s.forward_with_attention(src, tgt, {.need_weights = true});
           return concat({reshape(o.logits, {-1}), reshape(o.cross_attention[0], {-1})});
       }),
       "Seq2SeqTransformer (tied, with cross-attention weights)");
    TransformerLM lm({.vocab = 6, .d_model = 4, .nhead = 2, .num_layers = 1, .dim_feedforward = 4, .dropout = 0.0,
                      .max_len = 8});
    ok(check_module(lm, {}, [&] { return lm(tgt); }), "TransformerLM");
}
