// Fused kernels behind nn's primitives: layer norm and scaled dot-product attention.
// Forward returns what backward needs; backward takes it back. No gradients or tapes
// here — autograd/ops_nn.cpp records them. Dimension letters: N rows, D normalized
// width; B flattened batch (batch x heads), L query length, S key length, E head width.
#pragma once
#include <cstdint>
#include <optional>

#include "tensor/value.hpp"

namespace spool::kernels {

// ---- layer norm ---------------------------------------------------------------------------
struct LayerNormSaved {
    Value mean, rstd;  ///< [N] each: per-row mean and 1/sqrt(var + eps) (biased variance)
};
/// y = (x - mean) * rstd * weight + bias over the last D elements of each row; x viewed as
/// [N, D]. weight/bias may be undefined (no affine).
Value layer_norm(const Value& x, std::int64_t D, const Value& weight, const Value& bias, double eps,
                 LayerNormSaved* saved);
/// dx, and accumulate-free dweight/dbias (set when the pointers are given).
Value layer_norm_backward(const Value& dy, const Value& x, std::int64_t D, const Value& weight,
                          const LayerNormSaved& saved, Value* dweight, Value* dbias);

// ---- scaled dot-product attention ----------------------------------------------------------
struct AttentionMask {
    /// Additive float mask or bool mask (true = may attend), broadcast over [B, L, S]:
    /// shape [Bm, L or 1, S or 1] with Bm in {1, B}, or undefined for none.
    Value mask;
    bool causal = false;  ///< query i attends keys j <= i (top-left aligned, as PyTorch)
};
struct AttentionSaved {
    Value probs;    ///< [B, L, S] softmax probabilities (rows with no allowed key are 0)
    Value dropped;  ///< [B, L, S] probs after dropout (undefined when no dropout)
};
/// out[B, L, Ev] = dropout(softmax(scale * q kᵀ + mask)) v. Rows whose keys are all masked
/// give zero probabilities, so a zero output row (never NaN).
Value attention(const Value& q, const Value& k, const Value& v, const AttentionMask& mask, double scale,
                double dropout_p, AttentionSaved* saved);
/// Gradients of q, k, v from dout (may be undefined) and dweights, the gradient of the
/// returned weights (= saved.dropped or saved.probs; may be undefined).
void attention_backward(const Value& dout, const Value& dweights, const Value& q, const Value& k, const Value& v,
                        double scale, const AttentionSaved& saved, Value* dq, Value* dk, Value* dv);

}  // namespace spool::kernels
