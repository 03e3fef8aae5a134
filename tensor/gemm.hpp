// General matrix multiply on raw row-major spans: C = alpha * op(A) * op(B) + beta * C.
// Declares spool's packed, cache-blocked, threaded GEMM (tensor/gemm.cpp, float and double) and
// its batched form, plus the naive triple loop kept as the test oracle.
// Light on purpose: no xsimd, no OpenMP here; shape checks are the caller's (autograd's matmul).
// Dimension letters: M rows of C, N columns of C, K the contracted dimension.
#pragma once
#include <cstdint>
#include <vector>

namespace spool::kernels {

/// The GEMM kernels this build runs on this CPU, best first, named by instruction set
/// ("avx512bw", "fma3+avx2", "sse2"). A -Dnative=true build has one (the build machine's); a
/// portable build (-Dnative=false) chooses among its compilations by the CPU at run time. The
/// choice holds for the other hot kernels too (elementwise, layer norm, Philox and dropout).
std::vector<const char*> gemm_kernels();
/// The kernel in use: the first of gemm_kernels(), unless SPOOL_KERNEL (a name above, or
/// "avx512", "avx2", "x86_64"; SPOOL_GEMM_KERNEL, its older name, when unset) or set_gemm_kernel
/// chose another.
const char* gemm_kernel();
/// Use the named kernel set from now on (tests, benchmarks); ValueError if this build or CPU
/// lacks it. Not for use while another thread runs a kernel.
void set_gemm_kernel(const char* name);

/// C[M,N] = alpha * op(A) * op(B) + beta * C, all row-major.
/// op(A) is A[M,K] (lda >= K) or, with trans_a, A stored as [K,M] (lda >= M); likewise op(B) is
/// B[K,N] (ldb >= N) or, with trans_b, B stored as [N,K] (ldb >= K); ldc >= N.
/// beta == 0 means C is not read (it may hold NaN garbage). A, B must not alias C.
/// Threaded with spool::get_num_threads() threads when the product is large enough.
/// bias, when not null, holds N values added to every row of C as the kernel stores it (the
/// linear layer's bias, with no second pass over C).
template <class T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc, const T* bias = nullptr);

/// For b in [0, batch): gemm on A + b*stride_a, B + b*stride_b, C + b*stride_c.
/// A stride of 0 broadcasts that operand over the batch (stride_c must not be 0 when batch > 1).
/// Small matrices (attention heads) run one gemm per thread; large ones thread inside each gemm.
template <class T>
void gemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta,
                  T* C, int64_t ldc, int64_t stride_c);

extern template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t,
                                 const float*, int64_t, float, float*, int64_t, const float*);
extern template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                  const double*, int64_t, double, double*, int64_t, const double*);
extern template void gemm_batched<float>(int64_t, bool, bool, int64_t, int64_t, int64_t, float, const float*,
                                         int64_t, int64_t, const float*, int64_t, int64_t, float, float*,
                                         int64_t, int64_t);
extern template void gemm_batched<double>(int64_t, bool, bool, int64_t, int64_t, int64_t, double,
                                          const double*, int64_t, int64_t, const double*, int64_t, int64_t,
                                          double, double*, int64_t, int64_t);

/// The naive triple loop (same contract as gemm), accumulating in double: the tests' oracle.
template <class T>
void gemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                    int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc)
{
    for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < N; ++j) {
            double acc = 0;
            for (int64_t k = 0; k < K; ++k) {
                const T a = trans_a ? A[k * lda + i] : A[i * lda + k];
                const T b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                acc += double(a) * double(b);
            }
            T& c = C[i * ldc + j];
            c = beta == T(0) ? T(alpha * T(acc)) : T(alpha * T(acc) + beta * c);
        }
    }
}

}  // namespace spool::kernels
