// Shared by bench/train_step (the parent and spool's side) and bench/train_step_torch (the
// LibTorch peer, a separate program so that spool's peak RSS does not include LibTorch's
// libraries): the model's dimensions and their options, the batches both sides train on,
// the Noam rate, the FLOP count, and the line a child prints per step.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"

namespace spool::bench {

struct Config {
    std::int64_t vocab = 1000, d_model = 256, heads = 4, layers = 2, ff = 1024;
    std::int64_t src_len = 64, tgt_len = 64, batch = 32, warmup_steps = 400;
    double dropout = 0.1, smoothing = 0.1;
    int steps = 10, warmup = 3, rounds = 3;
};

/// Matrix-multiply FLOPs of one forward pass (2 per multiply-add): projections, attention
/// scores and weighted sums, feed-forward, generator. A step is 3x: backward computes the
/// gradient of both operands of every product.
inline double forward_flops(const Config& c)
{
    const double D = double(c.d_model), F = double(c.ff), N = double(c.batch);
    const double S = double(c.src_len), T = double(c.tgt_len), V = double(c.vocab);
    const double enc = N * S * 2 * (4 * D * D + 2 * D * F) + 2 * 2 * N * S * S * D;
    const double dec_self = N * T * 2 * (4 * D * D) + 2 * 2 * N * T * T * D;
    const double dec_cross = N * T * 2 * (2 * D * D) + N * S * 2 * (2 * D * D) + 2 * 2 * N * T * S * D;
    const double dec_ff = N * T * 2 * (2 * D * F);
    return double(c.layers) * (enc + dec_self + dec_cross + dec_ff) + N * T * 2 * D * V;
}

/// One batch of token ids, the same for both implementations: src [S, N], tgt [T + 1, N]
/// (input is rows 0..T-1, output rows 1..T), ids in [3, vocab).
struct Batch {
    std::vector<std::int64_t> src, tgt;
};

inline std::vector<Batch> make_batches(const Config& c, int count)
{
    std::mt19937_64 gen(42);
    std::uniform_int_distribution<std::int64_t> id(3, c.vocab - 1);
    std::vector<Batch> out(static_cast<std::size_t>(count));
    for (auto& b : out) {
        for (std::int64_t i = 0; i < c.src_len * c.batch; ++i) b.src.push_back(id(gen));
        for (std::int64_t i = 0; i < (c.tgt_len + 1) * c.batch; ++i) b.tgt.push_back(id(gen));
    }
    return out;
}

inline double noam(const Config& c, int step)  // step >= 1, factor 1
{
    return std::pow(double(c.d_model), -0.5) * std::min(std::pow(step, -0.5), step * std::pow(double(c.warmup_steps), -1.5));
}

struct StepTimes {
    double fwd, bwd, opt, loss;
};

inline void print_step(const StepTimes& t)
{
    std::printf("STEP %.6f %.6f %.6f %.6f\n", t.fwd, t.bwd, t.opt, t.loss);
    std::fflush(stdout);
}

/// Options both programs take: the model's dimensions, steps and warm-up steps. Returns
/// false when a is not one of them; next() yields the option's value.
inline bool parse_common(const std::string& a, const std::function<std::string()>& next, Config& c,
                         std::vector<std::string>* forwarded = nullptr)
{
    return parse_number_option(a, next,
                               {{"--vocab", &c.vocab}, {"--d-model", &c.d_model}, {"--heads", &c.heads},
                                {"--layers", &c.layers}, {"--ff", &c.ff}, {"--src-len", &c.src_len},
                                {"--tgt-len", &c.tgt_len}, {"--batch", &c.batch}, {"--dropout", &c.dropout},
                                {"--steps", &c.steps}, {"--warmup", &c.warmup}},
                               forwarded);
}

}  // namespace spool::bench
