// spool's thread pool and its work sharing (tensor/parallel.hpp): every index is handed out
// exactly once, in blocks aligned as asked, at any team size, nested or not.
#include <doctest/doctest.h>
#include <sched.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include "tensor/parallel.hpp"
#include "tensor/threads.hpp"

namespace {

/// Pins the calling thread to one CPU; false if the system refused.
bool pin_to(int cpu)
{
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return sched_setaffinity(0, sizeof one, &one) == 0;
}

struct ThreadScope {
    int saved = spool::get_num_threads();
    explicit ThreadScope(int n) { spool::set_num_threads(n); }
    ~ThreadScope() { spool::set_num_threads(saved); }
};

void check_blocks(std::int64_t n, int nt, std::int64_t align)
{
    INFO("n " << n << ", threads " << nt << ", align " << align);
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    std::atomic<int> bad_block{0}, calls{0};
    spool::detail::parallel_blocks(n, nt, align, [&](std::int64_t b, std::int64_t e) {
        calls.fetch_add(1);
        if (b % align != 0 || (e != n && e % align != 0) || b >= e || e > n) bad_block.fetch_add(1);
        for (std::int64_t i = b; i < e && i < n; ++i) hits[std::size_t(i)].fetch_add(1);
    });
    CHECK(bad_block.load() == 0);
    std::int64_t wrong = 0;
    for (const auto& h : hits) wrong += h.load() != 1;
    CHECK_MESSAGE(wrong == 0, wrong << " indices not handed out exactly once");
    if (n == 0) CHECK(calls.load() == 0);
    // one thread: the whole range in one call
    if (nt == 1 && n > 0) CHECK(calls.load() == 1);
}

}  // namespace

TEST_CASE("parallel_blocks hands out every index once, in aligned blocks, at any team size")
{
    for (int nt : {1, 2, 3, 5})
        for (std::int64_t align : {1, 4, 16})
            for (std::int64_t n : {0, 1, 3, 16, 17, 100, 1000, 12345, 100000}) {
                ThreadScope scope(nt);
                check_blocks(n, nt, align);
            }
}

TEST_CASE("parallel_for inside a parallel region runs on the calling thread and covers its range")
{
    ThreadScope scope(2);
    constexpr std::int64_t outer = 8, inner = 1000;
    std::vector<std::atomic<int>> hits(outer * inner);
    spool::detail::parallel_for(outer, 2, [&](std::int64_t o) {
        CHECK(spool::detail::in_parallel());
        spool::detail::parallel_for(inner, 2, [&](std::int64_t i) { hits[std::size_t(o * inner + i)].fetch_add(1); });
    });
    std::int64_t wrong = 0;
    for (const auto& h : hits) wrong += h.load() != 1;
    CHECK(wrong == 0);
    CHECK_FALSE(spool::detail::in_parallel());
}

TEST_CASE("RangeClaims: own range from the front in shrinking runs, then the others' from the back")
{
    using spool::detail::RangeClaims;
    RangeClaims claims(100, 2);  // ranges [0, 50) and [50, 100)
    std::vector<int> seen(100, 0);
    std::vector<RangeClaims::Run> runs;
    for (RangeClaims::Run r = claims.take(0, 2, 16); r.count > 0; r = claims.take(0, 2, 16)) {
        runs.push_back(r);
        for (std::int64_t i = r.first; i < r.first + r.count; ++i) ++seen[std::size_t(i)];
    }
    for (int s : seen) CHECK(s == 1);
    REQUIRE(runs.size() >= 4);
    // thread 0's own range first, in order: runs of min(16, half of what is left), at least 2
    CHECK(runs[0].first == 0);
    CHECK(runs[0].count == 16);
    CHECK(runs[1].first == 16);
    CHECK(runs[1].count == 16);  // 34 left: half is 17, capped at 16
    CHECK(runs[2].first == 32);
    CHECK(runs[2].count == 9);   // 18 left
    // then thread 1's range, from its back
    std::size_t k = 0;
    while (k < runs.size() && runs[k].first < 50) ++k;
    REQUIRE(k < runs.size());
    CHECK(runs[k].first + runs[k].count == 100);
    for (const auto& r : runs) {
        CHECK(r.count >= 1);
        CHECK(r.count <= 16);
    }
    // a thread that finds its own range taken steals without a run longer than `most`
    RangeClaims other(10, 3);
    CHECK(other.take(2, 1, 1).count == 1);
}

TEST_CASE("a worker that joins on the caller's CPU moves off it before it runs its share")
{
    // The caller pinned to one CPU and every other CPU of the process kept busy by a thread
    // pinned there (another process's work, as the scheduler sees it): no CPU is idle, so a
    // worker is often woken on the caller's CPU. It must run its share elsewhere.
    cpu_set_t saved;
    REQUIRE(sched_getaffinity(0, sizeof saved, &saved) == 0);
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &saved)) cpus.push_back(c);
    REQUIRE(!cpus.empty());
    const int mine = cpus[0];
    ThreadScope threads(2);
    spool::detail::parallel_team(2, [](int, int) {});  // the pool exists before the pinning
    std::atomic<bool> stop{false};
    std::vector<std::thread> busy;
    for (std::size_t k = 1; k < cpus.size(); ++k)
        busy.emplace_back([&stop, cpu = cpus[k]] {
            pin_to(cpu);
            while (!stop.load(std::memory_order_relaxed)) {}
        });
    REQUIRE(pin_to(mine));
    int worker_runs = 0, worker_on_caller_cpu = 0, caller_elsewhere = 0;
    for (int region = 0; region < 300; ++region) {
        std::atomic<int> cpu_of[2] = {-1, -1};
        std::atomic<long> work{0};
        spool::detail::parallel_team(2, [&](int t, int) {
            cpu_of[t].store(sched_getcpu());
            for (int i = 0; i < 100000; ++i) work.fetch_add(1, std::memory_order_relaxed);  // time for a worker to join
        });
        caller_elsewhere += cpu_of[0].load() != mine;
        if (cpu_of[1].load() >= 0) {
            ++worker_runs;
            worker_on_caller_cpu += cpu_of[1].load() == mine;
        }
    }
    stop.store(true);
    for (auto& b : busy) b.join();
    REQUIRE(sched_setaffinity(0, sizeof saved, &saved) == 0);
    CHECK(caller_elsewhere == 0);
    INFO(worker_runs << " of 300 regions joined by the worker; CPUs allowed " << cpus.size());
    if (cpus.size() > 1) CHECK(worker_on_caller_cpu == 0);
    else CHECK(worker_on_caller_cpu == worker_runs);  // one CPU: nowhere else to go
}
