// W7 of docs/benchmarks.md: forward + backward of causal self-attention (the fused
// scaled_dot_product_attention op) at long sequence lengths, batch 1, 4 heads, head width 64,
// float32. Per length: ms per iteration (median/min/max after a warm-up), the caching
// allocator's peak bytes and the process's peak RSS during one iteration. The blockwise path
// is the default; --path materialised (or both) runs the old path that keeps the [L, S]
// probabilities, interleaved with the blockwise one. Flags: --lengths 512,1024,...,
// --iters N, --threads N, --batch N, --path blockwise|materialised|both, --block_q N, --block_k N (tiles).
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "bench/bench_util.hpp"
#include "spool.hpp"
#include "tensor/nn_kernels.hpp"

using namespace spool;
using spool::bench::now_s;

namespace {

constexpr std::int64_t H = 4, D = 64;
std::int64_t N = 1;  // batch (--batch)

/// Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM).
void reset_peak_rss()
{
    std::ofstream("/proc/self/clear_refs") << "5";
}

/// VmHWM of /proc/self/status in bytes (peak resident set since the last reset).
double peak_rss_bytes()
{
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::atof(line.c_str() + 6) * 1024.0;
    return 0;
}

void use_path(bool blockwise)
{
    kernels::AttentionBlocking b = kernels::attention_blocking();
    b.min_scores = blockwise ? 0 : std::numeric_limits<std::int64_t>::max();
    kernels::set_attention_blocking(b);
}

struct Inputs {
    Tensor q, k, v;
};

Inputs inputs(std::int64_t T)
{
    manual_seed(1);
    TensorOptions o{.requires_grad = true};
    return {randn({N, H, T, D}, o), randn({N, H, T, D}, o), randn({N, H, T, D}, o)};
}

/// One forward + backward; returns seconds.
double step(Inputs& x)
{
    x.q.zero_grad();
    x.k.zero_grad();
    x.v.zero_grad();
    const double t0 = now_s();
    {
        Tape tape;
        Tensor out = scaled_dot_product_attention(x.q, x.k, x.v, {.is_causal = true}).output;
        tape.backward(sum(out));
    }
    return now_s() - t0;
}

struct Memory {
    double alloc_peak, rss_peak;
};

/// Peak allocator bytes and peak RSS of one step, from a trimmed heap.
Memory measure_memory(Inputs& x)
{
    x.q.zero_grad();
    x.k.zero_grad();
    x.v.zero_grad();
    empty_cache();
    malloc_trim(0);
    reset_peak_allocator_stats();
    reset_peak_rss();
    step(x);
    return {static_cast<double>(allocator_stats().peak_bytes_in_use), peak_rss_bytes()};
}

std::vector<std::int64_t> parse_lengths(const char* s)
{
    std::vector<std::int64_t> r;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) r.push_back(std::atoll(item.c_str()));
    return r;
}

}  // namespace

int main(int argc, char** argv)
{
    std::vector<std::int64_t> lengths{512, 1024, 2048, 4096, 8192};
    int iters = 5, threads = get_num_threads();
    std::string path = "blockwise";
    auto blk = kernels::attention_blocking();
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--lengths") == 0) lengths = parse_lengths(argv[++i]);
        else if (std::strcmp(argv[i], "--iters") == 0) iters = std::max(1, std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "--threads") == 0) threads = std::atoi(argv[++i]);
        else if (std::strcmp(argv[i], "--path") == 0) path = argv[++i];
        else if (std::strcmp(argv[i], "--batch") == 0) N = std::max(1LL, std::atoll(argv[++i]));
        else if (std::strcmp(argv[i], "--block_q") == 0) blk.block_q = std::atoll(argv[++i]);
        else if (std::strcmp(argv[i], "--block_k") == 0) blk.block_k = std::atoll(argv[++i]);
    }
    kernels::set_attention_blocking(blk);
    set_num_threads(threads);
    std::vector<bool> paths;
    if (path == "blockwise" || path == "both") paths.push_back(true);
    if (path == "materialised" || path == "both") paths.push_back(false);
    bench::machine_line("attention_long")
        .num("threads", threads)
        .num("block_q", static_cast<double>(blk.block_q))
        .num("block_k", static_cast<double>(blk.block_k))
        .print();

    for (std::int64_t T : lengths) {
        Inputs x = inputs(T);
        std::vector<Memory> mem;
        for (bool p : paths) {  // the warm-up step is also the memory measurement
            use_path(p);
            mem.push_back(measure_memory(x));
        }
        std::vector<std::vector<double>> ms(paths.size());
        for (int it = 0; it < iters; ++it)
            for (std::size_t i = 0; i < paths.size(); ++i) {  // interleaved: A B A B ...
                use_path(paths[i]);
                ms[i].push_back(1e3 * step(x));
            }
        // causal attention's multiply-adds: forward 2 GEMMs over the L x L / 2 scores, backward
        // twice that (PyTorch's accounting: the recompute in backward is not counted)
        const double flop = 3.0 * 2 * 2 * static_cast<double>(N) * H * D * static_cast<double>(T) * static_cast<double>(T) / 2;
        for (std::size_t i = 0; i < paths.size(); ++i) {
            const auto s = bench::stats_of(ms[i]);
            bench::Json j("attention_long");
            j.str("path", paths[i] ? "blockwise" : "materialised")
                .num("seq_len", static_cast<double>(T))
                .num("batch", static_cast<double>(N))
                .num("heads", H)
                .num("head_dim", D)
                .num("iters", iters)
                .stats("ms", s)
                .num("gflop_per_s", flop / (s.median * 1e-3) / 1e9)
                .num("alloc_peak_mib", mem[i].alloc_peak / (1 << 20))
                .num("rss_peak_mib", mem[i].rss_peak / (1 << 20))
                .print();
        }
    }
    return 0;
}
