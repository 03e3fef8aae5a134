// W1: single-precision GEMM throughput, spool vs OpenBLAS, one JSON line per (shape, threads).
// Square n in {128 .. 2048} and the Transformer shapes (M x K x N) 2048x256x1024, 2048x1024x256,
// 2048x256x256, at 1 and 2 threads. Medians (with min and max) over >= 10 timed samples after
// warm-up; spool and OpenBLAS are interleaved A B A B so their ratio shares the machine's noise.
// The OpenBLAS half is built only with SPOOL_HAVE_OPENBLAS; "openblas_core" names the kernel set
// OpenBLAS picked (Debian's 0.3.21 does not know this Xeon and picks Prescott unless
// OPENBLAS_CORETYPE=SkylakeX, and gives Zen 4 and 5 its AVX2 set: the program sets the best one
// itself, see bench/child.hpp best_openblas_core). "kernel" names spool's GEMM kernel (chosen at run
// time in a portable build). Flags: --quick (fewer shapes and samples, a smoke test), --no-peer
// (spool only), --keep-openblas-core (OpenBLAS's own choice or the environment's).
// Not here: other dtypes, transposed operands (the tests cover those for correctness).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench/bench_util.hpp"
#include "bench/child.hpp"
#include "tensor/gemm.hpp"
#include "tensor/threads.hpp"

#ifdef SPOOL_HAVE_OPENBLAS
#include <cblas.h>
#include <unistd.h>
#endif

namespace {

struct Shape {
    int64_t m, k, n;
};

// GFLOP/s of one sample: `calls` back-to-back calls of f, so that a sample lasts long enough to time.
template <class F>
double sample(F&& f, int calls, double flops)
{
    const double t0 = spool::bench::now_s();
    for (int c = 0; c < calls; ++c) f();
    return flops * calls / (spool::bench::now_s() - t0) * 1e-9;
}

}  // namespace

int main(int argc, char** argv)
{
#ifdef SPOOL_HAVE_OPENBLAS
    // OpenBLAS's idle workers spin (sched_yield) for 2^28 cycles (~0.1 s) after each call and steal
    // a core from spool's next 2-thread sample; with 2^4 they sleep at once, like OpenMP's passive
    // waiters (an explicit setting is kept). And the peer gets the best kernel set this CPU runs
    // (best_openblas_core: also over an OPENBLAS_CORETYPE naming a weaker one, unless
    // --keep-openblas-core). OpenBLAS reads both variables when it loads: set them, restart once.
    bool restart = false, keep_core = false;
    for (int i = 1; i < argc; ++i) keep_core = keep_core || std::strcmp(argv[i], "--keep-openblas-core") == 0;
    if (!std::getenv("OPENBLAS_THREAD_TIMEOUT")) {
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
        restart = true;
    }
    if (!keep_core) {
        const std::string core = spool::bench::best_openblas_core(openblas_get_corename());
        if (!core.empty()) {
            setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
            restart = true;
        }
    }
    if (restart) execv("/proc/self/exe", argv);  // returns only if it failed: then run as we are
#endif
    bool quick = false, peer = true;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (std::strcmp(argv[i], "--no-peer") == 0) {
            peer = false;
        } else if (std::strcmp(argv[i], "--keep-openblas-core") == 0) {
        } else {
            std::fprintf(stderr, "usage: %s [--quick] [--no-peer] [--keep-openblas-core]\n", argv[0]);
            return 2;
        }
    }
#ifndef SPOOL_HAVE_OPENBLAS
    peer = false;
#endif

    std::vector<Shape> shapes;
    for (int64_t n : {128, 256, 512, 1024, 2048})
        if (!quick || n <= 512) shapes.push_back({n, n, n});
    shapes.push_back({2048, 256, 1024});
    if (!quick) {
        shapes.push_back({2048, 1024, 256});
        shapes.push_back({2048, 256, 256});
    }
    const int samples = quick ? 3 : 15;
    const int warmup = quick ? 1 : 3;

    std::mt19937 gen(1234);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (const Shape& s : shapes) {
        std::vector<float> A(std::size_t(s.m * s.k)), B(std::size_t(s.k * s.n)), C(std::size_t(s.m * s.n));
        for (float& x : A) x = dist(gen);
        for (float& x : B) x = dist(gen);
        const double flops = 2.0 * double(s.m) * double(s.n) * double(s.k);
        const int calls = int(std::max(1.0, 1e8 / flops));  // a sample does >= 0.1 GFLOP

        for (int threads : {1, 2}) {
            spool::set_num_threads(threads);
            auto run_spool = [&] {
                spool::kernels::gemm<float>(false, false, s.m, s.n, s.k, 1.0f, A.data(), s.k, B.data(), s.n, 0.0f,
                                            C.data(), s.n);
            };
#ifdef SPOOL_HAVE_OPENBLAS
            openblas_set_num_threads(threads);
            auto run_openblas = [&] {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(s.m), int(s.n), int(s.k), 1.0f, A.data(),
                            int(s.k), B.data(), int(s.n), 0.0f, C.data(), int(s.n));
            };
#endif
            std::vector<double> ours, theirs;
            for (int r = 0; r < warmup + samples; ++r) {
                const double g = sample(run_spool, calls, flops);
                if (r >= warmup) ours.push_back(g);
#ifdef SPOOL_HAVE_OPENBLAS
                if (peer) {
                    const double h = sample(run_openblas, calls, flops);
                    if (r >= warmup) theirs.push_back(h);
                }
#endif
            }
            using spool::bench::stats_of;
            spool::bench::Json line("gemm");
            line.num("m", double(s.m)).num("k", double(s.k)).num("n", double(s.n)).num("threads", threads);
            line.str("kernel", spool::kernels::gemm_kernel());
            line.stats("gflops", stats_of(ours));
#ifdef SPOOL_HAVE_OPENBLAS
            if (peer) {
                line.stats("openblas_gflops", stats_of(theirs));
                line.num("ratio", stats_of(ours).median / stats_of(theirs).median);
                line.str("openblas_core", openblas_get_corename());
            }
#endif
            line.print();
        }
    }
    return 0;
}
