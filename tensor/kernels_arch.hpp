// Internal: the hot inner loops outside the GEMM, as a table of function pointers that each
// compilation of tensor/kernels_arch.cpp (one per instruction set, like tensor/gemm_arch.cpp)
// fills. The kernels in tensor/*.cpp check shapes, allocate and split rows; they call the table
// of the instruction set tensor/gemm.cpp chose (kernel_table()) for the loops over raw memory.
#pragma once
#include <cstdint>

#include "tensor/kernels.hpp"
#include "tensor/random.hpp"

namespace spool::kernels {

/// Backward helpers of the activations: dx[i] = dy[i] * f'(x[i]) (or of y for tanh, sigmoid).
enum class UnaryBackward { relu, tanh, sigmoid, gelu_erf, gelu_tanh, abs };
enum class Binary { add, sub, mul, div };

/// The loops of one element type.
template <class T>
struct TypedKernels {
    /// y[i] = op(x[i]), i < n (threaded above the grain).
    void (*unary)(Unary op, const T* x, T* y, std::int64_t n);
    /// dx[i] = dy[i] * op'(s[i]), s the saved input or output.
    void (*unary_backward)(UnaryBackward op, const T* dy, const T* s, T* dx, std::int64_t n);
    /// z[i] = op(x[i * sx], y[i * sy]) over one row, strides 0 (broadcast) or 1; threaded when
    /// both are 1 and the row is long.
    void (*binary_row)(Binary op, const T* x, std::int64_t sx, const T* y, std::int64_t sy, T* z, std::int64_t n);
    /// Layer norm of N rows of D: y, and each row's mean and 1 / sqrt(var + eps); w, b may be null.
    void (*layer_norm)(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, std::int64_t N, std::int64_t D,
                       double eps);
    /// Its backward: dx, and per block of rows (nb blocks, row n in block n * nb / N) the partial
    /// sums of dy * xhat into pw and of dy into pb ([nb, D] each, zeroed; either may be null).
    void (*layer_norm_backward)(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx, T* pw,
                                T* pb, std::int64_t N, std::int64_t D, std::int64_t nb);
    /// Dropout of n elements from the draw s: keep-multipliers (0 or scale) into mask, or
    /// y = x * multiplier (NaN and inf in x propagate as x * 0 does); all drops everything.
    /// keep, when not null, receives one bit per element (bit i % 64 of word i / 64: kept), which
    /// dropout_apply_bits applies again (backward) without drawing.
    void (*dropout_mask)(const RngState& s, T* mask, std::int64_t n, std::uint32_t threshold, T scale);
    void (*dropout_apply)(const RngState& s, const T* x, T* y, std::int64_t n, std::uint32_t threshold, T scale,
                          bool all, std::uint64_t* keep);
    void (*dropout_apply_bits)(const std::uint64_t* keep, const T* x, T* y, std::int64_t n, T scale);
    /// relu then dropout in one pass: y = max(x, 0) * multiplier, and one bit per element of
    /// x > 0 into pos (layout of keep above); backward: dx = x > 0 ? dy * (y > 0 ? scale : 0) : 0.
    void (*relu_dropout)(const RngState& s, const T* x, T* y, std::int64_t n, std::uint32_t threshold, T scale,
                         std::uint64_t* pos);
    void (*relu_dropout_backward)(const std::uint64_t* pos, const T* y, const T* dy, T* dx, std::int64_t n, T scale);
    /// rng::uniform and rng::normal (tensor/random.hpp).
    void (*uniform)(const RngState& s, T* out, std::int64_t n);
    void (*normal)(const RngState& s, T* out, std::int64_t n);
    /// Attention's softmax rows: the largest entry (NaN if any is NaN); row = exp(row - m),
    /// returning the sum; row *= a.
    T (*row_max_nan)(const T* row, std::int64_t n);
    T (*exp_shift_sum)(T* row, std::int64_t n, T m);
    void (*scale_row)(T* row, std::int64_t n, T a);
    /// Attention with few query rows (decoding): P[L, S] = scale * Q[L, E] Kᵀ (K: S rows of E);
    /// O[L, Ev] = A[L, S] V (V: S rows of Ev).
    void (*scores_few_rows)(std::int64_t L, std::int64_t S, std::int64_t E, T scale, const T* Q, const T* K, T* P);
    void (*weighted_sum_few_rows)(std::int64_t L, std::int64_t S, std::int64_t Ev, const T* A, const T* V, T* O);
    /// Over n of x viewed as [outer, n, inner] (threaded above the grain): the sum into
    /// y [outer, inner]; softmax or log_softmax; their backward from dy and the output y (dx may
    /// be dy).
    void (*sum)(const T* x, T* y, std::int64_t outer, std::int64_t n, std::int64_t inner);
    void (*softmax)(bool log, const T* x, T* y, std::int64_t outer, std::int64_t n, std::int64_t inner);
    void (*softmax_backward)(bool log, const T* dy, const T* y, T* dx, std::int64_t outer, std::int64_t n,
                             std::int64_t inner);
};

struct KernelTable {
    const char* name;  ///< the instruction set, as the GEMM's table names it
    TypedKernels<float> f;
    TypedKernels<double> d;
    /// Philox-4x32-10 blocks [first, first + count) of (seed, offset): out[4 * b + lane].
    void (*philox_blocks)(const RngState& s, std::uint64_t first, std::int64_t count, std::uint32_t* out);
    /// One Philox-4x32-10 block of any 128-bit counter (the known-answer tests).
    void (*philox4x32)(std::uint32_t ctr[4], const std::uint32_t key[2]);
};

/// The table of the instruction set in use (the GEMM's: tensor/gemm.cpp chooses both).
const KernelTable& kernel_table();

template <class T>
const TypedKernels<T>& typed_kernels()
{
    if constexpr (sizeof(T) == sizeof(float)) return kernel_table().f;
    else return kernel_table().d;
}

// One table per compilation of tensor/kernels_arch.cpp (see tensor/gemm_arch.hpp).
namespace native { const KernelTable& kernel_table(); }
namespace x86_64 { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }

}  // namespace spool::kernels
