// Shared by bench/decode (the parent and spool's side) and bench/decode_torch (the LibTorch
// peers, a program of their own): the model's dimensions, the source batch both sides
// decode, the options both programs take, and the line a child prints per timed decode.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"

namespace spool::bench {

struct DecodeConfig {
    std::int64_t vocab = 1000, d_model = 256, heads = 4, layers = 2, ff = 1024;
    std::int64_t batch = 32, src_len = 64, new_tokens = 64;
    std::int64_t bos = 1;
    int runs = 3, warmup = 1;  // timed decodes per child, and untimed ones before them
};

/// The source batch, [src_len, batch] row-major (sequence first), ids in [3, vocab).
inline std::vector<std::int64_t> source_ids(const DecodeConfig& c)
{
    std::mt19937_64 gen(7);
    std::uniform_int_distribution<std::int64_t> id(3, c.vocab - 1);
    std::vector<std::int64_t> out(static_cast<std::size_t>(c.src_len * c.batch));
    for (auto& x : out) x = id(gen);
    return out;
}

/// One timed greedy decode: tokens per second over the batch.
inline void print_run(const DecodeConfig& c, double seconds)
{
    std::printf("RUN %.6f\n", double(c.batch * c.new_tokens) / seconds);
    std::fflush(stdout);
}

/// Options both programs take. Returns false when a is not one of them; next() yields the
/// option's value; forwarded (if given) collects what children must be told.
inline bool parse_decode_option(const std::string& a, const std::function<std::string()>& next, DecodeConfig& c,
                                std::vector<std::string>* forwarded = nullptr)
{
    return parse_number_option(a, next,
                               {{"--batch", &c.batch}, {"--src-len", &c.src_len}, {"--new-tokens", &c.new_tokens},
                                {"--runs", &c.runs}, {"--warmup", &c.warmup}},
                               forwarded);
}

}  // namespace spool::bench
