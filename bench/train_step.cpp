// W2 of ../shared/BENCHMARKS.md: one training step of the standard encoder-decoder model
// ("T-small": shared embedding x sqrt(d) + sinusoidal positions, post-norm Transformer,
// generator tied to the embedding, cross-entropy with label smoothing 0.1, Adam (0.9, 0.98,
// 1e-9) with Noam warm-up), written against spool's public API and, when built with
// libtorch-dev, the same model in LibTorch (train_step_torch, beside this program). Every
// dimension is an option.
//
// The parent process measures the machine's fp32 peak, then runs each configuration in a
// child process of its own (spool: this program again, with --child; LibTorch:
// train_step_torch), interleaving spool and LibTorch round by round, so each gets its own
// peak RSS (wait4) and neither inherits the other's thread pools or libraries. spool
// children run in the environment as given, minus OMP_WAIT_POLICY/GOMP_SPINCOUNT; LibTorch children
// get OMP_WAIT_POLICY=passive, its best setting on these machines, and at 2 threads both
// "2/2" and "1/2" (ATen OpenMP threads / OpenBLAS threads) — the better one is the peer.
// Debian's OpenBLAS may not know the CPU and fall back to generic kernels ("Prescott"), or
// give an AVX-512 CPU its AVX2 set (Zen 4/5, or OPENBLAS_CORETYPE=Haswell in the environment):
// then the LibTorch children get OPENBLAS_CORETYPE naming the best kernel set the CPU runs
// (--keep-openblas-core: leave OpenBLAS's own choice). --contention runs everything a
// second time while a busy-loop process (started and killed here) competes for one core.
//
// Output: JSON lines. {"bench":"machine"} first; one {"bench":"train_step"} per
// implementation, thread setting and load; one {"bench":"train_step_ratio"} per thread
// count and load, spool's median over the best peer's.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "bench/child.hpp"
#include "bench/machine.hpp"
#include "bench/spool_step.hpp"
#include "bench/train_step.hpp"
#include "spool.hpp"

using namespace spool::bench;

namespace {

// ---- spool ---------------------------------------------------------------------------------------

void run_spool(const Config& c, int threads) { run_spool_steps(c, threads); }

// ---- the parent: children, contention, statistics ---------------------------------------------------

struct Run {
    std::string impl;     // "spool" or "libtorch"
    std::string setting;  // threads: "2" for spool; "aten/blas" for LibTorch
    int threads = 1;
};

struct Samples {
    std::vector<double> step, fwd, bwd, opt, loss;
    double max_rss_mib = 0;
    double alloc_peak_mib = 0, alloc_held_mib = 0;  // spool's allocator: peak in use, held at the end
};

std::vector<std::string> g_forward_args;  // dimension options, passed on to children
std::string g_self, g_peer;               // this program; the LibTorch program ("" = not built)
std::string g_openblas_core;              // OPENBLAS_CORETYPE for LibTorch children ("" = OpenBLAS's choice)
std::string g_peer_core = "none";         // the kernel set the LibTorch children reported

/// Runs this program (spool) or the LibTorch program as a child for one configuration;
/// appends its step times.
void run_child(const Run& r, Samples& out)
{
    std::vector<std::string> args{r.impl == "spool" ? g_self : g_peer};
    if (r.impl == "spool") args.insert(args.end(), {"--child", "spool"});
    args.insert(args.end(), {"--setting", r.setting});
    args.insert(args.end(), g_forward_args.begin(), g_forward_args.end());
    const double rss = run_child_process(args, child_env(r.impl == "spool", g_openblas_core), [&](const char* line) {
        double f, b, o, l;
        if (std::sscanf(line, "STEP %lf %lf %lf %lf", &f, &b, &o, &l) == 4) {
            out.fwd.push_back(f * 1e3);
            out.bwd.push_back(b * 1e3);
            out.opt.push_back(o * 1e3);
            out.step.push_back((f + b + o) * 1e3);
            out.loss.push_back(l);
        } else if (std::sscanf(line, "ALLOC %lf %lf", &f, &b) == 2) {
            out.alloc_peak_mib = std::max(out.alloc_peak_mib, f);
            out.alloc_held_mib = std::max(out.alloc_held_mib, b);
        } else if (!read_core_line(line, g_peer_core)) {
            std::fputs(line, stderr);
        }
    });
    out.max_rss_mib = std::max(out.max_rss_mib, rss);
}

/// A process that keeps one core busy until killed.
pid_t start_competitor()
{
    const pid_t pid = fork();
    if (pid == 0) {
        volatile double x = 0;
        for (;;) x = x + 1;
    }
    return pid;
}

void stop_competitor(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
}

void usage()
{
    std::puts("train_step [--threads 1,2] [--steps 10] [--warmup 3] [--rounds 3] [--contention] [--no-peer]\n"
              "           [--keep-openblas-core]\n"
              "           [--vocab 1000] [--d-model 256] [--heads 4] [--layers 2] [--ff 1024] [--src-len 64]\n"
              "           [--tgt-len 64] [--batch 32] [--dropout 0.1] [--quick]");
}

}  // namespace

int main(int argc, char** argv)
{
    Config c;
    std::vector<int> thread_counts{1, 2};
    bool contention = false, peer = true, keep_openblas_core = false;
    std::string child, setting = "1";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&] { return next_arg(argc, argv, i, usage); };
        if (a == "--child") child = next();
        else if (a == "--setting") setting = next();
        else if (a == "--threads") thread_counts = parse_int_list(next());
        else if (a == "--rounds") c.rounds = std::atoi(next().c_str());
        else if (a == "--contention") contention = true;
        else if (a == "--no-peer") peer = false;
        else if (a == "--keep-openblas-core") keep_openblas_core = true;
        else if (a == "--quick") {
            c.steps = 3;
            c.warmup = 1;
            c.rounds = 1;
        }
        else if (a == "--help" || a == "-h") {
            usage();
            return 0;
        }
        else if (!parse_common(a, next, c, &g_forward_args)) {
            std::fprintf(stderr, "train_step: unknown option %s\n", a.c_str());
            usage();
            return 2;
        }
    }
    // children run every step they are given; the parent decides how many
    g_forward_args.insert(g_forward_args.end(), {"--steps", std::to_string(c.steps), "--warmup", std::to_string(c.warmup)});

    if (child == "spool") {
        run_spool(c, std::atoi(setting.c_str()));
        return 0;
    }
    if (!child.empty()) {
        std::fprintf(stderr, "train_step: unknown child %s\n", child.c_str());
        return 2;
    }
    g_self = self_path();
    g_peer = sibling_program("train_step_torch");
    if (g_peer.empty()) peer = false;

    std::map<int, double> peak;
    for (int t : thread_counts) peak[t] = spool::bench::measured_peak_gflops(t);
    const double step_gflop = 3 * forward_flops(c) / 1e9;
    {
        spool::bench::Json j = machine_line("machine");
        if (peer) {
            g_openblas_core = choose_openblas_core(j, g_peer, keep_openblas_core);
        }
        for (int t : thread_counts) j.num(("peak_gflops_" + std::to_string(t)).c_str(), peak[t]);
        j.num("step_gflop", step_gflop).num("tokens_per_step", double(c.batch * c.tgt_len));
        j.print();
    }

    // Every configuration of one load — spool and the peer, every thread count — runs
    // interleaved round by round (A B C D E, E D C B A, ...), under one competitor when
    // contended: the host's speed drifts by tens of percent within minutes, and the targets
    // compare spool's 2-thread step with its 1-thread step and with the peak, so those are
    // measured side by side rather than in blocks minutes apart. The peak is measured again
    // before each idle spool run; a step's fraction is of the median of those measurements.
    std::map<int, std::vector<double>> peaks;
    std::vector<bool> loads{false};
    if (contention) loads.push_back(true);
    for (bool contended : loads) {
        std::vector<Run> runs;
        for (int t : thread_counts) {
            runs.push_back({"spool", std::to_string(t), t});
            if (peer) {
                runs.push_back({"libtorch", std::to_string(t) + "/" + std::to_string(t), t});
                if (t > 1) runs.push_back({"libtorch", "1/" + std::to_string(t), t});
            }
        }
        std::vector<Samples> samples(runs.size());
        const pid_t competitor = contended ? start_competitor() : 0;
        for (int round = 0; round < c.rounds; ++round) {
            for (std::size_t k = 0; k < runs.size(); ++k) {
                const std::size_t i = round % 2 == 0 ? k : runs.size() - 1 - k;
                if (!contended && runs[i].impl == "spool")
                    peaks[runs[i].threads].push_back(spool::bench::measured_peak_gflops(runs[i].threads));
                run_child(runs[i], samples[i]);
            }
        }
        if (contended) stop_competitor(competitor);
        for (int t : thread_counts) {
            using spool::bench::stats_of;
            const double peak_t = peaks[t].empty() ? peak[t] : stats_of(peaks[t]).median;
            double spool_ms = 0, spool_rss = 0, best_ms = INFINITY, best_rss = 0;
            std::string best_setting;
            for (std::size_t i = 0; i < runs.size(); ++i) {
                if (runs[i].threads != t) continue;
                const auto st = stats_of(samples[i].step);
                spool::bench::Json j("train_step");
                j.str("impl", runs[i].impl).str("threads", runs[i].setting).str("load", contended ? "contended" : "idle");
                j.str("kernel", runs[i].impl == "spool" ? std::string(gemm_kernel()) : "openblas " + g_peer_core);
                j.stats("ms", st);
                j.num("tokens_per_s", double(c.batch * c.tgt_len) / (st.median / 1e3));
                const double gflops = step_gflop / (st.median / 1e3);
                j.num("gflops", gflops).num("peak_gflops", peak_t).num("peak_fraction", gflops / peak_t);
                j.num("fwd_ms", stats_of(samples[i].fwd).median).num("bwd_ms", stats_of(samples[i].bwd).median);
                j.num("opt_ms", stats_of(samples[i].opt).median);
                j.num("first_loss", samples[i].loss.empty() ? 0 : samples[i].loss.front());
                j.num("peak_rss_mib", samples[i].max_rss_mib).num("steps", double(samples[i].step.size()));
                if (runs[i].impl == "spool")
                    j.num("alloc_peak_mib", samples[i].alloc_peak_mib).num("alloc_held_mib", samples[i].alloc_held_mib);
                j.print();
                if (runs[i].impl == "spool") {
                    spool_ms = st.median;
                    spool_rss = samples[i].max_rss_mib;
                } else if (st.median < best_ms) {
                    best_ms = st.median;
                    best_rss = samples[i].max_rss_mib;
                    best_setting = runs[i].setting;
                }
            }
            if (peer) {
                spool::bench::Json j("train_step_ratio");
                j.num("threads", t).str("load", contended ? "contended" : "idle").str("libtorch_best", best_setting);
                j.num("time_ratio", spool_ms / best_ms).num("rss_ratio", spool_rss / best_rss);
                j.print();
            }
        }
        // the contention target: spool's step at each thread count against its 1-thread step
        // under the same competitor, measured interleaved
        const auto one = std::find_if(runs.begin(), runs.end(), [](const Run& r) { return r.impl == "spool" && r.threads == 1; });
        if (contended && one != runs.end() && thread_counts.size() > 1) {
            spool::bench::Json j("train_step_contended_scaling");
            const double one_ms = spool::bench::stats_of(samples[std::size_t(one - runs.begin())].step).median;
            for (std::size_t i = 0; i < runs.size(); ++i)
                if (runs[i].impl == "spool" && runs[i].threads > 1)
                    j.num(("ms_ratio_" + runs[i].setting + "_to_1").c_str(), spool::bench::stats_of(samples[i].step).median / one_ms);
            j.print();
        }
    }
    return 0;
}
