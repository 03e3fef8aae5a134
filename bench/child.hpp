// Shared by the benchmarks that run each side in a process of its own (train_step, decode):
// finding the programs, starting a child with its environment and reading its lines, and
// naming the OpenBLAS kernel set the LibTorch peer should use. Header-only, bench-only.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bench/bench_util.hpp"

namespace spool::bench {

/// The environment a child gets: variables set, variables removed.
struct ChildEnv {
    std::vector<std::pair<std::string, std::string>> set;
    std::vector<std::string> unset;
};

/// Runs args[0] with args, each stdout line handed to on_line; returns the child's peak RSS
/// in MiB. Throws when the child cannot start or exits with a failure.
inline double run_child_process(const std::vector<std::string>& args, const ChildEnv& env,
                                const std::function<void(const char*)>& on_line)
{
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("bench: pipe failed");
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("bench: fork failed");
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        for (const auto& name : env.unset) unsetenv(name.c_str());
        for (const auto& [name, value] : env.set) setenv(name.c_str(), value.c_str(), 1);
        std::vector<std::string> copy = args;
        std::vector<char*> argv;
        for (auto& a : copy) argv.push_back(a.data());
        argv.push_back(nullptr);
        execv(copy[0].c_str(), argv.data());
        _exit(127);
    }
    close(fds[1]);
    FILE* in = fdopen(fds[0], "r");
    char line[1024];
    while (std::fgets(line, sizeof line, in)) on_line(line);
    std::fclose(in);
    int status = 0;
    rusage ru{};
    wait4(pid, &status, 0, &ru);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::string cmd;
        for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
        throw std::runtime_error("bench: child failed: " + cmd);
    }
    return double(ru.ru_maxrss) / 1024.0;
}

/// This program's path.
inline std::string self_path()
{
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, std::size_t(n)) : "/proc/self/exe";
}

/// The program `name` beside this one, or "" when it was not built.
inline std::string sibling_program(const std::string& name)
{
    const std::string self = self_path();
    const std::string path = self.substr(0, self.rfind('/') + 1) + name;
    return access(path.c_str(), X_OK) == 0 ? path : "";
}

/// The first line `program arg` prints (trailing blanks removed), or "unknown".
inline std::string first_line_of(const std::string& program, const std::string& arg)
{
    FILE* p = popen(("'" + program + "' " + arg).c_str(), "r");
    if (p == nullptr) return "unknown";
    char line[256] = {};
    std::string out = std::fgets(line, sizeof line, p) ? line : "unknown";
    pclose(p);
    out.erase(out.find_last_not_of(" \n") + 1);
    return out;
}

/// Debian's OpenBLAS picks its kernels at run time and falls back to generic SSE3 code
/// ("Prescott") on CPUs newer than it knows, and gives AMD Zen 4 and 5 its AVX2 kernels
/// ("Haswell" / "Zen") though they run AVX-512 (on Zen 5 its SkylakeX kernels are 2x faster:
/// 197 against 107 GFLOP/s on 2048x256x1024 at 1 thread); the peer then runs at a fraction of its
/// speed. The newest kernel set the CPU can run instead (for OPENBLAS_CORETYPE), or "" to keep
/// OpenBLAS's own choice.
inline std::string best_openblas_core(const std::string& detected)
{
    const bool generic = detected == "Prescott" || detected == "Core2" || detected == "Nehalem" ||
                         detected == "Sandybridge";
    const bool avx2 = detected == "Haswell" || detected == "Zen";
    if (!generic && !avx2) return "";
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return "SkylakeX";
    if (generic && __builtin_cpu_supports("avx2")) return "Haswell";
    return "";
}

/// A thread setting "ATEN/BLAS" (or "N" for both) as the two numbers.
inline std::pair<int, int> parse_setting(const std::string& setting)
{
    const auto slash = setting.find('/');
    const int aten = std::atoi(setting.substr(0, slash).c_str());
    const int blas = slash == std::string::npos ? aten : std::atoi(setting.substr(slash + 1).c_str());
    return {aten, blas};
}

/// The environment of a child: spool's as given minus the OpenMP wait settings (spool makes
/// its own); LibTorch's with OMP_WAIT_POLICY=passive (its best setting on these machines)
/// and, if one is named, OPENBLAS_CORETYPE.
inline ChildEnv child_env(bool spool_side, const std::string& openblas_core)
{
    ChildEnv env;
    if (spool_side) {
        env.unset = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"};
    } else {
        env.set.emplace_back("OMP_WAIT_POLICY", "passive");
        if (!openblas_core.empty()) env.set.emplace_back("OPENBLAS_CORETYPE", openblas_core);
    }
    return env;
}

/// A LibTorch child's "CORE <kernel set>" line: the name into core. False for other lines.
inline bool read_core_line(const char* line, std::string& core)
{
    if (std::strncmp(line, "CORE ", 5) != 0) return false;
    core = std::string(line + 5);
    core.erase(core.find_last_not_of(" \n") + 1);
    return true;
}

/// Asks the peer program (with --probe) which kernels its OpenBLAS picks, notes that and the
/// OPENBLAS_CORETYPE the LibTorch children will get on the machine line; returns the latter
/// ("" = OpenBLAS's own choice, always so with keep).
inline std::string choose_openblas_core(Json& machine, const std::string& peer, bool keep)
{
    const std::string detected = first_line_of(peer, "--probe");
    const std::string core = keep ? "" : best_openblas_core(detected);
    machine.str("openblas_detected", detected).str("openblas_coretype_set", core.empty() ? "no" : core);
    return core;
}

/// "1,2" -> {1, 2}
inline std::vector<int> parse_int_list(const std::string& s)
{
    std::vector<int> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(std::atoi(item.c_str()));
    return out;
}

/// The value after argv[i] (i advanced); without one, usage() and exit 2.
inline std::string next_arg(int argc, char** argv, int& i, void (*usage)())
{
    if (i + 1 >= argc) {
        usage();
        std::exit(2);
    }
    return argv[++i];
}

}  // namespace spool::bench
