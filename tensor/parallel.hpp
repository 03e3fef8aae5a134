// spool's own thread pool, under every parallel kernel (internal; not installed).
//
// Why not OpenMP: libgomp's idle threads spin (up to GOMP_SPINCOUNT, or forever with
// OMP_WAIT_POLICY=active) and its barriers wait for every thread, so on a machine where
// another process is busy a 2-thread step took 3x the 1-thread step; the fix, passive
// waiting, can only be chosen by an environment variable read before main. Here a waiting
// thread spins for a bounded time (SPOOL_SPIN_US, default 50 µs: back-to-back kernels of
// one step still hand over without a system call) and then sleeps in the kernel (futex),
// so a thread that has nothing to do gives its core back.
//
// The calling thread is member 0 of every team; regions opened from inside a region run
// serially on the calling thread, and so do regions opened by a second user thread while
// one is running (nothing is shared between them, so no lock is held while working).
#pragma once
#include <cstdint>
#include <type_traits>

namespace spool::detail {

/// Runs fn(ctx, t, nt) for t in [0, nt) on nt threads, the caller as t = 0, and returns
/// when all are done. An exception thrown by any member is rethrown here (the first one).
void parallel_run(int nt, void (*fn)(void*, int, int), void* ctx);

/// True inside a parallel_run body (on any member thread).
bool in_parallel();

/// body(t, nt) on a team of nt threads (nt <= 1: body(0, 1) on this thread). The body runs
/// through one compiled function whatever the team size: inlined in two places it could
/// compile to different code (FMA contraction, vectorisation), and kernels promise the same
/// bits at every thread count.
template <class F>
void parallel_team(int nt, F&& body)
{
    using Body = std::remove_reference_t<F>;
    parallel_run(nt < 1 ? 1 : nt, [](void* ctx, int t, int n) { (*static_cast<Body*>(ctx))(t, n); }, &body);
}

/// body(i) for i in [0, n), split into nt contiguous blocks (OpenMP's schedule(static)).
template <class F>
void parallel_for(std::int64_t n, int nt, F&& body)
{
    if (n <= 0) return;
    if (nt > n) nt = static_cast<int>(n);
    parallel_team(nt, [&](int t, int team) {
        const std::int64_t b = n * t / team, e = n * (t + 1) / team;
        for (std::int64_t i = b; i < e; ++i) body(i);
    });
}

}  // namespace spool::detail
