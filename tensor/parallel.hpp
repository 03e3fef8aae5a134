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
// The calling thread is member 0 of every region and workers join it while it runs; the
// caller never waits for a worker that has not joined (one whose core another process has
// taken), so bodies share their work dynamically: parallel_blocks and parallel_for hand out
// blocks as threads finish. Regions opened from inside a region, or by a second user
// thread while one is running, run on the calling thread alone.
#pragma once
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace spool::detail {

/// Runs fn(ctx, 0, nt) on the caller and fn(ctx, t, nt), t in [1, nt), on each worker that
/// joins before the caller's own call returns; returns when every member is done. Members
/// that do not join never run, so fn must claim its work dynamically. An exception thrown
/// by any member is rethrown here (the first one).
void parallel_run(int nt, void (*fn)(void*, int, int), void* ctx);

/// True inside a parallel_run body (on any member thread).
bool in_parallel();

/// body(t, nt) on up to nt threads, as parallel_run (nt <= 1: body(0, 1) on this thread).
/// The body runs through one compiled function whatever the team size: inlined in two
/// places it could compile to different code (FMA contraction, vectorisation), and kernels
/// promise the same bits at every thread count.
template <class F>
void parallel_team(int nt, F&& body)
{
    using Body = std::remove_reference_t<F>;
    parallel_run(nt < 1 ? 1 : nt, [](void* ctx, int t, int n) { (*static_cast<Body*>(ctx))(t, n); }, &body);
}

/// body(begin, end) over [0, n) in contiguous blocks (multiples of align but the last) that
/// the team's threads claim as they finish: a thread slowed down (another process sharing its
/// core) takes fewer, and the region ends when the work does instead of waiting for an even
/// share from the slowest thread. Blocks shrink as the work runs out (each claim takes 1/(2 nt)
/// of what is left, at least 1/(16 nt) of the whole), so the caller, done with its share, waits
/// for a short last block rather than a quarter of a thread's share (measured at 2 threads on
/// T-small: the caller's waits per step went from ~10 to ~3 ms against 4 equal blocks per
/// thread). Callers make each element's result independent of the block it falls in, so the
/// bits do not depend on the schedule.
template <class F>
void parallel_blocks(std::int64_t n, int nt, std::int64_t align, F&& body)
{
    if (n <= 0) return;
    const std::int64_t units = (n + align - 1) / align;
    if (nt > units) nt = static_cast<int>(units);
    if (nt < 1) nt = 1;
    const std::int64_t least = units / (16 * nt) > 1 ? units / (16 * nt) : 1;
    std::atomic<std::int64_t> next{0};
    parallel_team(nt, [&](int, int team) {
        std::int64_t k = next.load(std::memory_order_relaxed);
        while (k < units) {
            const std::int64_t left = units - k, share = team == 1 ? left : left / (2 * team);
            const std::int64_t take = share > least ? share : least < left ? least : left;
            if (!next.compare_exchange_weak(k, k + take, std::memory_order_relaxed)) continue;
            const std::int64_t e = (k + take) * align;
            body(k * align, e < n ? e : n);
            k = next.load(std::memory_order_relaxed);
        }
    });
}

/// body(i) for i in [0, n) on nt threads, in blocks claimed as threads finish.
template <class F>
void parallel_for(std::int64_t n, int nt, F&& body)
{
    parallel_blocks(n, nt, 1, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) body(i);
    });
}

}  // namespace spool::detail
