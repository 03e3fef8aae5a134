// W5 of docs/benchmarks.md: cross-entropy with label smoothing 0.1 on logits [2048, 32000]
// float32, forward + backward, at 1 and 2 threads. When built with LibTorch
// (SPOOL_HAVE_TORCH), F.cross_entropy(label_smoothing=0.1) forward + backward on the same
// logits and targets runs interleaved in this process (spool, torch, spool, ...), and the
// ratio of the medians is printed. The W5 target is stated against LibTorch without page
// faults, so run it with glibc told never to give memory back to the system:
//   GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 bench/losses
// The JSON echoes GLIBC_TUNABLES ("" when unset). Flags: --quick (fewer repetitions).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "spool.hpp"

#ifdef SPOOL_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace spool;
using spool::bench::now_s;
using spool::bench::stats_of;

namespace {

constexpr std::int64_t N = 2048, V = 32000;
constexpr double smoothing = 0.1;

struct Times {
    std::vector<double> forward, total;  // milliseconds
    double loss = 0;
};

/// One forward + backward; the gradient is dropped afterwards (outside the timing), so each
/// run writes a fresh gradient buffer, as a training step does.
void run_spool(Tensor& logits, const Tensor& target, Times& t)
{
    const double t0 = now_s();
    double t1 = 0;
    {
        Tape tape;
        const Tensor loss = cross_entropy(logits, target, {.label_smoothing = smoothing});
        t1 = now_s();
        tape.backward(loss);
        t.loss = loss.item();
    }
    const double t2 = now_s();
    logits.zero_grad();
    t.forward.push_back((t1 - t0) * 1e3);
    t.total.push_back((t2 - t0) * 1e3);
}

#ifdef SPOOL_HAVE_TORCH
void run_torch(torch::Tensor& logits, const torch::Tensor& target, Times& t)
{
    namespace F = torch::nn::functional;
    const double t0 = now_s();
    auto loss = F::cross_entropy(logits, target, F::CrossEntropyFuncOptions().label_smoothing(smoothing));
    const double t1 = now_s();
    loss.backward();
    const double t2 = now_s();
    t.loss = loss.item<double>();
    logits.mutable_grad().reset();
    t.forward.push_back((t1 - t0) * 1e3);
    t.total.push_back((t2 - t0) * 1e3);
}
#endif

}  // namespace

int main(int argc, char** argv)
{
    const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    const int warmup = quick ? 1 : 3, reps = quick ? 5 : 15;
    const char* tunables = std::getenv("GLIBC_TUNABLES");

    manual_seed(0);
    Tensor logits = (randn({N, V}) * 2.0).detach().requires_grad_();
    std::vector<std::int64_t> ids(N);
    for (std::int64_t i = 0; i < N; ++i) ids[i] = (i * 7919 + 13) % V;
    const Tensor target = from_vector(ids, {N});
#ifdef SPOOL_HAVE_TORCH
    torch::Tensor tlogits = torch::from_blob(logits.data<float>(), {N, V}, torch::kFloat32).clone().requires_grad_();
    const torch::Tensor ttarget = torch::from_blob(ids.data(), {N}, torch::kInt64).clone();
#endif

    for (int threads : {1, 2}) {
        set_num_threads(threads);
        Times s, warm;
#ifdef SPOOL_HAVE_TORCH
        torch::set_num_threads(threads);
        Times p, pwarm;
#endif
        for (int r = 0; r < warmup + reps; ++r) {
            run_spool(logits, target, r < warmup ? warm : s);
#ifdef SPOOL_HAVE_TORCH
            run_torch(tlogits, ttarget, r < warmup ? pwarm : p);
#endif
        }
        const auto total = stats_of(s.total);
        spool::bench::Json j("cross_entropy");
        j.num("n", N).num("classes", V).num("label_smoothing", smoothing).num("threads", threads).num("runs", reps);
        j.stats("ms", total).num("ms_forward", stats_of(s.forward).median).num("loss", s.loss);
#ifdef SPOOL_HAVE_TORCH
        const auto ttotal = stats_of(p.total);
        j.stats("torch_ms", ttotal).num("torch_ms_forward", stats_of(p.forward).median).num("torch_loss", p.loss);
        j.num("ratio", total.median / ttotal.median);
#endif
        j.str("glibc_tunables", tunables ? tunables : "");
        j.print();
    }
    return 0;
}
