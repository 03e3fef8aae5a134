// The machine's measured fp32 peak (independent FMA chains on the widest vectors, one per
// thread), so a benchmark can print the fraction of the peak it reached. Header-only,
// bench-only; the CPU model and kernel names are in bench_util.hpp.
#pragma once
#include <string>
#include <thread>
#include <vector>

#include "tensor/xsimd_include.hpp"

#include "bench/bench_util.hpp"

namespace spool::bench {

namespace detail {
/// Seconds for `iters` rounds of 12 independent FMA chains on the widest float vectors.
inline double fma_chains(long iters, float* sink)
{
    using B = xsimd::batch<float>;
    constexpr int chains = 12;  // enough to cover FMA latency x 2 pipes
    B acc[chains];
    for (int c = 0; c < chains; ++c) acc[c] = B(1.0f + 1e-3f * float(c));
    const B a(0.999999f), b(1e-7f);
    const double t0 = now_s();
    for (long i = 0; i < iters; ++i) {
        for (int c = 0; c < chains; ++c) acc[c] = xsimd::fma(acc[c], a, b);
    }
    const double dt = now_s() - t0;
    B total = acc[0];
    for (int c = 1; c < chains; ++c) total += acc[c];
    *sink = xsimd::hadd(total);
    return dt;
}
}  // namespace detail

/// Measured fp32 FLOP/s of `threads` threads running FMA chains at once: the best of 5 tries and
/// more until 0.6 s have passed (at most 40), because on a shared host a try that another guest
/// interrupted reads low, and 5 tries of ~35 ms once read 30% under the machine's peak.
inline double measured_peak_gflops(int threads)
{
    constexpr long iters = 20'000'000;
    const double flops_per_thread = double(iters) * 12 * xsimd::batch<float>::size * 2;
    double best = 0;
    const double start = now_s();
    for (int attempt = 0; attempt < 40 && (attempt < 5 || now_s() - start < 0.6); ++attempt) {
        std::vector<double> secs(static_cast<std::size_t>(threads));
        std::vector<float> sink(static_cast<std::size_t>(threads));
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] { secs[std::size_t(t)] = detail::fma_chains(iters, &sink[std::size_t(t)]); });
        for (auto& th : pool) th.join();
        double slowest = 0;
        for (double s : secs) slowest = std::max(slowest, s);
        best = std::max(best, threads * flops_per_thread / slowest / 1e9);
    }
    return best;
}

}  // namespace spool::bench
