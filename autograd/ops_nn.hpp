// The fused primitives nn's layers are built from, as torch.nn.functional spells them:
// linear, layer_norm, scaled_dot_product_attention. Each has a hand-written backward
// and a row in the op table.
#pragma once
#include <optional>
#include <vector>

#include "autograd/tensor.hpp"

namespace spool {

/// y = x Wᵀ + b for x [..., in], weight [out, in], bias [out] (bias may be undefined).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

/// Normalise over the trailing normalized_shape dims (biased variance), then scale and
/// shift; weight/bias of normalized_shape, either may be undefined.
Tensor layer_norm(const Tensor& x, const std::vector<std::int64_t>& normalized_shape, const Tensor& weight = {},
                  const Tensor& bias = {}, double eps = 1e-5);

struct SdpaOptions {
    /// bool: true = may attend (F.scaled_dot_product_attention's convention — the opposite of
    /// nn.MultiheadAttention's masks); float: added to the scores. Broadcast to [..., L, S].
    Tensor attn_mask = {};
    double dropout_p = 0.0;
    /// Query i attends keys j <= i. Not together with attn_mask (as PyTorch).
    bool is_causal = false;
    /// Default 1/sqrt(E).
    std::optional<double> scale = std::nullopt;
    /// Also return the attention weights (after dropout), differentiable.
    bool need_weights = false;
};

struct AttentionOutput {
    Tensor output;   ///< [..., L, Ev]
    Tensor weights;  ///< [..., L, S] when need_weights, else undefined
};

/// softmax(q kᵀ · scale + mask) v, fused, for q [..., L, E], k [..., S, E], v [..., S, Ev]
/// with equal batch dims. A query whose keys are all masked gets a zero output row and
/// zero gradients (PyTorch gives NaN there).
AttentionOutput scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const SdpaOptions& options = {});

/// Where scaled_dot_product_attention_heads finds its heads: `heads` heads of head_dim columns
/// each, starting at column q_col / k_col / v_col of the query / key / value source.
struct AttentionHeads {
    std::int64_t heads = 1;
    std::int64_t head_dim = 0;
    bool batch_first = true;  ///< sources [N, T, width]; false: [T, N, width]
    std::int64_t q_col = 0, k_col = 0, v_col = 0;
};

/// The same attention as scaled_dot_product_attention over the split-out heads
/// [N, H, T, head_dim], computed where the heads lie in their projections: the query source
/// [N, L, Wq] (batch_first) or [L, N, Wq], key and value sources [N, S, W] — which may be one
/// tensor, the fused q/k/v projection. No split, head or merge copies are made, forward or
/// backward. Returns the output with the heads merged, [N, L, heads * head_dim] (or
/// [L, N, ...]), and with need_weights the weights [N, heads, L, S]. Masks broadcast to
/// [N, heads, L, S]. For short sequences only: attention_heads_supported(L, S, need_weights)
/// (nn::MultiheadAttention otherwise splits the heads out).
AttentionOutput scaled_dot_product_attention_heads(const Tensor& query_src, const Tensor& key_src,
                                                   const Tensor& value_src, const AttentionHeads& heads,
                                                   const SdpaOptions& options = {});
bool attention_heads_supported(std::int64_t L, std::int64_t S, bool need_weights);

}  // namespace spool
