// The differentiable ops, PyTorch's names and semantics (torch.* / torch.nn.functional).
// Each is recorded on the live tape when an input requires grad; forward and backward
// are written side by side in autograd/ops_*.cpp. Every op has a row in the op table.
#pragma once
#include <optional>
#include <string_view>
#include <vector>

#include "autograd/tensor.hpp"

namespace spool {

// ---- elementwise (binary ops broadcast NumPy-style) --------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor neg(const Tensor& x);
/// x ** p for a scalar exponent.
Tensor pow(const Tensor& x, double p);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
/// approximate: "none" (erf form, PyTorch's default) or "tanh".
Tensor gelu(const Tensor& x, std::string_view approximate = "none");
/// Clamp to [min, max]; either bound may be absent. NaN stays NaN.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(const Tensor& a, double s);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(const Tensor& a, double s);

// ---- selection ----------------------------------------------------------------------------
/// x where mask is false, value where it is true (mask bool, broadcast to x).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);
/// cond ? a : b, broadcast together.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// Zero each element with probability p and scale the rest by 1/(1-p); identity when
/// !training or p == 0. Masks come from the seeded generator (spool::manual_seed).
Tensor dropout(const Tensor& x, double p = 0.5, bool training = true);
/// dropout(relu(x), p, training) in one pass: the same numbers, from the same draw (and relu(x)
/// when !training or p == 0). The Transformer layers' relu feed-forward uses it.
Tensor relu_dropout(const Tensor& x, double p = 0.5, bool training = true);
/// Convert to another dtype (differentiable between float32 and float64).
Tensor to(const Tensor& x, DType dtype);

// ---- reductions --------------------------------------------------------------------------
Tensor sum(const Tensor& x);
Tensor sum(const Tensor& x, const std::vector<int>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int>& dims, bool keepdim = false);
/// Maximum over dim (torch.max(x, dim).values); the gradient goes to the first maximum.
Tensor max(const Tensor& x, int dim, bool keepdim = false);
Tensor max(const Tensor& x);
/// Index of the maximum over dim (int64, not differentiable).
Tensor argmax(const Tensor& x, int dim, bool keepdim = false);
/// Variance over dims with Bessel's correction by default (torch.var's correction=1).
Tensor var(const Tensor& x, const std::vector<int>& dims, int correction = 1, bool keepdim = false);
Tensor var(const Tensor& x, int correction = 1);

// ---- row ops ----------------------------------------------------------------------------
Tensor softmax(const Tensor& x, int dim);
Tensor log_softmax(const Tensor& x, int dim);

// ---- shape ------------------------------------------------------------------------------
/// New shape with the same number of elements; one dim may be -1 (inferred).
Tensor reshape(const Tensor& x, const std::vector<std::int64_t>& shape);
Tensor view(const Tensor& x, const std::vector<std::int64_t>& shape);
Tensor flatten(const Tensor& x, int start_dim = 0, int end_dim = -1);
Tensor unsqueeze(const Tensor& x, int dim);
Tensor squeeze(const Tensor& x, int dim);
Tensor permute(const Tensor& x, const std::vector<int>& dims);
Tensor transpose(const Tensor& x, int dim0, int dim1);
/// x[..., start:end:step, ...] along dim with Python's clamping of start/end; step > 0.
Tensor slice(const Tensor& x, int dim, std::int64_t start, std::int64_t end, std::int64_t step = 1);
/// torch.split: consecutive pieces of x along dim with the given sizes (which must add up to
/// x's size there), or of split_size each (the last one smaller when it does not divide).
/// Backward writes x's gradient once (zeros for pieces that got none), where separate slices
/// would zero-fill a full-size gradient per piece and add them up.
std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, int dim = 0);
std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, int dim = 0);
Tensor concat(const std::vector<Tensor>& xs, int dim = 0);
Tensor cat(const std::vector<Tensor>& xs, int dim = 0);
Tensor broadcast_to(const Tensor& x, const Shape& shape);

// ---- linear algebra and indexing ----------------------------------------------------------
/// torch.matmul: 1-D, 2-D and batched with broadcast batch dims.
Tensor matmul(const Tensor& a, const Tensor& b);
/// Entries of x along dim at idx (int64, 1-D or any shape: the dim is replaced by idx's shape).
/// Backward scatters-adds into the selected rows (repeated indices add up).
Tensor index_select(const Tensor& x, int dim, const Tensor& idx);
/// Rows of weight [V, E] for token ids of any shape: [..., E]. The row padding_idx gets no
/// gradient (as F.embedding's padding_idx).
Tensor embedding(const Tensor& weight, const Tensor& ids, std::optional<std::int64_t> padding_idx = std::nullopt);

}  // namespace spool
