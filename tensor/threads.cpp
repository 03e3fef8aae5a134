// The thread count and the thread pool (see tensor/parallel.hpp for why spool has its own).
#include "tensor/threads.hpp"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "tensor/errors.hpp"
#include "tensor/parallel.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SPOOL_PAUSE() _mm_pause()
#else
#define SPOOL_PAUSE() ((void)0)
#endif

namespace spool {

namespace {

int env_int(const char* name, int fallback)
{
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    return (end != v && n >= 0 && n < 1 << 20) ? static_cast<int>(n) : fallback;
}

/// SPOOL_NUM_THREADS, else OMP_NUM_THREADS (what users of OpenMP libraries already set),
/// else the CPUs this process may run on.
int default_threads()
{
    int n = env_int("SPOOL_NUM_THREADS", 0);
    if (n == 0) n = env_int("OMP_NUM_THREADS", 0);
    if (n == 0) {
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    }
    if (n == 0) n = static_cast<int>(std::thread::hardware_concurrency());
    return n > 0 ? n : 1;
}

std::atomic<int> g_threads{0};  // 0 = not decided yet

thread_local bool t_in_parallel = false;

using Clock = std::chrono::steady_clock;

/// Spin for at most spin (checking the clock every 64 pauses), then sleep in the kernel
/// until value differs from old. Returns the new value.
template <class T>
T wait_change(const std::atomic<T>& value, T old, Clock::duration spin)
{
    T v = value.load(std::memory_order_acquire);
    if (v != old) return v;
    const Clock::time_point until = Clock::now() + spin;
    for (unsigned i = 1;; ++i) {
        SPOOL_PAUSE();
        v = value.load(std::memory_order_acquire);
        if (v != old) return v;
        if (i % 64 == 0 && Clock::now() >= until) break;
    }
    for (;;) {
        value.wait(old, std::memory_order_acquire);
        v = value.load(std::memory_order_acquire);
        if (v != old) return v;
    }
}

class Pool {
public:
    Pool() : spin_(std::chrono::microseconds(env_int("SPOOL_SPIN_US", 50))) {}

    /// Never destroyed (see instance()): workers sleep in the kernel until the process ends.
    void run(int nt, void (*fn)(void*, int, int), void* ctx)
    {
        std::unique_lock lock(mutex_, std::try_to_lock);
        if (!lock.owns_lock()) {  // another user thread holds the pool: this region runs here
            run_serial(nt, fn, ctx);
            return;
        }
        const std::uint32_t current = generation_.load(std::memory_order_relaxed);
        while (static_cast<int>(workers_.size()) < nt - 1) {
            const int index = static_cast<int>(workers_.size()) + 1;
            workers_.emplace_back([this, index, current] { work(index, current); });
        }
        fn_ = fn;
        ctx_ = ctx;
        team_ = nt;
        error_ = nullptr;
        // every worker reports back, members or not, so none can lag into the next region
        pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
        member(0);
        // wait for the others even if member 0 threw: they use ctx, which lives in our caller
        for (int left = pending_.load(std::memory_order_acquire); left != 0;)
            left = wait_change(pending_, left, spin_);
        if (error_) std::rethrow_exception(error_);
    }

private:
    static void run_serial(int nt, void (*fn)(void*, int, int), void* ctx)
    {
        const bool outer = t_in_parallel;
        t_in_parallel = true;
        try {
            for (int t = 0; t < nt; ++t) fn(ctx, t, nt);
        } catch (...) {
            t_in_parallel = outer;
            throw;
        }
        t_in_parallel = outer;
    }

    void member(int t)
    {
        t_in_parallel = true;
        try {
            fn_(ctx_, t, team_);
        } catch (...) {
            std::lock_guard g(error_mutex_);
            if (!error_) error_ = std::current_exception();
        }
        t_in_parallel = false;
    }

    void work(int index, std::uint32_t seen)
    {
        for (;;) {
            seen = wait_change(generation_, seen, spin_);
            if (index < team_) member(index);  // else a smaller team this time
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
        }
    }

    std::mutex mutex_;
    std::vector<std::thread> workers_;
    std::atomic<std::uint32_t> generation_{0};
    std::atomic<int> pending_{0};
    void (*fn_)(void*, int, int) = nullptr;
    void* ctx_ = nullptr;
    int team_ = 0;
    std::mutex error_mutex_;
    std::exception_ptr error_;
    Clock::duration spin_;
};

Pool* g_pool = nullptr;
std::once_flag g_pool_once;

Pool& instance()
{
    // Leaked on purpose: its threads never exit, so there is nothing to join at exit, and
    // no static destructor can run while a region is in flight. After fork() the child has
    // none of the workers: it gets a fresh pool (the old one is abandoned).
    std::call_once(g_pool_once, [] {
        g_pool = new Pool;
        pthread_atfork(nullptr, nullptr, [] { g_pool = new Pool; });
    });
    return *g_pool;
}

}  // namespace

void set_num_threads(int n)
{
    SPOOL_CHECK(n >= 1, ValueError, "set_num_threads: thread count must be >= 1; got ", n);
    g_threads.store(n, std::memory_order_relaxed);
}

int get_num_threads()
{
    int n = g_threads.load(std::memory_order_relaxed);
    if (n == 0) {
        n = default_threads();
        g_threads.store(n, std::memory_order_relaxed);
    }
    return n;
}

namespace detail {

void parallel_run(int nt, void (*fn)(void*, int, int), void* ctx)
{
    if (nt <= 1 || t_in_parallel) {
        for (int t = 0; t < nt; ++t) fn(ctx, t, nt);
        return;
    }
    instance().run(nt, fn, ctx);
}

bool in_parallel() { return t_in_parallel; }

}  // namespace detail

}  // namespace spool
