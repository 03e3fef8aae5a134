// Issue 12's benchmark: the standard T-small training step (W2 of ../shared/BENCHMARKS.md)
// data-parallel over 2 MPI ranks of 1 thread each, against 1 process of 2 threads, on this
// machine. The 2-rank side trains each rank on half of every batch's rows and averages the
// gradients with dist::DistributedDataParallel (25 MB buckets, all-reduces started from the
// tape during backward); it reports per step the time finish_gradient_sync() spends waiting
// (wait: for MPI and for the slower rank's backward), the communication left exposed after
// the slower rank's backward ended (exposed: from that moment, on one clock for both
// processes, to the end of rank 0's sync), and once per run the same all-reduces alone (a
// sync with nothing to overlap): overlap = 1 - exposed / alone, the share of the
// communication that backward hid.
//
// The parent runs each side in child processes, alternating round by round: this program
// with --child threads, and `mpirun -np 2 <this program> --child ranks` (shared memory,
// --bind-to none). Output: JSON lines — {"bench":"machine"}, one {"bench":"ddp"} per side,
// one {"bench":"ddp_ratio"}.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "bench/child.hpp"
#include "bench/machine.hpp"
#include "bench/spool_step.hpp"
#include "dist/ddp.hpp"

using namespace spool::bench;

namespace {

std::vector<std::string> g_forward_args;  // options passed on to the children

/// One rank of the 2-rank side: its half of the rows, DDP; rank 0 prints STEP, SYNC and
/// ALONE lines.
void run_ranks(const Config& c, double bucket_mb)
{
    using namespace spool;
    dist::init();
    const int rank = dist::rank(), world = dist::world_size();
    const std::int64_t per = c.batch / world;
    std::unique_ptr<dist::DistributedDataParallel> ddp;
    SpoolStepHooks h;
    h.rows_begin = rank * per;
    h.rows_end = rank == world - 1 ? c.batch : (rank + 1) * per;
    h.on_model = [&](nn::Module& m) {
        ddp = std::make_unique<dist::DistributedDataParallel>(m, dist::DistributedDataParallelOptions{.bucket_cap_mb = bucket_mb});
    };
    // when this rank's backward ended and its sync returned (CLOCK_MONOTONIC: one clock for
    // every process on the machine), to tell waiting for MPI from waiting for a slower rank
    double backward_end = 0, sync_end = 0;
    h.after_backward = [&] {
        backward_end = now_s();
        ddp->finish_gradient_sync();
        sync_end = now_s();
    };
    h.after_step = [&] {  // after the step's STEP line: not in its time
        const dist::SyncStats& s = ddp->last_sync();
        Tensor ends = full({1}, backward_end, {.dtype = DType::f64});
        dist::all_reduce(ends);  // the sum over the 2 ranks: the other one's is the rest
        const double slowest = std::max(backward_end, ends.item() - backward_end);
        if (rank == 0)
            std::printf("SYNC %.6f %.6f %zu %zu %zu %.6f\n", s.seconds, s.wait_seconds, s.buckets_in_backward,
                        s.buckets, s.bytes, sync_end - slowest);
    };
    if (rank != 0) std::freopen("/dev/null", "w", stdout);  // one rank reports
    run_spool_steps(c, 1, h);
    // the same all-reduces with nothing to overlap: a sync without a backward before it
    for (int i = 0; i < 5; ++i) {
        dist::barrier();
        ddp->finish_gradient_sync();
        if (rank == 0) std::printf("ALONE %.6f\n", ddp->last_sync().seconds);
    }
    std::fflush(stdout);
}

struct Samples {
    std::vector<double> step, sync, wait, exposed, alone;
    double max_rss_mib = 0;
    std::size_t buckets = 0, in_backward = 0, bytes = 0;
};

void run_side(bool ranks, Samples& out)
{
    std::vector<std::string> args;
    ChildEnv env = child_env(true, "");
    if (ranks) {
        args = {"/usr/bin/env", "mpirun", "-np", "2", "--bind-to", "none", "--oversubscribe", "--mca", "btl", "self,vader",
                "--mca", "btl_vader_single_copy_mechanism", "none"};
        if (geteuid() == 0) {
            args.push_back("--allow-run-as-root");
            env.set.push_back({"OMPI_ALLOW_RUN_AS_ROOT", "1"});
            env.set.push_back({"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"});
        }
    }
    args.insert(args.end(), {self_path(), "--child", ranks ? "ranks" : "threads"});
    args.insert(args.end(), g_forward_args.begin(), g_forward_args.end());
    const double rss = run_child_process(args, env, [&](const char* line) {
        double f, b, o, l;
        std::size_t k, n, bytes;
        if (std::sscanf(line, "STEP %lf %lf %lf %lf", &f, &b, &o, &l) == 4) {
            out.step.push_back((f + b + o) * 1e3);
        } else if (std::sscanf(line, "SYNC %lf %lf %zu %zu %zu %lf", &f, &b, &k, &n, &bytes, &o) == 6) {
            out.sync.push_back(f * 1e3);
            out.wait.push_back(b * 1e3);
            out.exposed.push_back(std::max(0.0, o) * 1e3);
            out.in_backward = k;
            out.buckets = n;
            out.bytes = bytes;
        } else if (std::sscanf(line, "ALONE %lf", &f) == 1) {
            out.alone.push_back(f * 1e3);
        } else if (std::strncmp(line, "ALLOC", 5) != 0) {
            std::fputs(line, stderr);
        }
    });
    out.max_rss_mib = std::max(out.max_rss_mib, rss);
}

void usage()
{
    std::puts("ddp [--steps 10] [--warmup 3] [--rounds 3] [--bucket-mb 25] [--vocab 1000] [--d-model 256] [--heads 4] [--layers 2]\n"
              "    [--ff 1024] [--src-len 64] [--tgt-len 64] [--batch 32] [--dropout 0.1] [--quick]\n"
              "Needs mpirun (Open MPI) on PATH.");
}

}  // namespace

int main(int argc, char** argv)
{
    Config c;
    std::string child;
    double bucket_mb = 25;  // PyTorch's default (and a 1 MiB first bucket)
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&] { return next_arg(argc, argv, i, usage); };
        if (a == "--child") child = next();
        else if (a == "--rounds") c.rounds = std::atoi(next().c_str());
        else if (a == "--bucket-mb") {
            bucket_mb = std::atof(next().c_str());
            g_forward_args.insert(g_forward_args.end(), {"--bucket-mb", std::to_string(bucket_mb)});
        }
        else if (a == "--quick") {
            c.steps = 3;
            c.warmup = 1;
            c.rounds = 1;
        } else if (a == "--help" || a == "-h") {
            usage();
            return 0;
        } else if (!parse_common(a, next, c, &g_forward_args)) {
            std::fprintf(stderr, "ddp: unknown option %s\n", a.c_str());
            usage();
            return 2;
        }
    }
    g_forward_args.insert(g_forward_args.end(), {"--steps", std::to_string(c.steps), "--warmup", std::to_string(c.warmup)});
    if (child == "threads") {
        spool::bench::run_spool_steps(c, 2);
        return 0;
    }
    if (child == "ranks") {
        run_ranks(c, bucket_mb);
        return 0;
    }

    const double peak2 = measured_peak_gflops(2);
    const double step_gflop = 3 * forward_flops(c) / 1e9;
    machine_line("machine").num("peak_gflops_2", peak2).num("step_gflop", step_gflop).print();
    Samples threads, ranks;
    for (int r = 0; r < c.rounds; ++r) {  // alternate, so drift hits both sides alike
        run_side(false, threads);
        run_side(true, ranks);
    }
    const Stats st = stats_of(threads.step), sr = stats_of(ranks.step);
    auto side = [&](const char* setting, const Samples& s, const Stats& step) {
        Json j("ddp");
        j.str("setting", setting).stats("ms", step).num("steps", double(s.step.size()));
        j.num("gflops", step_gflop / (step.median / 1e3)).num("peak_fraction", step_gflop / (step.median / 1e3) / peak2);
        j.num("max_rss_mib", s.max_rss_mib);
        return j;
    };
    side("1 process x 2 threads", threads, st).print();
    {
        Json j = side("2 ranks x 1 thread", ranks, sr);
        const Stats exposed = stats_of(ranks.exposed), alone = stats_of(ranks.alone);
        j.stats("sync_ms", stats_of(ranks.sync)).stats("wait_ms", stats_of(ranks.wait));
        j.stats("exposed_ms", exposed).stats("allreduce_alone_ms", alone);
        j.num("overlap", alone.median > 0 ? std::max(0.0, 1 - exposed.median / alone.median) : 0.0);
        j.num("buckets", double(ranks.buckets)).num("buckets_in_backward", double(ranks.in_backward));
        j.num("bytes_per_step", double(ranks.bytes)).num("bucket_mb", bucket_mb);
        j.print();
    }
    Json r("ddp_ratio");
    r.num("ranks_over_threads", sr.median / st.median);
    r.print();
    return 0;
}
