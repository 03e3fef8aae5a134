// Fused kernels behind nn's primitives: layer norm and scaled dot-product attention.
// Forward returns what backward needs; backward takes it back. No gradients or tapes
// here — autograd/ops_nn.cpp records them. Dimension letters: N rows, D normalized
// width; B flattened batch (batch x heads), L query length, S key length, E head width.
#pragma once
#include <cstdint>
#include <optional>

#include "tensor/random.hpp"
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
    // materialised path (the weights were asked for, or a short sequence)
    Value probs;    ///< [B, L, S] softmax probabilities (rows with no allowed key are 0)
    Value dropped;  ///< [B, L, S] probs after dropout (undefined when no dropout)
    // blockwise path: only O(B * L) beyond the output; backward recomputes tiles of the scores
    Value out;               ///< [B, L, Ev] the output
    Value lse;               ///< [B, L] log-sum-exp of each row's masked scores; +inf for a row with no allowed key
    AttentionMask mask;      ///< the mask again (backward re-applies it tile by tile)
    double dropout_p = 0;    ///< with the counters below, regenerates the forward's dropout mask
    RngState rng;            ///< first counter of the forward's draw (element n of [B, L, S] is word n)
    bool blockwise() const { return lse.defined(); }
};

/// Tile sizes of the blockwise (flash-attention style) path and when it runs.
struct AttentionBlocking {
    std::int64_t block_q = 64;   ///< query rows per tile
    std::int64_t block_k = 128;  ///< keys per tile
    /// Blockwise when the weights are not asked for and L * S >= this (0: always). Below
    /// 128 x 128 scores per head the materialised path was faster (one tile, and backward
    /// need not recompute the scores): 12% at L = S = 64, level at 128, 25% slower at 256.
    std::int64_t min_scores = 128 * 128;
};
AttentionBlocking attention_blocking();
/// Tests shrink the tiles to exercise partial tiles on tiny shapes; not thread-safe.
void set_attention_blocking(const AttentionBlocking& b);

/// out[B, L, Ev] = dropout(softmax(scale * q kᵀ + mask)) v. Rows whose keys are all masked
/// give zero probabilities, so a zero output row (never NaN). With need_weights the
/// probabilities are materialised (saved->probs, saved->dropped: the weights); otherwise
/// (above attention_blocking().min_scores) the blockwise path keeps no [L, S] buffer at all.
Value attention(const Value& q, const Value& k, const Value& v, const AttentionMask& mask, double scale,
                double dropout_p, bool need_weights, AttentionSaved* saved);
/// Gradients of q, k, v from dout (may be undefined) and dweights, the gradient of the
/// returned weights (= saved.dropped or saved.probs; may be undefined; materialised path only).
void attention_backward(const Value& dout, const Value& dweights, const Value& q, const Value& k, const Value& v,
                        double scale, const AttentionSaved& saved, Value* dq, Value* dk, Value* dv);

}  // namespace spool::kernels
