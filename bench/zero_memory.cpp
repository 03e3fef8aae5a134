// ZeRO-1 against DDP: memory per rank for the T-small training step (../shared/BENCHMARKS.md,
// bench/train_step.hpp's Config; every dimension an option), run as `mpirun -np N zero_memory
// --mode ddp|zero`. Each rank trains on batch / N rows (the same token ids on every rank: what
// is measured is memory, not learning) with Adam (0.9, 0.98, 1e-9) and Noam warm-up, one thread.
// Output: one JSON line per rank, {"bench":"zero_memory"}: the optimizer state this rank holds
// (Optimizer::state_bytes), peak RSS (getrusage), the caching allocator's peak, ms per step.
// Not here: the time spent communicating (bench/ddp's subject).
#include <sys/resource.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "bench/t_small.hpp"
#include "bench/train_step.hpp"
#include "dist/ddp.hpp"
#include "dist/zero.hpp"
#include "spool.hpp"

using namespace spool;
using namespace spool::bench;

namespace {
double peak_rss_mib()
{
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_maxrss) / 1024.0;  // KiB on Linux
}
}  // namespace

int main(int argc, char** argv)
{
    dist::init(&argc, &argv);
    Config c;
    c.steps = 5;
    c.warmup = 1;
    std::string mode = "zero";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "zero_memory: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--mode") mode = next();
        else if (!parse_common(a, next, c)) {
            std::fprintf(stderr, "zero_memory: unknown option %s (--mode ddp|zero, the model's dimensions, --steps)\n",
                         a.c_str());
            return 2;
        }
    }
    if (mode != "ddp" && mode != "zero") {
        std::fprintf(stderr, "zero_memory: --mode must be ddp or zero; got %s\n", mode.c_str());
        return 2;
    }
    const int rank = dist::rank(), world = dist::world_size();
    set_num_threads(1);
    Config local = c;
    local.batch = c.batch / world;

    manual_seed(0);
    nn::Seq2SeqTransformer model(t_small_options(c));
    model.train();
    const optim::AdamOptions adam{.lr = 1.0, .betas = {0.9, 0.98}, .eps = 1e-9};
    const optim::NoamOptions noam{.d_model = c.d_model, .warmup_steps = c.warmup_steps};
    std::unique_ptr<dist::DistributedDataParallel> ddp;
    std::unique_ptr<optim::Adam> opt;
    std::unique_ptr<dist::ZeroRedundancyOptimizer> zero;
    if (mode == "ddp") {
        ddp = std::make_unique<dist::DistributedDataParallel>(model);
        opt = std::make_unique<optim::Adam>(model.parameters(), adam);
    } else {
        zero = std::make_unique<dist::ZeroRedundancyOptimizer>(model.parameters(), [&](std::vector<Tensor> p) {
            return std::make_unique<optim::Adam>(std::move(p), adam);
        });
    }
    optim::Optimizer& inner = zero ? zero->optimizer() : *opt;
    optim::NoamLR sched(inner, noam);

    std::int64_t params = 0;
    for (const Tensor& p : model.parameters()) params += p.numel();
    const auto batches = make_batches(local, 4);
    std::vector<double> ms;
    for (int s = 0; s < c.warmup + c.steps; ++s) {
        const Batch& b = batches[static_cast<std::size_t>(s) % batches.size()];
        Tensor src = from_vector(b.src, {local.src_len, local.batch});
        Tensor tgt = from_vector(b.tgt, {local.tgt_len + 1, local.batch});
        Tensor tgt_in = slice(tgt, 0, 0, local.tgt_len), tgt_out = slice(tgt, 0, 1, local.tgt_len + 1);
        const double t0 = now_s();
        {
            Tape tape;
            Tensor logits = model(src, tgt_in);
            tape.backward(cross_entropy(reshape(logits, {-1, c.vocab}), reshape(tgt_out, {-1}),
                                        {.label_smoothing = c.smoothing}));
        }
        if (zero) {
            zero->step();
            sched.step();
            zero->zero_grad();
        } else {
            ddp->finish_gradient_sync();
            opt->step();
            sched.step();
            opt->zero_grad();
        }
        if (s >= c.warmup) ms.push_back((now_s() - t0) * 1e3);
    }
    const std::size_t state = zero ? zero->state_bytes() : opt->state_bytes();
    const AllocatorStats a = allocator_stats();
    const double rss = peak_rss_mib();
    dist::barrier();  // every rank has finished its steps before any prints
    for (int r = 0; r < world; ++r) {
        if (r == rank)
            Json("zero_memory")
                .str("mode", mode)
                .num("rank", rank)
                .num("world", world)
                .num("params", static_cast<double>(params))
                .num("d_model", static_cast<double>(c.d_model))
                .num("layers", static_cast<double>(c.layers))
                .num("batch_per_rank", static_cast<double>(local.batch))
                .num("optimizer_state_mib", static_cast<double>(state) / (1 << 20))
                .num("allocator_peak_mib", static_cast<double>(a.peak_bytes_in_use) / (1 << 20))
                .num("peak_rss_mib", rss)
                .stats("ms_per_step", stats_of(ms))
                .print();
        dist::barrier();
    }
}
