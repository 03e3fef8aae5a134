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

/// The CPUs the calling thread may run on (its affinity mask); empty when unknown.
cpu_set_t allowed_cpus()
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) CPU_ZERO(&set);
    return set;
}

/// SPOOL_NUM_THREADS, else OMP_NUM_THREADS (what users of OpenMP libraries already set),
/// else the CPUs this process may run on.
int default_threads()
{
    int n = env_int("SPOOL_NUM_THREADS", 0);
    if (n == 0) n = env_int("OMP_NUM_THREADS", 0);
    if (n == 0) {
        const cpu_set_t set = allowed_cpus();
        n = CPU_COUNT(&set);
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

/// A region is open from when the caller publishes it until the caller has finished its own
/// share: workers join while it is open, each taking one of nt - 1 slots, and the caller
/// then waits only for those that joined. A worker that is not running (its core taken by
/// another process) is never waited for; the caller and the others do its share, because
/// every body claims its work dynamically (parallel_blocks).
class Pool {
public:
    Pool() : spin_(std::chrono::microseconds(env_int("SPOOL_SPIN_US", 50))), allowed_(allowed_cpus()) {}

    /// Never destroyed (see instance()): workers sleep in the kernel until the process ends.
    void run(int nt, void (*fn)(void*, int, int), void* ctx)
    {
        std::unique_lock lock(mutex_, std::try_to_lock);
        if (!lock.owns_lock()) {  // another user thread holds the pool: this region runs here
            run_serial(nt, fn, ctx);
            return;
        }
        caller_cpu_.store(sched_getcpu(), std::memory_order_relaxed);
        const std::uint32_t current = generation_.load(std::memory_order_relaxed);
        while (static_cast<int>(workers_.size()) < nt - 1) workers_.emplace_back([this, current] { work(current); });
        fn_ = fn;
        ctx_ = ctx;
        team_ = nt;
        error_ = nullptr;
        finished_.store(0, std::memory_order_relaxed);
        slots_.store(nt - 1, std::memory_order_release);  // opens the region
        generation_.fetch_add(1, std::memory_order_release);
        generation_.notify_all();
        member(0);
        // close: slots nobody took are withdrawn; wait for those who joined (they use ctx,
        // which lives in our caller), even if member 0 threw
        const int unclaimed = slots_.exchange(closed, std::memory_order_acq_rel);
        const int joined = nt - 1 - std::max(unclaimed, 0);
        for (int done = finished_.load(std::memory_order_acquire); done != joined;)
            done = wait_change(finished_, done, spin_);
        if (error_) std::rethrow_exception(error_);
    }

private:
    static constexpr int closed = -(1 << 30);

    static void run_serial(int nt, void (*fn)(void*, int, int), void* ctx)
    {
        const bool outer = t_in_parallel;
        t_in_parallel = true;
        try {
            fn(ctx, 0, nt);  // member 0 claims all the work
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

    /// A worker that finds itself on the CPU the caller opened the region on moves off it
    /// (its affinity: the process's CPUs but that one). The scheduler wakes a worker on the
    /// waker's CPU when no CPU is idle — under contention (another process busy on the other
    /// core) the caller and its worker then took turns on one core while the other process had
    /// a core to itself, and a 2-thread GEMM ran no faster than 1 thread. Apart, the two share
    /// out the two cores with the other process (docs/performance.md, session 11). It happens
    /// only when they meet, a system call each time; on an idle machine they rarely do.
    void keep_off_caller_cpu()
    {
        const int cpu = caller_cpu_.load(std::memory_order_relaxed);
        if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getcpu() != cpu || !CPU_ISSET(cpu, &allowed_)) return;
        cpu_set_t others = allowed_;
        CPU_CLR(cpu, &others);
        if (CPU_COUNT(&others) > 0) pthread_setaffinity_np(pthread_self(), sizeof others, &others);
    }

    /// Take a slot of the open region: its member index, or 0 when it is closed or full.
    int join()
    {
        int free = slots_.load(std::memory_order_acquire);
        while (free > 0) {
            if (slots_.compare_exchange_weak(free, free - 1, std::memory_order_acq_rel, std::memory_order_acquire))
                return team_ - free;  // slots nt-1 .. 1 -> members 1 .. nt-1
        }
        return 0;
    }

    void work(std::uint32_t seen)
    {
        for (;;) {
            seen = wait_change(generation_, seen, spin_);
            const int t = join();
            if (t == 0) continue;  // too late: the caller closed this region
            keep_off_caller_cpu();
            member(t);
            finished_.fetch_add(1, std::memory_order_acq_rel);
            finished_.notify_one();
        }
    }

    std::mutex mutex_;
    std::vector<std::thread> workers_;
    std::atomic<std::uint32_t> generation_{0};
    std::atomic<int> slots_{closed};   // free member slots of the open region; closed when none is open
    std::atomic<int> finished_{0};     // members of the region that are done
    void (*fn_)(void*, int, int) = nullptr;
    void* ctx_ = nullptr;
    int team_ = 0;
    std::mutex error_mutex_;
    std::exception_ptr error_;
    Clock::duration spin_;
    std::atomic<int> caller_cpu_{-1};  // the CPU the caller opened the current region on
    cpu_set_t allowed_;                // the CPUs this process may run on, when the pool was made (none known: workers stay put)
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
        fn(ctx, 0, nt < 1 ? 1 : nt);  // member 0 claims all the work
        return;
    }
    instance().run(nt, fn, ctx);
}

bool in_parallel() { return t_in_parallel; }

}  // namespace detail

}  // namespace spool
