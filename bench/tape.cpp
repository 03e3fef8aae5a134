// W4 of docs/benchmarks.md: per-op cost of the tape on tiny tensors. A chain of 10,000
// primitive ops on 16-element tensors — each step y = tanh(y * a + b) is 3 ops — run
// without recording, with recording, and with recording + backward. When built with
// libtorch (SPOOL_HAVE_TORCH), the same chain in LibTorch runs interleaved in this
// process, and the ratio is printed. Flags: --quick (fewer repetitions).
#include <cstring>

#include "bench/bench_util.hpp"
#include "spool.hpp"

#ifdef SPOOL_HAVE_TORCH
#include <torch/torch.h>
#endif

using namespace spool;
using spool::bench::now_s;

namespace {

constexpr int steps = 3334;  // 3 ops each: 10,002 ops
constexpr double ops = 3.0 * steps;

struct Times {
    std::vector<double> nograd, forward, forward_backward;
};

void run_spool(Times& t)
{
    Tensor a = randn({16}, {.requires_grad = true});
    Tensor b = randn({16}, {.requires_grad = true});
    Tensor x = randn({16});
    {
        double t0 = now_s();
        Tensor y = x;
        for (int i = 0; i < steps; ++i) y = tanh(y * a + b);  // no tape: nothing recorded
        t.nograd.push_back((now_s() - t0) / ops * 1e6);
    }
    {
        double t0 = now_s();
        Tape tape;
        Tensor y = x;
        for (int i = 0; i < steps; ++i) y = tanh(y * a + b);
        double t1 = now_s();
        tape.backward(sum(y));
        double t2 = now_s();
        t.forward.push_back((t1 - t0) / ops * 1e6);
        t.forward_backward.push_back((t2 - t0) / ops * 1e6);
    }
    a.zero_grad();
    b.zero_grad();
}

#ifdef SPOOL_HAVE_TORCH
void run_torch(Times& t)
{
    auto a = torch::randn({16}, torch::requires_grad());
    auto b = torch::randn({16}, torch::requires_grad());
    auto x = torch::randn({16});
    {
        torch::NoGradGuard ng;
        double t0 = now_s();
        auto y = x;
        for (int i = 0; i < steps; ++i) y = torch::tanh(y * a + b);
        t.nograd.push_back((now_s() - t0) / ops * 1e6);
    }
    {
        double t0 = now_s();
        auto y = x;
        for (int i = 0; i < steps; ++i) y = torch::tanh(y * a + b);
        double t1 = now_s();
        y.sum().backward();
        double t2 = now_s();
        t.forward.push_back((t1 - t0) / ops * 1e6);
        t.forward_backward.push_back((t2 - t0) / ops * 1e6);
    }
}
#endif

}  // namespace

int main(int argc, char** argv)
{
    bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
    int reps = quick ? 5 : 30;
    set_num_threads(1);
    manual_seed(0);
    Times s;
#ifdef SPOOL_HAVE_TORCH
    torch::set_num_threads(1);
    torch::manual_seed(0);
    Times p;
#endif
    for (int r = 0; r < reps + 2; ++r) {  // two warm-up rounds, then A B A B ...
        Times ts;
        run_spool(r < 2 ? ts : s);
#ifdef SPOOL_HAVE_TORCH
        Times tp;
        run_torch(r < 2 ? tp : p);
#endif
    }
    auto fw = spool::bench::stats_of(s.forward), fb = spool::bench::stats_of(s.forward_backward);
    spool::bench::Json j("tape");
    j.num("ops", ops).num("threads", 1);
    j.stats("us_per_op_nograd", spool::bench::stats_of(s.nograd));
    j.stats("us_per_op_forward", fw);
    j.stats("us_per_op_forward_backward", fb);
#ifdef SPOOL_HAVE_TORCH
    auto tfw = spool::bench::stats_of(p.forward), tfb = spool::bench::stats_of(p.forward_backward);
    j.stats("torch_us_per_op_nograd", spool::bench::stats_of(p.nograd));
    j.stats("torch_us_per_op_forward", tfw);
    j.stats("torch_us_per_op_forward_backward", tfb);
    j.num("ratio_forward", fw.median / tfw.median);
    j.num("ratio_forward_backward", fb.median / tfb.median);
#endif
    j.print();
    return 0;
}
