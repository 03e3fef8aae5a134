// The LibTorch side of bench/train_step (run by it as a child; see train_step.cpp): the
// same T-small model, batches and optimizer in LibTorch, printing one STEP line per step.
// Usage: train_step_torch --setting ATEN/BLAS [dimension options, --steps, --warmup].
#include <cmath>
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "bench/bench_util.hpp"
#include "bench/torch_peer.hpp"
#include "bench/train_step.hpp"

using namespace spool::bench;

namespace {

struct TorchModel : torch::nn::Module {
    torch::nn::Embedding embed{nullptr};
    torch::nn::Transformer transformer{nullptr};
    torch::nn::Dropout drop{nullptr};
    torch::Tensor gen_bias, pe;
    double scale;

    explicit TorchModel(const Config& c) : scale(std::sqrt(double(c.d_model)))
    {
        embed = register_module("embed", torch::nn::Embedding(c.vocab, c.d_model));
        torch::NoGradGuard ng;
        embed->weight.normal_(0.0, 1.0 / scale);  // as spool's Seq2SeqTransformer
        transformer = register_module(
            "transformer", torch::nn::Transformer(torch::nn::TransformerOptions(c.d_model, c.heads)
                                                      .num_encoder_layers(c.layers)
                                                      .num_decoder_layers(c.layers)
                                                      .dim_feedforward(c.ff)
                                                      .dropout(c.dropout)));
        drop = register_module("drop", torch::nn::Dropout(c.dropout));
        gen_bias = register_parameter("gen_bias", torch::zeros({c.vocab}));
        const std::int64_t L = std::max(c.src_len, c.tgt_len);
        pe = torch::zeros({L, c.d_model});
        auto pos = torch::arange(0, L).unsqueeze(1).to(torch::kFloat);
        auto div = torch::exp(torch::arange(0, c.d_model, 2).to(torch::kFloat) * (-std::log(10000.0) / double(c.d_model)));
        using torch::indexing::None, torch::indexing::Slice;
        pe.index_put_({Slice(), Slice(0, None, 2)}, torch::sin(pos * div));
        pe.index_put_({Slice(), Slice(1, None, 2)}, torch::cos(pos * div));
        pe = pe.unsqueeze(1);
    }
    torch::Tensor embed_ids(const torch::Tensor& ids)
    {
        return drop(embed(ids) * scale + pe.slice(0, 0, ids.size(0)));
    }
    torch::Tensor forward(const torch::Tensor& src, const torch::Tensor& tgt)
    {
        auto T = tgt.size(0);
        auto mask = torch::triu(torch::full({T, T}, -INFINITY), 1);
        auto out = transformer->forward(embed_ids(src), embed_ids(tgt), torch::Tensor(), mask);
        return torch::nn::functional::linear(out, embed->weight, gen_bias);
    }
};

void run_torch(const Config& c, int aten_threads, int blas_threads)
{
    set_peer_threads(aten_threads, blas_threads);
    torch::manual_seed(0);
    auto model = std::make_shared<TorchModel>(c);
    model->train();
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1.0).betas({0.9, 0.98}).eps(1e-9));
    const auto batches = make_batches(c, 4);
    namespace F = torch::nn::functional;
    for (int s = 0; s < c.warmup + c.steps; ++s) {
        for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(noam(c, s + 1));
        const Batch& b = batches[std::size_t(s) % batches.size()];
        auto src = torch::tensor(b.src, torch::kLong).view({c.src_len, c.batch});
        auto tgt = torch::tensor(b.tgt, torch::kLong).view({c.tgt_len + 1, c.batch});
        auto tgt_in = tgt.slice(0, 0, c.tgt_len), tgt_out = tgt.slice(0, 1, c.tgt_len + 1);
        StepTimes t{};
        const double t0 = now_s();
        auto logits = model->forward(src, tgt_in);
        auto loss = F::cross_entropy(logits.reshape({-1, c.vocab}), tgt_out.reshape({-1}),
                                     F::CrossEntropyFuncOptions().label_smoothing(c.smoothing));
        t.loss = loss.item<double>();
        const double t1 = now_s();
        loss.backward();
        const double t2 = now_s();
        opt.step();
        opt.zero_grad();
        const double t3 = now_s();
        t.fwd = t1 - t0;
        t.bwd = t2 - t1;
        t.opt = t3 - t2;
        if (s >= c.warmup) print_step(t);
    }
}
}  // namespace

int main(int argc, char** argv)
{
    Config c;
    std::string setting = "1/1";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--setting") setting = next();
        else if (a == "--probe") {  // print the kernel set OpenBLAS chose, and stop
            std::printf("%s\n", openblas_core_name());
            return 0;
        }
        else if (!parse_common(a, next, c)) {
            std::fprintf(stderr, "train_step_torch: unknown option %s\n", a.c_str());
            return 2;
        }
    }
    const auto [aten, blas] = parse_setting(setting);
    run_torch(c, aten, blas);
    return 0;
}
