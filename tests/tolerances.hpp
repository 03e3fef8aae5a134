// Numeric tolerances shared by the test executables, kept in one place so that a
// loosened bound is visible in review. A value a matches a reference b when
// |a - b| <= atol + rtol * |b| (NumPy's allclose, the reference on the right).
// Gradcheck tolerances (finite differences) are GradcheckOptions defaults, not here.
#pragma once
#include <cmath>

#include "tensor/dtype.hpp"

namespace spool::test {

struct Tolerance {
    double rtol;
    double atol;
};

/// PyTorch parity (tests/fixtures/ops.json), float32: reordered sums and PyTorch's
/// vectorised exp/erf/tanh differ by a few ulps (the worst case, gelu, uses ~1/4 of this bound).
inline constexpr Tolerance parity_f32{.rtol = 1e-5, .atol = 1e-6};
/// PyTorch parity, float64: every case agrees within rtol 1e-14 / atol 1e-15 today; the
/// 100x margin leaves room for other summation orders (GEMM blocking, FMA on or off).
inline constexpr Tolerance parity_f64{.rtol = 1e-12, .atol = 1e-14};

/// PyTorch parity of whole nn modules (tests/fixtures/nn/*.safetensors), float32: MHA, the
/// Transformer layers and nn.Transformer chain GEMMs, softmax and LayerNorms, so the op-level
/// few-ulp differences compound through up to 2+2 layers and their backward.
inline constexpr Tolerance nn_parity_f32{.rtol = 1e-4, .atol = 1e-5};

/// Data-parallel training against one process on the whole batch (tests/dist), float32: the
/// two sum a batch's gradient in a different order (two halves, then their average), which
/// the optimizer steps carry into the parameters.
inline constexpr Tolerance ddp_f32{.rtol = 1e-5, .atol = 1e-6};

/// The flagship trainer data-parallel against one process (tests/dist/test_train_dist.cpp):
/// float32 Adam (eps 1e-9) divides each gradient by its own running size, so where a
/// gradient is small the few-ulp difference of the two summation orders becomes a relative
/// difference of the step; over 6 steps the worst element is 0.93x ddp_f32 (the key rows of
/// in_proj_weight, a rare character's embedding). 10x above that, as nn_parity_f32.
inline constexpr Tolerance ddp_trainer_f32{.rtol = 1e-4, .atol = 1e-5};

/// ZeRO-1 against DDP with the same optimizer, 2 ranks (tests/dist): exact. The averaged
/// gradients are the same bits (a + b, then / 2, in both), and the optimizer kernels run their
/// tail through the SIMD body on a padded copy, so splitting a parameter into shard pieces
/// changes no element's arithmetic. With more ranks the two collectives may sum in different orders.
inline constexpr Tolerance zero_vs_ddp{.rtol = 0, .atol = 0};
/// The same with global-norm clipping: the norm's partial sums combine per rank, so the
/// clipping factor may differ in its last bit.
inline constexpr Tolerance zero_vs_ddp_clipped{.rtol = 1e-6, .atol = 1e-7};

/// The parity tolerance for values of dtype dt (float32 or float64).
constexpr Tolerance parity_tolerance(DType dt) { return dt == DType::f64 ? parity_f64 : parity_f32; }

/// |a - b| <= atol + rtol * |b|; NaN matches nothing.
inline bool close(double a, double b, Tolerance tol) { return std::abs(a - b) <= tol.atol + tol.rtol * std::abs(b); }

}  // namespace spool::test
