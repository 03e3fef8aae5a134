// W6 of docs/benchmarks.md: one optimizer step over 10 million float32 parameters (40 tensors
// of 250,000), Adam and AdamW, at 1 and 2 threads. An Adam step moves at least 28 bytes
// per parameter (reads θ, g, m, v; writes θ, m, v), so it is memory-bound: each line
// also carries a STREAM-like triad (a = b + s·c over 64 MiB arrays, bytes read + written)
// measured at the same thread count in the same rounds. When built with LibTorch
// (SPOOL_HAVE_TORCH), torch::optim::Adam / AdamW on the same shapes runs interleaved
// (spool, torch, triad, spool, ...) and the ratio is printed; a last line compares each
// side's best thread count. Flags: --quick (fewer repetitions).
#include <omp.h>

#include <cstring>
#include <memory>
#include <vector>

#include "bench/bench_util.hpp"
#include "spool.hpp"

#ifdef SPOOL_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace spool;
using spool::bench::now_s;
using spool::bench::Stats;
using spool::bench::stats_of;

namespace {

constexpr int n_tensors = 40;
constexpr std::int64_t tensor_size = 250000;
constexpr double n_params = double(n_tensors) * tensor_size;
constexpr double bytes_per_param = 28;  // read θ, g, m, v; write θ, m, v (float32)

// ---- STREAM-like triad --------------------------------------------------------------------

struct Triad {
    static constexpr std::int64_t n = (64 << 20) / sizeof(float);  // 64 MiB per array
    std::vector<float> a, b, c;
    Triad() : a(n, 0.f), b(n, 1.f), c(n, 2.f) {}
    /// Seconds for one a = b + s·c pass on `threads` threads.
    double run(int threads)
    {
        float* pa = a.data();
        const float *pb = b.data(), *pc = c.data();
        const float s = 0.5f;
        double t0 = now_s();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (std::int64_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
        return now_s() - t0;
    }
    static constexpr double bytes = 3.0 * sizeof(float) * n;
};

// ---- spool ---------------------------------------------------------------------------------

struct SpoolSide {
    std::vector<Tensor> params;
    std::unique_ptr<spool::optim::Optimizer> opt;
    explicit SpoolSide(bool adamw)
    {
        manual_seed(0);
        for (int i = 0; i < n_tensors; ++i) {
            Tensor p = randn({tensor_size}, {.requires_grad = true});
            p.impl()->grad = randn({tensor_size}).value();
            params.push_back(p);
        }
        if (adamw) opt = std::make_unique<spool::optim::AdamW>(params);
        else opt = std::make_unique<spool::optim::Adam>(params);
    }
    double step()
    {
        double t0 = now_s();
        opt->step();
        return now_s() - t0;
    }
};

#ifdef SPOOL_HAVE_TORCH
struct TorchSide {
    std::vector<torch::Tensor> params;
    std::unique_ptr<torch::optim::Optimizer> opt;
    explicit TorchSide(bool adamw)
    {
        torch::manual_seed(0);
        for (int i = 0; i < n_tensors; ++i) {
            auto p = torch::randn({tensor_size}, torch::requires_grad());
            p.mutable_grad() = torch::randn({tensor_size});
            params.push_back(p);
        }
        if (adamw) opt = std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(1e-3));
        else opt = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-3));
    }
    double step()
    {
        double t0 = now_s();
        opt->step();
        return now_s() - t0;
    }
};
#endif

double gbytes_per_s(double ms) { return n_params * bytes_per_param / (ms * 1e-3) / 1e9; }

struct Best {
    double ms = 1e300;
    int threads = 0;
    void offer(double m, int t)
    {
        if (m < ms) {
            ms = m;
            threads = t;
        }
    }
};

void run(const char* name, bool adamw, int reps, Triad& triad)
{
    SpoolSide s(adamw);
#ifdef SPOOL_HAVE_TORCH
    TorchSide p(adamw);
    Best torch_best;
#endif
    Best spool_best;
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        std::vector<double> ts, tt, tp;
#ifdef SPOOL_HAVE_TORCH
        torch::set_num_threads(threads);
#endif
        for (int r = 0; r < reps + 2; ++r) {  // two warm-up rounds (the first allocates the moments)
            double a = s.step() * 1e3;
            double c = triad.run(threads);
            if (r >= 2) {
                ts.push_back(a);
                tt.push_back(Triad::bytes / c / 1e9);
            }
#ifdef SPOOL_HAVE_TORCH
            double b = p.step() * 1e3;
            if (r >= 2) tp.push_back(b);
#endif
        }
        Stats ss = stats_of(ts), st = stats_of(tt);
        spool_best.offer(ss.median, threads);
        spool::bench::Json j(name);
        j.num("params", n_params).num("threads", threads);
        j.stats("ms", ss);
        j.num("gbytes_per_s", gbytes_per_s(ss.median));
        j.num("triad_gbytes_per_s", st.median);
        j.num("triad_fraction", gbytes_per_s(ss.median) / st.median);
#ifdef SPOOL_HAVE_TORCH
        Stats sp = stats_of(tp);
        torch_best.offer(sp.median, threads);
        j.stats("torch_ms", sp);
        j.num("torch_gbytes_per_s", gbytes_per_s(sp.median));
        j.num("ratio", ss.median / sp.median);
#endif
        j.num("runs", reps);
        j.print();
    }
    spool::bench::Json j((std::string(name) + "_best").c_str());
    j.num("params", n_params).num("ms", spool_best.ms).num("threads", spool_best.threads);
#ifdef SPOOL_HAVE_TORCH
    j.num("torch_ms", torch_best.ms).num("torch_threads", torch_best.threads);
    j.num("ratio", spool_best.ms / torch_best.ms);
#endif
    j.print();
}

}  // namespace

int main(int argc, char** argv)
{
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int reps = quick ? 5 : 20;
    Triad triad;
    run("adam_step", false, reps, triad);
    run("adamw_step", true, reps, triad);
    return 0;
}
