// Models beyond torch.nn: Seq2SeqTransformer (token embeddings × √d_model + sinusoidal
// positions + dropout, nn::Transformer, generator Linear; optional sharing of the source and
// target tables and tying of the generator to the target table) and
// TransformerLM (decoder-only, causal). Both decode with a KV cache, so producing token t
// costs O(t), not O(t²): see nn/decoding.hpp. Token ids are int64 [T, N] (seq-first) or
// [N, T] with batch_first; logits come out in the same layout with V last.
#pragma once
#include <optional>

#include "nn/transformer.hpp"

namespace spool::nn {

struct Seq2SeqOptions {
    std::int64_t src_vocab = 0;
    std::int64_t tgt_vocab = 0;
    std::int64_t d_model = 512;
    std::int64_t nhead = 8;
    std::int64_t num_encoder_layers = 6;
    std::int64_t num_decoder_layers = 6;
    std::int64_t dim_feedforward = 2048;
    double dropout = 0.1;
    std::string activation = "relu";
    double layer_norm_eps = 1e-5;
    bool batch_first = false;
    bool norm_first = false;
    std::int64_t max_len = 5000;
    /// Both of the two below, as in "Attention Is All You Need" 3.4: one table for source,
    /// target and generator (needs src_vocab == tgt_vocab).
    bool tie_weights = false;
    /// One embedding table for source and target (needs src_vocab == tgt_vocab); the
    /// generator keeps its own weight unless tie_generator (PyTorch: tgt_emb = src_emb).
    bool share_embeddings = false;
    /// The generator's weight is the target embedding's table (generator.weight =
    /// tgt_emb.weight); any vocabulary sizes.
    bool tie_generator = false;
    std::optional<std::int64_t> padding_idx = std::nullopt;
    DType dtype = DType::f32;
};

struct Seq2SeqArgs {
    Tensor src_key_padding_mask = {};     ///< [N, S] bool, true = padding
    Tensor tgt_key_padding_mask = {};     ///< [N, T]
    Tensor memory_key_padding_mask = {};  ///< [N, S]; usually the same as src's
    bool need_weights = false;            ///< cross-attention weights per decoder layer
    bool average_attn_weights = true;
};

struct Seq2SeqOutput {
    Tensor logits;                         ///< [T, N, V] (or [N, T, V])
    std::vector<Tensor> cross_attention;   ///< per decoder layer, with need_weights
};

class Seq2SeqTransformer : public Cloneable<Seq2SeqTransformer> {
public:
    explicit Seq2SeqTransformer(const Seq2SeqOptions& options);
    /// Teacher-forced logits; the target is masked causally.
    Tensor forward(const Tensor& src, const Tensor& tgt, const Seq2SeqArgs& args = {}) const;
    Tensor operator()(const Tensor& src, const Tensor& tgt, const Seq2SeqArgs& args = {}) const
    {
        return forward(src, tgt, args);
    }
    Seq2SeqOutput forward_with_attention(const Tensor& src, const Tensor& tgt, const Seq2SeqArgs& args = {}) const;

    /// The encoder's memory for src.
    Tensor encode(const Tensor& src, const Tensor& src_key_padding_mask = {}) const;
    /// Logits [N, V] for the new target position(s) given their ids (length 1 along the
    /// sequence dim), at position `position`, through the KV cache.
    Tensor decode_step(const Tensor& tgt_new, const Tensor& memory, std::vector<DecoderLayerCache>& caches,
                       std::int64_t position, const Tensor& memory_key_padding_mask = {}) const;

    Seq2SeqOptions options;
    std::shared_ptr<Embedding> src_embed, tgt_embed;  ///< the same module when share_embeddings (or tie_weights)
    std::shared_ptr<PositionalEncoding> positional_encoding;
    std::shared_ptr<Transformer> transformer;
    std::shared_ptr<Linear> generator;

private:
    Tensor embed(const Embedding& table, const Tensor& ids, std::int64_t offset) const;
};

struct TransformerLMOptions {
    std::int64_t vocab = 0;
    std::int64_t d_model = 512;
    std::int64_t nhead = 8;
    std::int64_t num_layers = 6;
    std::int64_t dim_feedforward = 2048;
    double dropout = 0.1;
    std::string activation = "gelu";
    double layer_norm_eps = 1e-5;
    bool batch_first = false;
    bool norm_first = true;  ///< pre-norm, with a final LayerNorm, as GPT-style LMs
    std::int64_t max_len = 5000;
    bool tie_weights = true;
    DType dtype = DType::f32;
};

/// A decoder-only causal language model: embedding × √d_model + positions, causal
/// encoder-layer stack, final norm (pre-norm), head to the vocabulary.
class TransformerLM : public Cloneable<TransformerLM> {
public:
    explicit TransformerLM(const TransformerLMOptions& options);
    /// Logits [T, N, V] (or [N, T, V]) with causal self-attention.
    Tensor forward(const Tensor& ids, const Tensor& key_padding_mask = {}) const;
    Tensor operator()(const Tensor& ids, const Tensor& key_padding_mask = {}) const { return forward(ids, key_padding_mask); }
    /// Logits [N, V] for the last of the new ids (any length along the sequence dim), through
    /// the KV cache; position is the index of the first new id.
    Tensor step(const Tensor& ids_new, std::vector<KVCache>& caches, std::int64_t position) const;

    TransformerLMOptions options;
    std::shared_ptr<Embedding> embed;
    std::shared_ptr<PositionalEncoding> positional_encoding;
    std::shared_ptr<ModuleList<TransformerEncoderLayer>> layers;
    std::shared_ptr<LayerNorm> norm;  ///< null unless norm_first
    std::shared_ptr<Linear> head;
};

}  // namespace spool::nn
