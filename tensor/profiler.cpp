#include "tensor/profiler.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string_view>
#include <unordered_map>

namespace spool::profiler {

namespace detail {
std::atomic<bool> g_enabled{false};
}  // namespace detail

namespace {

thread_local Scope* t_top = nullptr;     // the innermost open region on this thread
thread_local std::uint64_t t_bytes = 0;  // bytes allocated on this thread while profiling was on

struct Stat {
    std::int64_t calls = 0, total_ns = 0, self_ns = 0;
    std::uint64_t bytes = 0, self_bytes = 0;
};

struct NameHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// Keyed by the name's text, not its address: an optimizer's name is a std::string that may
// be gone (and its address reused) by the time the report is printed.
struct Table {
    std::mutex mu;
    std::unordered_map<std::string, Stat[pass_count], NameHash, std::equal_to<>> stats;
};

Table& table()
{
    static Table* t = new Table;  // never destroyed: the exit report and late regions use it
    return *t;
}

std::int64_t now_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string json_escape(const std::string& s)
{
    std::string r;
    for (char c : s) {
        if (c == '"' || c == '\\') r += '\\';
        r += c;
    }
    return r;
}

// ---- SPOOL_PROFILE ------------------------------------------------------------------------
// 1 | table | on | true: the table on stderr at exit; json: JSON lines on stderr at exit;
// any other non-empty value but 0 | off | false: JSON lines written to that path at exit.

std::string& exit_target()
{
    static std::string* s = new std::string;
    return *s;
}

void report_at_exit()
{
    const std::string& target = exit_target();
    if (target == "table") {
        report(std::cerr);
    } else if (target == "json") {
        report_json(std::cerr);
    } else {
        std::ofstream f(target);
        report_json(f);
        if (f) std::cerr << "spool profile: " << rows().size() << " rows written to " << target << "\n";
        else std::cerr << "spool profile: cannot write " << target << "\n";
    }
}

const bool env_read = [] {
    const char* v = std::getenv("SPOOL_PROFILE");
    if (!v || !*v) return true;
    const std::string_view s(v);
    if (s == "0" || s == "off" || s == "false") return true;
    exit_target() = (s == "1" || s == "on" || s == "true" || s == "table") ? std::string("table") : std::string(s);
    enable();
    std::atexit(report_at_exit);
    return true;
}();

}  // namespace

const char* pass_name(Pass p)
{
    switch (p) {
    case Pass::forward: return "fwd";
    case Pass::backward: return "bwd";
    case Pass::optimizer: return "optim";
    }
    return "?";
}

void detail::count_alloc(std::size_t bytes) { t_bytes += bytes; }

void enable() { detail::g_enabled.store(true, std::memory_order_relaxed); }
void disable() { detail::g_enabled.store(false, std::memory_order_relaxed); }

void reset()
{
    Table& t = table();
    std::lock_guard<std::mutex> lock(t.mu);
    t.stats.clear();
}

// ---- regions ---------------------------------------------------------------------------------

void Scope::begin(const char* name, Pass pass)
{
    name_ = name;
    pass_ = pass;
    parent_ = t_top;
    t_top = this;
    child_ns_ = 0;
    child_bytes_ = 0;
    bytes0_ = t_bytes;
    t0_ns_ = now_ns();  // last, so the bookkeeping above is not timed
}

// Scopes live on the stack, so they end in the reverse order of their begin(): the parent
// is still open and hears of this region's total, which it subtracts from its own self time.
void Scope::end() noexcept
{
    const std::int64_t total = now_ns() - t0_ns_;
    const std::uint64_t bytes = t_bytes - bytes0_;
    t_top = parent_;
    if (parent_) {
        parent_->child_ns_ += total;
        parent_->child_bytes_ += bytes;
    }
    try {
        Table& t = table();
        std::lock_guard<std::mutex> lock(t.mu);
        auto it = t.stats.find(std::string_view(name_));
        if (it == t.stats.end()) it = t.stats.try_emplace(std::string(name_)).first;
        Stat& s = it->second[static_cast<int>(pass_)];
        ++s.calls;
        s.total_ns += total;
        s.self_ns += total - child_ns_;
        s.bytes += bytes;
        s.self_bytes += bytes - child_bytes_;
    } catch (...) {  // out of memory for a new row: this call goes uncounted
    }
    name_ = nullptr;
}

// ---- reports -----------------------------------------------------------------------------------

std::vector<Row> rows()
{
    std::vector<Row> r;
    {
        Table& t = table();
        std::lock_guard<std::mutex> lock(t.mu);
        for (const auto& [name, by_pass] : t.stats)
            for (int p = 0; p < pass_count; ++p) {
                const Stat& s = by_pass[p];
                if (s.calls == 0) continue;
                r.push_back({.name = name,
                             .pass = static_cast<Pass>(p),
                             .calls = s.calls,
                             .total_ms = static_cast<double>(s.total_ns) * 1e-6,
                             .self_ms = static_cast<double>(s.self_ns) * 1e-6,
                             .bytes = static_cast<std::int64_t>(s.bytes),
                             .self_bytes = static_cast<std::int64_t>(s.self_bytes)});
            }
    }
    std::sort(r.begin(), r.end(), [](const Row& a, const Row& b) {
        if (a.total_ms != b.total_ms) return a.total_ms > b.total_ms;
        if (a.name != b.name) return a.name < b.name;
        return a.pass < b.pass;
    });
    return r;
}

namespace {
/// All profiled time: the self times add up to the time spent inside outermost regions.
double profiled_ms(const std::vector<Row>& rs)
{
    double ms = 0;
    for (const Row& r : rs) ms += r.self_ms;
    return ms;
}
}  // namespace

void report(std::ostream& os)
{
    const std::vector<Row> rs = rows();
    const double all = profiled_ms(rs);
    std::int64_t calls = 0;
    std::size_t w = 2;
    for (const Row& r : rs) {
        calls += r.calls;
        w = std::max(w, r.name.size());
    }
    char line[512];
    std::snprintf(line, sizeof line, "spool profile: %.3f ms profiled in %lld calls, sorted by total time\n", all,
                  static_cast<long long>(calls));
    os << line;
    const int nw = static_cast<int>(w);
    std::snprintf(line, sizeof line, "%-*s  %-5s  %9s  %11s  %11s  %7s  %10s  %10s\n", nw, "op", "pass", "calls",
                  "total ms", "self ms", "self %", "mean us", "MB alloc");
    os << line;
    for (const Row& r : rs) {
        std::snprintf(line, sizeof line, "%-*s  %-5s  %9lld  %11.3f  %11.3f  %6.1f%%  %10.2f  %10.2f\n", nw,
                      r.name.c_str(), pass_name(r.pass), static_cast<long long>(r.calls), r.total_ms, r.self_ms,
                      all > 0 ? 100.0 * r.self_ms / all : 0.0, 1e3 * r.total_ms / static_cast<double>(r.calls),
                      static_cast<double>(r.bytes) * 1e-6);
        os << line;
    }
}

void report_json(std::ostream& os)
{
    const std::vector<Row> rs = rows();
    const double all = profiled_ms(rs);
    char line[768];
    for (const Row& r : rs) {
        std::snprintf(line, sizeof line,
                      "{\"profile\":\"op\",\"name\":\"%s\",\"pass\":\"%s\",\"calls\":%lld,\"total_ms\":%.6f,"
                      "\"self_ms\":%.6f,\"self_pct\":%.3f,\"mean_us\":%.4f,\"bytes\":%lld,\"self_bytes\":%lld}\n",
                      json_escape(r.name).c_str(), pass_name(r.pass), static_cast<long long>(r.calls), r.total_ms,
                      r.self_ms, all > 0 ? 100.0 * r.self_ms / all : 0.0,
                      1e3 * r.total_ms / static_cast<double>(r.calls), static_cast<long long>(r.bytes),
                      static_cast<long long>(r.self_bytes));
        os << line;
    }
}

}  // namespace spool::profiler
