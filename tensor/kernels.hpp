// Kernels on Values: no gradients, no tape. Each takes Values, checks what it must,
// allocates its output and returns it. float32/float64 for math, any dtype for layout.
// Hot loops are xsimd bodies with a tail (see tensor/simd.hpp, included by .cpp files
// only, so this header stays light). Autograd ops in autograd/ call these.
#pragma once
#include <cstdint>
#include <vector>

#include "tensor/random.hpp"
#include "tensor/value.hpp"

namespace spool::kernels {

// ---- elementwise, broadcasting binary ------------------------------------------------
Value add(const Value& a, const Value& b);
Value sub(const Value& a, const Value& b);
Value mul(const Value& a, const Value& b);
Value div(const Value& a, const Value& b);
/// a += b in place (b broadcast to a's shape). Used for gradient accumulation.
void add_(Value& a, const Value& b);

// ---- elementwise unary ----------------------------------------------------------------
enum class Unary { neg, exp, log, sqrt, abs, tanh, sigmoid, relu, gelu_erf, gelu_tanh, square, sign };
Value unary(Unary op, const Value& x);
Value add_scalar(const Value& x, double s);
Value mul_scalar(const Value& x, double s);
Value pow_scalar(const Value& x, double p);
/// clamp to [lo, hi]; NaN stays NaN. Pass ±inf for a one-sided clamp.
Value clamp(const Value& x, double lo, double hi);

// backward helpers: dx from dy and the saved tensor (same shapes)
Value relu_backward(const Value& dy, const Value& x);       // dy * (x > 0)
Value tanh_backward(const Value& dy, const Value& y);       // dy * (1 - y^2)
Value sigmoid_backward(const Value& dy, const Value& y);    // dy * y * (1 - y)
Value gelu_backward(const Value& dy, const Value& x, bool tanh_approx);
Value abs_backward(const Value& dy, const Value& x);        // dy * sign(x)
Value clamp_backward(const Value& dy, const Value& x, double lo, double hi);  // dy * (lo <= x <= hi)
Value pow_backward(const Value& dy, const Value& x, double p);               // dy * p * x^(p-1)

// ---- selection -----------------------------------------------------------------------
/// cond ? a : b, all three broadcast together; cond is bool.
Value where(const Value& cond, const Value& a, const Value& b);
/// x with value where mask (bool, broadcast to x's shape) is true.
Value masked_fill(const Value& x, const Value& mask, double value);

// ---- reductions (keepdim: the reduced axis stays with size 1) ---------------------------
Value sum(const Value& x, int axis);
/// max over axis, NaN-propagating; indices (int64, same shape) of the first maximum.
Value max(const Value& x, int axis, Value* indices);
/// Sum g down to shape (the adjoint of broadcasting); g's shape must broadcast from shape.
Value sum_to(const Value& g, const Shape& shape);
Value broadcast_to(const Value& x, const Shape& shape);
/// Sum of all elements, as double, and NaN/Inf detection for anomaly mode.
double sum_all(const Value& x);
bool all_finite(const Value& x);

// ---- row kernels ----------------------------------------------------------------------
/// softmax along axis; the row max is subtracted so exp cannot overflow.
Value softmax(const Value& x, int axis);
Value log_softmax(const Value& x, int axis);
/// dx = y * (dy - sum(dy * y))
Value softmax_backward(const Value& dy, const Value& y, int axis);
/// dx = dy - exp(y) * sum(dy)
Value log_softmax_backward(const Value& dy, const Value& y, int axis);

// ---- layout ----------------------------------------------------------------------------
Value permute(const Value& x, const std::vector<int>& perm);
/// Elements start, start+step, ... < end along axis (step > 0; bounds already clamped).
Value slice(const Value& x, int axis, std::int64_t start, std::int64_t end, std::int64_t step);
/// Adjoint of slice: zeros of shape with dy written at the sliced positions.
Value slice_backward(const Value& dy, const Shape& shape, int axis, std::int64_t start, std::int64_t step);
Value concat(const std::vector<Value>& xs, int axis);
/// Rows of x along axis picked by idx (int64, any shape; out shape replaces axis by idx's shape).
Value index_select(const Value& x, int axis, const Value& idx);
/// Adjoint of index_select: zeros of shape, dy rows added at idx (repeated indices add up).
Value index_add(const Value& dy, const Shape& shape, int axis, const Value& idx);
/// Adjoint of picking x[o, idx[o, k], k] along axis (max's backward): zeros of shape with
/// dy[o, k] added at idx[o, k]; idx has shape with axis of size 1.
Value scatter_along(const Value& dy, const Value& idx, const Shape& shape, int axis);
Value cast(const Value& x, DType dt);

// ---- matmul ----------------------------------------------------------------------------
/// op(a) @ op(b) over the last two dims, batch dims broadcast; a, b have rank >= 2.
/// ta/tb transpose the last two dims of a/b without copying.
Value matmul(const Value& a, const Value& b, bool ta = false, bool tb = false);
/// The linear layer's forward: x [N, in] times wᵀ (w [out, in]) plus bias [out] (or undefined),
/// the bias added as the GEMM stores each tile of the result.
Value linear(const Value& x, const Value& w, const Value& bias);

// ---- randomness (counter-based, see tensor/random.hpp) -----------------------------------
/// dropout keep-multiplier: 0 with probability p, 1/(1-p) otherwise, same dtype as like.
Value dropout_mask(const Shape& shape, DType dt, double p);
/// The generator state a dropout of n elements draws from (reserved: later draws differ).
RngState dropout_reserve(std::int64_t n);
/// x times the keep-multiplier dropout_mask would give from state s, in one pass. With keep,
/// also the mask as bits (int64 [ceil(n / 64)], bit i % 64 of word i / 64: element i kept),
/// which dropout_apply_bits applies to dy in backward without drawing again.
Value dropout_apply(const Value& x, double p, const RngState& s, Value* keep = nullptr);
Value dropout_apply_bits(const Value& keep, const Value& x, double p);
/// dropout(relu(x)) in one pass from the draw s (the words dropout_apply would use), and the
/// bits of x > 0 into *pos (int64 [ceil(n / 64)]); its backward from those bits and the output y.
Value relu_dropout(const Value& x, double p, const RngState& s, Value* pos);
Value relu_dropout_backward(const Value& pos, const Value& y, const Value& dy, double p);

}  // namespace spool::kernels
