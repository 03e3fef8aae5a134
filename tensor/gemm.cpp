// The public GEMM entry points, and the choice of instruction set for every kernel: each GEMM call
// goes to one compilation of tensor/gemm_arch.cpp, the other hot loops to the same instruction
// set's compilation of tensor/kernels_arch.cpp (kernel_table()). A -Dnative=true build has one
// (the build machine's instruction set); a portable build (-Dnative=false) has three on x86-64 —
// avx512 (F, BW, DQ, VL), avx2 (+ FMA) and the x86-64 baseline (SSE2) — and takes the best this
// CPU runs, once, at the first call. SPOOL_KERNEL=<name> (SPOOL_GEMM_KERNEL, its older name, when
// it is unset) or set_gemm_kernel picks another available one.
#include "tensor/gemm.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "tensor/errors.hpp"
#include "tensor/gemm_arch.hpp"
#include "tensor/kernels_arch.hpp"

namespace spool::kernels {

namespace {

/// One instruction set's compilations: the GEMM and the other hot loops, named alike.
struct Arch {
    const GemmTable* gemm;
    const KernelTable* loops;
    const char* name;
};

std::vector<Arch> available_arches()
{
#if defined(SPOOL_ARCH_PORTABLE)
    __builtin_cpu_init();  // the checks below include the OS's support for the wider registers
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    std::vector<Arch> v;
    if (avx512) v.push_back({&avx512::gemm_table(), &avx512::kernel_table(), avx512::gemm_table().name});
    if (avx2) v.push_back({&avx2::gemm_table(), &avx2::kernel_table(), avx2::gemm_table().name});
    v.push_back({&x86_64::gemm_table(), &x86_64::kernel_table(), x86_64::gemm_table().name});
    return v;
#else
    return {{&native::gemm_table(), &native::kernel_table(), native::gemm_table().name}};
#endif
}

const std::vector<Arch>& arches()
{
    static const std::vector<Arch> a = available_arches();
    return a;
}

/// "avx512" and "avx2" and "x86_64" name the portable build's compilations too.
bool names(const Arch& t, const char* name)
{
    if (std::strcmp(t.name, name) == 0) return true;
    const std::string n = t.name;
    if (std::strcmp(name, "avx512") == 0) return n.rfind("avx512", 0) == 0;
    if (std::strcmp(name, "avx2") == 0) return n.find("avx2") != std::string::npos && n.rfind("avx512", 0) != 0;
    if (std::strcmp(name, "x86_64") == 0) return n == "sse2";
    return false;
}

const Arch* find(const char* name)
{
    for (const Arch& a : arches())
        if (names(a, name)) return &a;
    return nullptr;
}

std::string listed()
{
    std::string s;
    for (const Arch& a : arches()) s += (s.empty() ? "" : ", ") + std::string(a.name);
    return s;
}

std::atomic<const Arch*> g_arch{nullptr};

const Arch& arch()
{
    const Arch* a = g_arch.load(std::memory_order_acquire);
    if (a) return *a;
    a = &arches().front();
    const char* var = "SPOOL_KERNEL";
    const char* env = std::getenv(var);
    if (!env || !*env) env = std::getenv(var = "SPOOL_GEMM_KERNEL");
    if (env && *env) {
        const Arch* chosen = find(env);
        SPOOL_CHECK(chosen, ValueError, var, ": '", env, "' is not a kernel set this build runs on this CPU (", listed(),
                    ")");
        a = chosen;
    }
    g_arch.store(a, std::memory_order_release);
    return *a;
}

const GemmTable& table() { return *arch().gemm; }

}  // namespace

const KernelTable& kernel_table() { return *arch().loops; }

std::vector<const char*> gemm_kernels()
{
    std::vector<const char*> v;
    for (const Arch& a : arches()) v.push_back(a.name);
    return v;
}

const char* gemm_kernel() { return arch().name; }

void set_gemm_kernel(const char* name)
{
    const Arch* a = find(name);
    SPOOL_CHECK(a, ValueError, "set_gemm_kernel: '", name, "' is not a GEMM kernel this build runs on this CPU (",
                listed(), ")");
    g_arch.store(a, std::memory_order_release);
}

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc, const T* bias)
{
    const GemmTable& t = table();
    if constexpr (std::is_same_v<T, float>)
        t.gemm_f(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
    else
        t.gemm_d(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, bias);
}

template <class T>
void gemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta,
                  T* C, int64_t ldc, int64_t stride_c)
{
    const GemmTable& t = table();
    if constexpr (std::is_same_v<T, float>)
        t.batched_f(batch, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c);
    else
        t.batched_d(batch, trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t, const float*);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t, const double*);
template void gemm_batched<float>(int64_t, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                  int64_t, const float*, int64_t, int64_t, float, float*, int64_t, int64_t);
template void gemm_batched<double>(int64_t, bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                   int64_t, int64_t, const double*, int64_t, int64_t, double, double*, int64_t,
                                   int64_t);

}  // namespace spool::kernels
