// The LibTorch side of bench/decode (run by it as a child; see decode.cpp): the T-small
// Seq2Seq model of spool's nn::Seq2SeqTransformer in LibTorch — token embeddings x sqrt(d)
// + sinusoidal positions, post-norm encoder and decoder layers, a final LayerNorm after each
// stack (as spool's Transformer has), a linear generator — decoding greedily in two ways:
//   kv     with a KV cache, written here with LibTorch's own ops: per decoder layer a
//          preallocated self-attention cache [N, H, max_len, D/H] for keys and values, one
//          row written per step by a slice copy; the memory's cross-attention keys and
//          values computed once; per step only the new token's projections, attention over
//          the cache prefix, the feed-forward block, the generator and argmax.
//   rerun  what torch::nn::TransformerDecoder supports: the decoder re-run on the whole
//          prefix every step.
// Both read the parameters of the same torch::nn modules (eval mode, no dropout).
// --check runs both once, the re-run fed the tokens the KV path chose, and prints the
// largest difference between their logits over every step.
// Usage: decode_torch --setting ATEN/BLAS --mode kv|rerun [--runs R --warmup W]
//        decode_torch --setting ATEN/BLAS --check;  decode_torch --probe
#include <algorithm>
#include <cmath>
#include <memory>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bench/bench_util.hpp"
#include "bench/decode.hpp"
#include "bench/torch_peer.hpp"

using namespace spool::bench;
namespace nn = torch::nn;
using torch::Tensor;

namespace {

struct TorchSeq2Seq {
    DecodeConfig c;
    std::int64_t hd;  // per-head width
    double scale;     // sqrt(d_model), the embeddings' factor
    nn::Embedding src_embed{nullptr}, tgt_embed{nullptr};
    nn::TransformerEncoder encoder{nullptr};
    nn::TransformerDecoder decoder{nullptr};
    nn::Linear generator{nullptr};
    Tensor pe;  // [max_len, d_model]

    explicit TorchSeq2Seq(const DecodeConfig& cfg)
        : c(cfg), hd(cfg.d_model / cfg.heads), scale(std::sqrt(double(cfg.d_model)))
    {
        const std::int64_t D = c.d_model;
        auto final_norm = [&] { return nn::AnyModule(nn::LayerNorm(nn::LayerNormOptions({D}))); };
        src_embed = nn::Embedding(c.vocab, D);
        tgt_embed = nn::Embedding(c.vocab, D);
        encoder = nn::TransformerEncoder(
            nn::TransformerEncoderOptions(nn::TransformerEncoderLayerOptions(D, c.heads).dim_feedforward(c.ff), c.layers)
                .norm(final_norm()));
        decoder = nn::TransformerDecoder(
            nn::TransformerDecoderOptions(nn::TransformerDecoderLayerOptions(D, c.heads).dim_feedforward(c.ff), c.layers)
                .norm(final_norm()));
        generator = nn::Linear(D, c.vocab);
        {  // spool's initialisation: tables N(0, 1/d_model), Xavier-uniform matrices in the stacks
            torch::NoGradGuard ng;
            src_embed->weight.normal_(0.0, 1.0 / scale);
            tgt_embed->weight.normal_(0.0, 1.0 / scale);
            for (const auto& stack : {encoder.ptr()->parameters(), decoder.ptr()->parameters()})
                for (auto p : stack)
                    if (p.dim() > 1) nn::init::xavier_uniform_(p);
        }
        const std::vector<std::shared_ptr<nn::Module>> all{src_embed.ptr(), tgt_embed.ptr(), encoder.ptr(), decoder.ptr(),
                                                           generator.ptr()};
        for (const auto& mod : all) mod->eval();
        const std::int64_t L = std::max(c.src_len, c.new_tokens) + 1;
        pe = torch::zeros({L, D});
        auto pos = torch::arange(0, L).unsqueeze(1).to(torch::kFloat);
        auto div = torch::exp(torch::arange(0, D, 2).to(torch::kFloat) * (-std::log(10000.0) / double(D)));
        using torch::indexing::None, torch::indexing::Slice;
        pe.index_put_({Slice(), Slice(0, None, 2)}, torch::sin(pos * div));
        pe.index_put_({Slice(), Slice(1, None, 2)}, torch::cos(pos * div));
    }

    /// ids [T, N] -> [T, N, D], positions from `offset`
    Tensor embed(nn::Embedding& table, const Tensor& ids, std::int64_t offset)
    {
        return table(ids) * scale + pe.slice(0, offset, offset + ids.size(0)).unsqueeze(1);
    }
    Tensor encode(const Tensor& src) { return encoder(embed(src_embed, src, 0)); }
};

/// Logits [steps, N, V] recorded by a decode, or nothing.
using Record = std::vector<Tensor>;

// ---- the re-run: nn::TransformerDecoder on the whole prefix every step --------------------------

/// Greedy decode; with `forced` the step-t input is forced[t] instead of the argmax.
void decode_rerun(TorchSeq2Seq& m, const Tensor& src, Record* record = nullptr, const Tensor* forced = nullptr)
{
    torch::NoGradGuard ng;
    const std::int64_t N = src.size(1);
    Tensor memory = m.encode(src);
    Tensor ys = torch::full({1, N}, m.c.bos, torch::kLong);
    for (std::int64_t t = 0; t < m.c.new_tokens; ++t) {
        const std::int64_t T = ys.size(0);
        Tensor mask = torch::triu(torch::full({T, T}, -INFINITY), 1);
        Tensor out = m.decoder(m.embed(m.tgt_embed, ys, 0), memory, mask);
        Tensor logits = m.generator(out[T - 1]);  // [N, V]
        if (record) record->push_back(logits.clone());
        Tensor next = forced ? (*forced)[t] : logits.argmax(-1);
        ys = torch::cat({ys, next.unsqueeze(0)}, 0);
    }
}

// ---- the KV-cache decoder, on the same modules' parameters ---------------------------------------

struct LayerParams {
    Tensor sa_in_w, sa_in_b, sa_out_w, sa_out_b;                   // self-attention
    Tensor ca_q_w, ca_q_b, ca_kv_w, ca_kv_b, ca_out_w, ca_out_b;  // cross-attention: q, and k/v stacked
    Tensor l1_w, l1_b, l2_w, l2_b;
    Tensor n1_w, n1_b, n2_w, n2_b, n3_w, n3_b;
};

std::vector<LayerParams> layer_params(TorchSeq2Seq& m)
{
    const std::int64_t D = m.c.d_model;
    std::vector<LayerParams> out;
    for (std::size_t i = 0; i < m.decoder->layers->size(); ++i) {
        auto l = m.decoder->layers[i]->as<nn::TransformerDecoderLayer>();
        const auto& sa = l->self_attn;
        const auto& ca = l->multihead_attn;
        out.push_back({sa->in_proj_weight, sa->in_proj_bias, sa->out_proj->weight, sa->out_proj->bias,
                       ca->in_proj_weight.narrow(0, 0, D), ca->in_proj_bias.narrow(0, 0, D),
                       ca->in_proj_weight.narrow(0, D, 2 * D), ca->in_proj_bias.narrow(0, D, 2 * D),
                       ca->out_proj->weight, ca->out_proj->bias,
                       l->linear1->weight, l->linear1->bias, l->linear2->weight, l->linear2->bias,
                       l->norm1->weight, l->norm1->bias, l->norm2->weight, l->norm2->bias, l->norm3->weight,
                       l->norm3->bias});
    }
    return out;
}

/// softmax(q kᵀ) v for one query per sequence: q [N, H, 1, hd] (already scaled),
/// k and v [N, H, S, hd] (views of the caches) -> [N, H·hd]
Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v)
{
    Tensor p = torch::softmax(torch::matmul(q, k.transpose(2, 3)), -1);
    return torch::matmul(p, v).view({q.size(0), -1});
}

void decode_kv(TorchSeq2Seq& m, const std::vector<LayerParams>& lp, const Tensor& src, Record* record = nullptr,
               Tensor* tokens = nullptr)
{
    torch::NoGradGuard ng;
    const DecodeConfig& c = m.c;
    const std::int64_t N = src.size(1), S = src.size(0), D = c.d_model, H = c.heads, hd = m.hd, L = c.new_tokens;
    const double q_scale = 1.0 / std::sqrt(double(hd));
    const std::vector<std::int64_t> dn{D};
    nn::LayerNorm fin = m.decoder->norm.get<nn::LayerNorm>();
    Tensor memory = m.encode(src);  // [S, N, D]
    std::vector<Tensor> k_cache, v_cache, mem_k, mem_v;
    for (const auto& p : lp) {
        k_cache.push_back(torch::empty({N, H, L, hd}));
        v_cache.push_back(torch::empty({N, H, L, hd}));
        // [S, N, 2D] -> [2, N, H, S, hd]: the memory's keys and values, once
        Tensor kv = torch::linear(memory, p.ca_kv_w, p.ca_kv_b).view({S, N, 2, H, hd}).permute({2, 1, 3, 0, 4}).contiguous();
        mem_k.push_back(kv[0]);
        mem_v.push_back(kv[1]);
    }
    Tensor cur = torch::full({N}, c.bos, torch::kLong);
    for (std::int64_t t = 0; t < L; ++t) {
        Tensor x = m.tgt_embed(cur) * m.scale + m.pe[t];  // [N, D]
        for (std::size_t i = 0; i < lp.size(); ++i) {
            const LayerParams& p = lp[i];
            Tensor qkv = torch::linear(x, p.sa_in_w, p.sa_in_b);  // [N, 3D]
            Tensor q = (qkv.narrow(1, 0, D) * q_scale).view({N, H, 1, hd});
            k_cache[i].select(2, t).copy_(qkv.narrow(1, D, D).view({N, H, hd}));
            v_cache[i].select(2, t).copy_(qkv.narrow(1, 2 * D, D).view({N, H, hd}));
            Tensor a = attend(q, k_cache[i].narrow(2, 0, t + 1), v_cache[i].narrow(2, 0, t + 1));
            x = torch::layer_norm(x + torch::linear(a, p.sa_out_w, p.sa_out_b), dn, p.n1_w, p.n1_b);
            Tensor qc = (torch::linear(x, p.ca_q_w, p.ca_q_b) * q_scale).view({N, H, 1, hd});
            a = attend(qc, mem_k[i], mem_v[i]);
            x = torch::layer_norm(x + torch::linear(a, p.ca_out_w, p.ca_out_b), dn, p.n2_w, p.n2_b);
            Tensor f = torch::linear(torch::relu(torch::linear(x, p.l1_w, p.l1_b)), p.l2_w, p.l2_b);
            x = torch::layer_norm(x + f, dn, p.n3_w, p.n3_b);
        }
        x = fin(x);
        Tensor logits = m.generator(x);  // [N, V]
        if (record) record->push_back(logits.clone());
        cur = logits.argmax(-1);
        if (tokens) (*tokens)[t].copy_(cur);
    }
}

/// Both decoders once; the re-run is fed the KV path's tokens so that both see the same
/// prefixes. Prints CHECK <max |logit difference|> <steps> <steps whose argmax agrees, all rows>.
void check(TorchSeq2Seq& m, const Tensor& src)
{
    const auto lp = layer_params(m);
    Record kv, full;
    Tensor tokens = torch::empty({m.c.new_tokens, src.size(1)}, torch::kLong);
    decode_kv(m, lp, src, &kv, &tokens);
    decode_rerun(m, src, &full, &tokens);
    double max_diff = 0;
    std::int64_t agree = 0;
    for (std::size_t t = 0; t < kv.size(); ++t) {
        max_diff = std::max(max_diff, (kv[t] - full[t]).abs().max().item<double>());
        agree += full[t].argmax(-1).equal(tokens[std::int64_t(t)]) ? 1 : 0;
    }
    std::printf("CHECK %.9g %zu %lld\n", max_diff, kv.size(), static_cast<long long>(agree));
}

}  // namespace

int main(int argc, char** argv)
{
    DecodeConfig c;
    std::string setting = "1/1", mode = "kv";
    bool do_check = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--setting") setting = next();
        else if (a == "--mode") mode = next();
        else if (a == "--check") do_check = true;
        else if (a == "--probe") {  // print the kernel set OpenBLAS chose, and stop
            std::printf("%s\n", openblas_core_name());
            return 0;
        } else if (!parse_decode_option(a, next, c)) {
            std::fprintf(stderr, "decode_torch: unknown option %s\n", a.c_str());
            return 2;
        }
    }
    if (mode != "kv" && mode != "rerun") {
        std::fprintf(stderr, "decode_torch: --mode must be kv or rerun; got %s\n", mode.c_str());
        return 2;
    }
    set_peer_threads(setting);
    torch::manual_seed(0);
    TorchSeq2Seq m(c);
    Tensor src = torch::tensor(source_ids(c), torch::kLong).view({c.src_len, c.batch});
    if (do_check) {
        check(m, src);
        return 0;
    }
    const auto lp = layer_params(m);
    for (int r = 0; r < c.warmup + c.runs; ++r) {
        const double t0 = now_s();
        if (mode == "kv") decode_kv(m, lp, src);
        else decode_rerun(m, src);
        const double dt = now_s() - t0;
        if (r >= c.warmup) print_run(c, dt);
    }
    return 0;
}
