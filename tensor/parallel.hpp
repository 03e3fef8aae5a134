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
#include <vector>

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

/// Items [0, n) cut into one contiguous range per thread. A thread takes runs from the front
/// of its own range, in order; when that is empty, from the back of another thread's range.
/// A run is half of what is left in the range it comes from, within [least, most] items, so
/// runs shrink as the work runs out and the last thread to finish holds the others up for a
/// short run only. The same item goes to the same thread from one region to the next when no
/// thread is late (a [rows, features] tensor's rows stay in the cache of the core that wrote
/// them). One 64-bit word per range (front | back << 32): a take is one compare-and-swap.
/// In an unnamed namespace: each translation unit has its own copy, so the per-instruction-set
/// compilations of the kernels (tensor/*_arch.cpp) share no out-of-line definition of it
/// (scripts/check_arch_symbols.py).
namespace {

class RangeClaims {
public:
    /// Items [first, first + count); count 0 when none was left.
    struct Run {
        std::int64_t first = 0, count = 0;
    };
    /// n < 2^32.
    RangeClaims(std::int64_t n, int parts) : ranges_(static_cast<std::size_t>(parts))
    {
        for (int p = 0; p < parts; ++p)
            ranges_[std::size_t(p)].store(pack(n * p / parts, n * (p + 1) / parts), std::memory_order_relaxed);
    }
    /// Thread t's next run (most >= least >= 1).
    Run take(int t, std::int64_t least, std::int64_t most)
    {
        const int parts = static_cast<int>(ranges_.size());
        for (int k = 0; k < parts; ++k)
            if (Run r = take_from(ranges_[std::size_t((t + k) % parts)], k == 0, least, most); r.count > 0) return r;
        return {};
    }

    /// Items not yet taken, over every range (a snapshot: other threads may take some meanwhile).
    std::int64_t left() const
    {
        std::int64_t n = 0;
        for (const auto& r : ranges_) {
            const auto [lo, hi] = unpack(r.load(std::memory_order_relaxed));
            n += hi > lo ? hi - lo : 0;
        }
        return n;
    }

private:
    struct Span {
        std::int64_t lo, hi;
    };
    static std::uint64_t pack(std::int64_t lo, std::int64_t hi) { return std::uint64_t(lo) | std::uint64_t(hi) << 32; }
    static Span unpack(std::uint64_t v) { return {std::int64_t(v & 0xffffffffu), std::int64_t(v >> 32)}; }
    static Run take_from(std::atomic<std::uint64_t>& r, bool front, std::int64_t least, std::int64_t most)
    {
        std::uint64_t v = r.load(std::memory_order_relaxed);
        for (;;) {
            const auto [lo, hi] = unpack(v);
            if (lo >= hi) return {};
            std::int64_t c = (hi - lo) / 2;
            c = c < least ? least : c > most ? most : c;
            if (c > hi - lo) c = hi - lo;
            const std::uint64_t next = front ? pack(lo + c, hi) : pack(lo, hi - c);
            if (r.compare_exchange_weak(v, next, std::memory_order_relaxed)) return {front ? lo : hi - c, c};
        }
    }
    std::vector<std::atomic<std::uint64_t>> ranges_;
};

}  // namespace

/// body(begin, end) over [0, n) in contiguous blocks (multiples of align but the last) that
/// the team's threads claim as they finish (RangeClaims): a thread slowed down (another process
/// sharing its core) takes fewer, and the region ends when the work does instead of waiting for
/// an even share from the slowest thread. Blocks shrink as the work runs out (at least 1/(16 nt)
/// of the whole), so the caller, done with its share, waits for a short last block rather than
/// a quarter of a thread's share (measured at 2 threads on T-small: the caller's waits per step
/// went from ~10 to ~3 ms against 4 equal blocks per thread claimed from one counter; claiming
/// from per-thread ranges rather than one counter then took the step's memory-bound ops —
/// dropout's backward, add, layer norm, attention — from 25.5 to 23.1 ms). Callers
/// make each element's result independent of the block it falls in, so the bits do not depend
/// on the schedule.
template <class F>
void parallel_blocks(std::int64_t n, int nt, std::int64_t align, F&& body)
{
    if (n <= 0) return;
    std::int64_t units = (n + align - 1) / align;
    while (units >= (std::int64_t(1) << 31)) {  // RangeClaims' limit: coarser blocks
        align *= 2;
        units = (n + align - 1) / align;
    }
    if (nt > units) nt = static_cast<int>(units);
    if (nt <= 1) return body(std::int64_t(0), n);
    const std::int64_t least = units / (16 * nt) > 1 ? units / (16 * nt) : 1;
    RangeClaims claims(units, nt);
    parallel_team(nt, [&](int t, int) {
        for (RangeClaims::Run r = claims.take(t, least, units); r.count > 0; r = claims.take(t, least, units)) {
            const std::int64_t e = (r.first + r.count) * align;
            body(r.first * align, e < n ? e : n);
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
