// W3 of docs/benchmarks.md: greedy decoding with the standard Seq2SeqTransformer (d_model 256,
// 4 heads, 2+2 layers, ffn 1024, vocab 1000), batch 32, source 64, 64 new tokens.
// spool decodes through its KV cache; when built with libtorch (SPOOL_HAVE_TORCH), the
// same model in LibTorch decodes the way nn.Transformer must — re-running the decoder on
// the whole prefix each step — interleaved in this process. Run with
// OMP_WAIT_POLICY=passive (LibTorch's best setting here). Flags: --quick, --threads N.
#include <cmath>
#include <cstring>
#include <string>

#include "bench/bench_util.hpp"
#include "spool.hpp"

#ifdef SPOOL_HAVE_TORCH
#include <torch/torch.h>
#ifdef SPOOL_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif
#endif

using namespace spool;
using spool::bench::now_s;

namespace {

constexpr std::int64_t V = 1000, D = 256, H = 4, FF = 1024, N = 32, S = 64, NEW = 64;

Tensor source_ids()
{
    manual_seed(7);
    Tensor u = rand({S, N}, {.dtype = f64});
    std::vector<std::int64_t> ids;
    for (double x : u.tolist()) ids.push_back(3 + static_cast<std::int64_t>(x * (V - 3)));
    return from_vector(ids, {S, N});
}

double run_spool(const nn::Seq2SeqTransformer& model, const Tensor& src)
{
    double t0 = now_s();
    Tensor out = nn::greedy_decode(model, src, {}, {.max_new_tokens = NEW, .bos_id = 1, .eos_id = -1});
    double dt = now_s() - t0;
    SPOOL_CHECK(out.shape() == Shape({N, NEW}), ValueError, "bench decode: unexpected output ", to_string(out.shape()));
    return N * NEW / dt;
}

#ifdef SPOOL_HAVE_TORCH
struct TorchModel {
    torch::nn::Embedding embed{V, D};
    torch::nn::TransformerEncoder encoder{
        torch::nn::TransformerEncoderOptions(torch::nn::TransformerEncoderLayerOptions(D, H).dim_feedforward(FF), 2)};
    torch::nn::TransformerDecoder decoder{
        torch::nn::TransformerDecoderOptions(torch::nn::TransformerDecoderLayerOptions(D, H).dim_feedforward(FF), 2)};
    torch::nn::Linear generator{D, V};
    torch::Tensor pe;

    TorchModel()
    {
        pe = torch::zeros({5000, D});
        auto pos = torch::arange(0, 5000).unsqueeze(1).to(torch::kFloat);
        auto div = torch::exp(torch::arange(0, D, 2).to(torch::kFloat) * (-std::log(10000.0) / D));
        pe.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, torch::indexing::None, 2)}, torch::sin(pos * div));
        pe.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)}, torch::cos(pos * div));
        embed->eval();
        encoder->eval();
        decoder->eval();
        generator->eval();
    }
    torch::Tensor embed_ids(const torch::Tensor& ids)
    {
        auto T = ids.size(0);
        return embed(ids) * std::sqrt(double(D)) + pe.slice(0, 0, T).unsqueeze(1);
    }
};

double run_torch(TorchModel& m, const torch::Tensor& src)
{
    torch::NoGradGuard ng;
    double t0 = now_s();
    auto memory = m.encoder(m.embed_ids(src));
    auto ys = torch::ones({1, N}, torch::kLong);
    for (std::int64_t t = 0; t < NEW; ++t) {
        auto T = ys.size(0);
        auto mask = torch::triu(torch::full({T, T}, -INFINITY), 1);
        auto out = m.decoder(m.embed_ids(ys), memory, mask);  // the whole prefix, every step
        auto next = m.generator(out[T - 1]).argmax(-1);
        ys = torch::cat({ys, next.unsqueeze(0)}, 0);
    }
    double dt = now_s() - t0;
    return N * NEW / dt;
}
#endif

}  // namespace

int main(int argc, char** argv)
{
    bool quick = false;
    std::vector<int> thread_counts{1, 2};
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0) quick = true;
        if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) thread_counts = {std::atoi(argv[++i])};
    }
    const int reps = quick ? 2 : 10;
    manual_seed(0);
    nn::Seq2SeqTransformer model({.src_vocab = V, .tgt_vocab = V, .d_model = D, .nhead = H, .num_encoder_layers = 2,
                                  .num_decoder_layers = 2, .dim_feedforward = FF, .dropout = 0.1, .max_len = 512});
    model.eval();
    Tensor src = source_ids();
#ifdef SPOOL_HAVE_TORCH
    torch::manual_seed(0);
    TorchModel tm;
    std::vector<std::int64_t> ids;
    for (double x : src.tolist()) ids.push_back(static_cast<std::int64_t>(x));
    torch::Tensor tsrc = torch::tensor(ids, torch::kLong).view({S, N});
#endif
    for (int nt : thread_counts) {
        set_num_threads(nt);
#ifdef SPOOL_HAVE_TORCH
        torch::set_num_threads(nt);
#ifdef SPOOL_HAVE_OPENBLAS
        openblas_set_num_threads(nt);  // LibTorch's GEMMs run in OpenBLAS's own pool
#endif
#endif
        std::vector<double> s, p;
        run_spool(model, src);  // warm-up
#ifdef SPOOL_HAVE_TORCH
        run_torch(tm, tsrc);
#endif
        for (int r = 0; r < reps; ++r) {
            s.push_back(run_spool(model, src));
#ifdef SPOOL_HAVE_TORCH
            // LibTorch is ~20x slower per run: fewer repetitions keep the bench under a few minutes
            if (r < std::max(3, reps / 3)) p.push_back(run_torch(tm, tsrc));
#endif
        }
        spool::bench::Json j("decode");
        j.num("threads", nt).num("batch", N).num("src_len", S).num("new_tokens", NEW);
        auto ss = spool::bench::stats_of(s);
        j.stats("tokens_per_s", ss);
#ifdef SPOOL_HAVE_TORCH
        auto ps = spool::bench::stats_of(p);
        j.stats("torch_tokens_per_s", ps);
        j.num("speedup", ss.median / ps.median);
#endif
        j.str("omp_wait_policy", std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "default");
        j.print();
    }
    return 0;
}
