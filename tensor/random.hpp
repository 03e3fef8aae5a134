// Counter-based random numbers (Philox-4x32-10): element i of a draw depends only on
// (seed, offset + i), so results are the same for every thread count and machine, and
// generation vectorises and splits across threads. No tensors here; kernels wrap it.
#pragma once
#include <cstdint>

namespace spool {

/// Seed the global generator and reset its counter.
void manual_seed(std::uint64_t seed);

/// The generator state: a seed and the number of 128-bit blocks drawn so far.
struct RngState {
    std::uint64_t seed = 0;
    std::uint64_t offset = 0;
};
RngState get_rng_state();
void set_rng_state(const RngState& s);

namespace rng {
/// Reserve n_blocks counters from the global generator; returns the first.
RngState reserve(std::uint64_t n_blocks);
/// Uniform [0, 1) numbers: out[i] from counter block s.offset + i/4, lane i%4.
void uniform(const RngState& s, float* out, std::int64_t n);
void uniform(const RngState& s, double* out, std::int64_t n);  // 53-bit: two lanes per number
/// Standard normal numbers (Box-Muller on uniform pairs).
void normal(const RngState& s, float* out, std::int64_t n);
void normal(const RngState& s, double* out, std::int64_t n);
/// Raw 32-bit words [first, first + n) of the draw starting at s (word w is lane w%4 of
/// counter block s.offset + w/4): regenerates any slice of an earlier draw, one thread.
void words(const RngState& s, std::uint64_t first, std::uint32_t* out, std::int64_t n);
/// Dropout keeps an element when its word is >= this (p * 2^32, exact to 2^-32).
std::uint32_t keep_threshold(double p);
/// Raw Philox-4x32-10 block, exposed for tests against the published known-answer vectors.
void philox4x32(std::uint32_t ctr[4], const std::uint32_t key[2]);
}  // namespace rng

}  // namespace spool
