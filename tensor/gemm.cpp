// The public GEMM entry points: each call goes to one compilation of tensor/gemm_arch.cpp. A
// -Dnative=true build has one (the build machine's instruction set); a portable build
// (-Dnative=false) has three on x86-64 — avx512 (F, BW, DQ, VL), avx2 (+ FMA) and the x86-64
// baseline (SSE2) — and takes the best this CPU runs, once, at the first call.
// SPOOL_GEMM_KERNEL=<name> (or set_gemm_kernel) picks another available one.
#include "tensor/gemm.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "tensor/errors.hpp"
#include "tensor/gemm_arch.hpp"

namespace spool::kernels {

namespace {

std::vector<const GemmTable*> available_tables()
{
#if defined(SPOOL_GEMM_PORTABLE)
    __builtin_cpu_init();  // the checks below include the OS's support for the wider registers
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    std::vector<const GemmTable*> v;
    if (avx512) v.push_back(&avx512::gemm_table());
    if (avx2) v.push_back(&avx2::gemm_table());
    v.push_back(&x86_64::gemm_table());
    return v;
#else
    return {&native::gemm_table()};
#endif
}

const std::vector<const GemmTable*>& tables()
{
    static const std::vector<const GemmTable*> t = available_tables();
    return t;
}

/// "avx512" and "avx2" and "x86_64" name the portable build's compilations too.
bool names(const GemmTable& t, const char* name)
{
    if (std::strcmp(t.name, name) == 0) return true;
    const std::string n = t.name;
    if (std::strcmp(name, "avx512") == 0) return n.rfind("avx512", 0) == 0;
    if (std::strcmp(name, "avx2") == 0) return n.find("avx2") != std::string::npos && n.rfind("avx512", 0) != 0;
    if (std::strcmp(name, "x86_64") == 0) return n == "sse2";
    return false;
}

const GemmTable* find(const char* name)
{
    for (const GemmTable* t : tables())
        if (names(*t, name)) return t;
    return nullptr;
}

std::string listed()
{
    std::string s;
    for (const GemmTable* t : tables()) s += (s.empty() ? "" : ", ") + std::string(t->name);
    return s;
}

std::atomic<const GemmTable*> g_table{nullptr};

const GemmTable& table()
{
    const GemmTable* t = g_table.load(std::memory_order_acquire);
    if (t) return *t;
    t = tables().front();
    if (const char* env = std::getenv("SPOOL_GEMM_KERNEL"); env && *env) {
        const GemmTable* chosen = find(env);
        SPOOL_CHECK(chosen, ValueError, "SPOOL_GEMM_KERNEL: '", env, "' is not a GEMM kernel this build runs on this CPU (",
                    listed(), ")");
        t = chosen;
    }
    g_table.store(t, std::memory_order_release);
    return *t;
}

}  // namespace

std::vector<const char*> gemm_kernels()
{
    std::vector<const char*> v;
    for (const GemmTable* t : tables()) v.push_back(t->name);
    return v;
}

const char* gemm_kernel() { return table().name; }

void set_gemm_kernel(const char* name)
{
    const GemmTable* t = find(name);
    SPOOL_CHECK(t, ValueError, "set_gemm_kernel: '", name, "' is not a GEMM kernel this build runs on this CPU (",
                listed(), ")");
    g_table.store(t, std::memory_order_release);
}

template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc)
{
    const GemmTable& t = table();
    if constexpr (std::is_same_v<T, float>)
        t.gemm_f(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        t.gemm_d(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
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
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                           const double*, int64_t, double, double*, int64_t);
template void gemm_batched<float>(int64_t, bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                  int64_t, const float*, int64_t, int64_t, float, float*, int64_t, int64_t);
template void gemm_batched<double>(int64_t, bool, bool, int64_t, int64_t, int64_t, double, const double*,
                                   int64_t, int64_t, const double*, int64_t, int64_t, double, double*, int64_t,
                                   int64_t);

}  // namespace spool::kernels
