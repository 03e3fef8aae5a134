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
    bool causal = false;  ///< query i attends keys j <= i + causal_offset (top-left aligned, as PyTorch, at 0)
    std::int64_t causal_offset = 0;  ///< decoding: the positions already cached before query 0
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

/// Attention's operands with the heads still side by side in a projection's columns, so that
/// nothing is split out or permuted (nn::MultiheadAttention on short sequences): a source is
/// [N, rows, width] (batch_first) or [rows, N, width], and head h of it is the E columns from
/// col + h * E. q, k and v may be column blocks of one source (the fused self-attention
/// projection). Batch item b = n * H + h of masks, weights and the dropout draw is as for the
/// split-out [N * H, rows, E] operands, so both layouts give the same numbers.
struct HeadsLayout {
    std::int64_t N, H, L, S, E;
    bool batch_first;
    std::int64_t q_width, q_col, k_width, k_col, v_width, v_col;
};
/// Whether attention_heads takes these sizes: the materialised path, more than 4 query rows.
bool attention_heads_supported(std::int64_t L, std::int64_t S, bool need_weights);
/// out [N, L, H * E] (batch_first) or [L, N, H * E]: the heads merged, as out_proj reads them.
Value attention_heads(const Value& qsrc, const Value& ksrc, const Value& vsrc, const HeadsLayout& h,
                      const AttentionMask& mask, double scale, double dropout_p, bool need_weights,
                      AttentionSaved* saved);
/// Writes the gradients of the q, k and v blocks into dq, dk and dv, Values shaped like the
/// sources (one Value when sources are one); their other columns are not written.
void attention_heads_backward(const Value& dout, const Value& dweights, const Value& qsrc, const Value& ksrc,
                              const Value& vsrc, const HeadsLayout& h, double scale, const AttentionSaved& saved,
                              Value& dq, Value& dk, Value& dv);

// ---- decoding with a key/value cache ---------------------------------------------------------
// A cache buffer is [B, C, D] (B = batch x heads, room for C positions) of which the first S
// positions are filled; each step writes its new positions in place, so nothing is copied but
// the new keys and values (growing by concatenation copied the whole cache every step).

/// Forward only, no dropout: attention of q [B, L, E] over the first S positions of kbuf
/// [B, C, E] and vbuf [B, C, Ev] (S <= C). Returns [B, L, Ev].
Value attention_prefix(const Value& q, const Value& kbuf, const Value& vbuf, std::int64_t S, const AttentionMask& mask,
                       double scale);
/// Heads of a projection, written where attention reads them: x is [T, N, W] (seq-first) or,
/// batch_first, [N, T, W]; its columns [col, col + H * D) of token t, batch item n, head h go
/// to dst[n * H + h, pos + t, :] of dst [N * H, C, D] (pos + T <= C).
void write_heads(const Value& x, bool batch_first, std::int64_t col, std::int64_t H, std::int64_t D, Value& dst,
                 std::int64_t pos);
/// Make buf [B, C, D] hold at least `need` positions, keeping its first `filled`: a new buffer
/// with twice the room (at least need, at least 16) when it is short; undefined buf: a new one.
void reserve_positions(Value& buf, std::int64_t B, std::int64_t D, std::int64_t need, std::int64_t filled, DType dtype);

}  // namespace spool::kernels
