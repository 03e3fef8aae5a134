// nn.MultiheadAttention, exactly as PyTorch: packed in_proj_weight (or q/k/v_proj_weight
// when kdim/vdim differ), in_proj_bias, out_proj; seq-first [L, N, E] inputs unless
// batch_first; masks in nn.MultiheadAttention's convention (bool true = NOT allowed,
// float = added), which is the opposite of F.scaled_dot_product_attention's bool masks.
// Plus a KV cache for incremental decoding. Letters: N batch, L query length, S key
// length, E embed_dim, H heads, D = E / H.
#pragma once
#include <optional>
#include <utility>

#include "nn/layers.hpp"

namespace spool::nn {

struct MultiheadAttentionOptions {
    std::int64_t embed_dim = 0;
    std::int64_t num_heads = 0;
    double dropout = 0.0;
    bool bias = true;
    std::optional<std::int64_t> kdim = std::nullopt;
    std::optional<std::int64_t> vdim = std::nullopt;
    bool batch_first = false;
    DType dtype = DType::f32;
};

/// Forward arguments with PyTorch's names and defaults.
struct AttentionArgs {
    Tensor key_padding_mask = {};  ///< [N, S]; bool true = ignore that key; float = added
    bool need_weights = true;
    Tensor attn_mask = {};         ///< [L, S] or [N*H, L, S]; bool true = not allowed; float = added
    bool average_attn_weights = true;
    /// Causal attention. Without attn_mask spool builds the causal mask itself; with one, it is
    /// a hint that attn_mask is causal (as PyTorch) and attn_mask is used.
    bool is_causal = false;
};

/// Keys and values of earlier decoding steps, per attention layer. k and v are buffers
/// [N, H, capacity, D] whose first length() positions hold data: a step writes its new
/// positions in place and the capacity doubles when it runs out (amortised O(1) copying per
/// token; growing by concatenation copied the whole cache every step). keys() and values()
/// give the filled part [N, H, length, D]. A beam search may reorder the batch rows of k and v
/// (index_select along dim 0); length() stays.
struct KVCache {
    Tensor k, v;
    std::int64_t filled = 0;
    bool empty() const { return filled == 0; }
    std::int64_t length() const { return filled; }
    std::int64_t capacity() const { return k.defined() ? k.shape()[2] : 0; }
    Tensor keys() const;
    Tensor values() const;
};

class MultiheadAttention : public Cloneable<MultiheadAttention> {
public:
    explicit MultiheadAttention(const MultiheadAttentionOptions& options);
    /// (attn_output [L, N, E] or [N, L, E], attn_weights [N, L, S] averaged or [N, H, L, S]; undefined
    /// unless need_weights).
    std::pair<Tensor, Tensor> forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                      const AttentionArgs& args = {}) const;
    std::pair<Tensor, Tensor> operator()(const Tensor& query, const Tensor& key, const Tensor& value,
                                         const AttentionArgs& args = {}) const
    {
        return forward(query, key, value, args);
    }

    /// Incremental self-attention for decoding: x holds the new positions only (seq length
    /// L_new, usually 1); their keys and values are written into cache and the queries attend
    /// every cached position (causal within the new block). Inference only: it records no
    /// gradients, and throws if a Tape would record (run it under NoGrad).
    Tensor forward_cached(const Tensor& x, KVCache& cache) const;
    /// Cross-attention to a fixed memory whose projected keys/values are computed once into
    /// cache (when empty) and reused afterwards.
    Tensor forward_memory(const Tensor& query, const Tensor& memory, KVCache& cache,
                          const Tensor& memory_key_padding_mask = {}) const;

    std::string extra_repr() const override { return ""; }

    MultiheadAttentionOptions options;
    Tensor in_proj_weight, q_proj_weight, k_proj_weight, v_proj_weight, in_proj_bias;
    std::shared_ptr<NonDynamicallyQuantizableLinear> out_proj;

private:
    bool same_embed_dim() const;
    /// [T, N, E] (or [N, T, E]) -> [N, H, T, D]
    Tensor split_heads(const Tensor& x) const;
    Tensor merge_heads(const Tensor& x) const;
    /// q, k, v projections of (query, key, value); which = bit mask of the ones wanted.
    void project(const Tensor& query, const Tensor& key, const Tensor& value, Tensor* q, Tensor* k, Tensor* v) const;
};

/// Additive float mask [sz, sz]: 0 on and below the diagonal, -inf above (PyTorch's
/// Transformer.generate_square_subsequent_mask).
Tensor generate_square_subsequent_mask(std::int64_t sz, DType dtype = DType::f32);

}  // namespace spool::nn
