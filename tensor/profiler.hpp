// The op-level profiler (docs/autograd.md, "Profiling"): call counts, total and self wall
// time, and bytes allocated per named region and pass — every op's forward, every backward
// closure the tape runs, the optimizer step — summed into one table like torch.profiler's
// key_averages(). Off by default; when off a region costs one relaxed load and a branch.
// On with SPOOL_PROFILE=1|json|<path> (report at exit) or profiler::enable(). Regions are
// timed on the thread that runs them, outside the kernels' parallel regions.
#pragma once
#include <atomic>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace spool::profiler {

/// Which pass a region belongs to: an op's forward, its backward closure, or an optimizer.
enum class Pass : std::uint8_t { forward, backward, optimizer };
inline constexpr int pass_count = 3;
/// "fwd", "bwd", "optim".
const char* pass_name(Pass p);

namespace detail {
extern std::atomic<bool> g_enabled;
/// Counts bytes allocated on this thread while profiling is on (called by the allocator).
void count_alloc(std::size_t bytes);
}  // namespace detail

/// True while profiling is on.
inline bool enabled() { return detail::g_enabled.load(std::memory_order_relaxed); }
/// Start (or resume) counting; what was counted before stays.
void enable();
/// Stop counting; regions already open still finish and count.
void disable();
/// Forget everything counted so far.
void reset();

/// One line of the table: a region's name and pass, summed over its calls.
struct Row {
    std::string name;
    Pass pass = Pass::forward;
    std::int64_t calls = 0;
    double total_ms = 0;           ///< wall time inside the region, nested regions included
    double self_ms = 0;            ///< total_ms minus the nested regions' total_ms
    std::int64_t bytes = 0;        ///< bytes spool's allocator handed out inside the region
    std::int64_t self_bytes = 0;   ///< bytes minus the nested regions' bytes
};

/// Every row so far, sorted by total time (longest first; ties by name, then pass).
std::vector<Row> rows();
/// The table: op, pass, calls, total ms, self ms, self % of all profiled time, mean µs, MB.
void report(std::ostream& os);
/// The same rows as JSON lines: {"profile":"op","name":…,"pass":…,"calls":…,…}.
void report_json(std::ostream& os);

/// Times one region while it lives, if profiling was on when it began. name must stay
/// valid until the region ends (a string literal, op_name()). Not copyable.
class Scope {
public:
    Scope() = default;  ///< inactive until begin()
    Scope(const char* name, Pass pass)
    {
        if (enabled()) begin(name, pass);
    }
    ~Scope()
    {
        if (name_) end();
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    /// Start timing (call once, on an inactive scope, only when enabled()).
    void begin(const char* name, Pass pass);

private:
    void end() noexcept;
    // only name_ is set while inactive: the fast path stores one pointer
    const char* name_ = nullptr;
    Pass pass_;
    Scope* parent_;
    std::int64_t t0_ns_, child_ns_;
    std::uint64_t bytes0_, child_bytes_;
};

}  // namespace spool::profiler
