// Shared by the benchmark programs: a monotonic clock, medians with min and max, and
// JSON-line printing. Timing lives here, never in tests.
#pragma once
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "tensor/gemm.hpp"

namespace spool::bench {

inline double now_s()
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Stats {
    double median = 0, min = 0, max = 0;
};

inline Stats stats_of(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    Stats s;
    if (v.empty()) return s;
    std::size_t n = v.size();
    s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    s.min = v.front();
    s.max = v.back();
    return s;
}

/// Builds one JSON object line field by field.
class Json {
public:
    explicit Json(const char* bench) { out_ = std::string("{\"bench\":\"") + bench + "\""; }
    Json& num(const char* key, double v)
    {
        char buf[64];
        std::snprintf(buf, sizeof buf, ",\"%s\":%.10g", key, v);
        out_ += buf;
        return *this;
    }
    Json& str(const char* key, const std::string& v)
    {
        out_ += std::string(",\"") + key + "\":\"" + v + "\"";
        return *this;
    }
    /// key (median), key_min, key_max
    Json& stats(const std::string& key, const Stats& s)
    {
        num(key.c_str(), s.median);
        num((key + "_min").c_str(), s.min);
        num((key + "_max").c_str(), s.max);
        return *this;
    }
    void print() const
    {
        std::printf("%s}\n", out_.c_str());
        std::fflush(stdout);
    }

private:
    std::string out_;
};

/// /proc/cpuinfo's first "model name".
inline std::string cpu_model()
{
    std::ifstream cpuinfo("/proc/cpuinfo");
    for (std::string line; std::getline(cpuinfo, line);)
        if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
    return "unknown";
}

/// The instruction set the library outside its hot loops was compiled for (what xsimd's default
/// arch follows); the GEMM's and the other hot loops' is chosen at run time (gemm_kernel()).
inline const char* baseline_kernel()
{
#if defined(__AVX512BW__)
    return "avx512bw";
#elif defined(__AVX512F__)
    return "avx512f";
#elif defined(__AVX2__) && defined(__FMA__)
    return "fma3+avx2";
#elif defined(__AVX__)
    return "avx";
#else
    return "sse2";
#endif
}

/// The kernel set spool runs: GEMM and hot loops (tensor/gemm.hpp).
inline const char* gemm_kernel() { return spool::kernels::gemm_kernel(); }

/// The machine a benchmark ran on: CPU model, spool's kernel set and baseline, the OS release.
inline Json machine_line(const char* bench)
{
    utsname u{};
    const std::string os = uname(&u) == 0 ? std::string(u.sysname) + " " + u.release : "unknown";
    Json j(bench);
    j.str("cpu", cpu_model()).str("spool_kernel", gemm_kernel()).str("spool_baseline", baseline_kernel()).str("os", os);
    return j;
}

/// A command-line option that sets a number: its name and the field it sets.
using NumberOption = std::pair<const char*, std::variant<std::int64_t*, int*, double*>>;

/// If a names one of options, sets its field from next() (and appends a and the value to
/// forwarded, if given) and returns true; otherwise false.
inline bool parse_number_option(const std::string& a, const std::function<std::string()>& next,
                                const std::vector<NumberOption>& options, std::vector<std::string>* forwarded = nullptr)
{
    for (const auto& [name, field] : options) {
        if (a != name) continue;
        const std::string v = next();
        std::visit([&](auto* f) { *f = static_cast<std::remove_pointer_t<decltype(f)>>(std::atof(v.c_str())); }, field);
        if (forwarded) forwarded->insert(forwarded->end(), {a, v});
        return true;
    }
    return false;
}

}  // namespace spool::bench
