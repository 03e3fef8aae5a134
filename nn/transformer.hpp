// The Transformer family, mirroring torch.nn exactly: TransformerEncoderLayer,
// TransformerDecoderLayer, TransformerEncoder, TransformerDecoder, Transformer — options,
// forward arguments, post-norm and pre-norm dataflow, initialisation and state_dict
// names. Beyond torch.nn: decoders can return each layer's cross-attention weights
// (differentiable), and decoder layers decode incrementally with a KV cache.
#pragma once
#include <string>
#include <vector>

#include "nn/attention.hpp"

namespace spool::nn {

struct TransformerEncoderLayerOptions {
    std::int64_t d_model = 0;
    std::int64_t nhead = 0;
    std::int64_t dim_feedforward = 2048;
    double dropout = 0.1;
    std::string activation = "relu";  ///< "relu" or "gelu"
    double layer_norm_eps = 1e-5;
    bool batch_first = false;
    bool norm_first = false;
    bool bias = true;
    DType dtype = DType::f32;
};
using TransformerDecoderLayerOptions = TransformerEncoderLayerOptions;

struct EncoderArgs {
    Tensor mask = {};                  ///< [S, S] or [N*H, S, S]; bool true = not allowed, float added
    Tensor src_key_padding_mask = {};  ///< [N, S]; bool true = padding
    bool is_causal = false;
};

struct DecoderArgs {
    Tensor tgt_mask = {};
    Tensor memory_mask = {};
    Tensor tgt_key_padding_mask = {};
    Tensor memory_key_padding_mask = {};
    bool tgt_is_causal = false;
    bool memory_is_causal = false;
    /// Return each layer's cross-attention weights (beyond torch.nn).
    bool need_weights = false;
    bool average_attn_weights = true;
};

struct DecoderOutput {
    Tensor output;
    /// Per layer: [N, T, S] (averaged over heads) or [N, H, T, S]; empty unless need_weights.
    std::vector<Tensor> cross_attention;
};

/// Per decoder layer: self-attention keys/values so far, and the memory's projections.
struct DecoderLayerCache {
    KVCache self, cross;
};

class TransformerEncoderLayer : public Cloneable<TransformerEncoderLayer> {
public:
    explicit TransformerEncoderLayer(const TransformerEncoderLayerOptions& options);
    Tensor forward(const Tensor& src, const EncoderArgs& args = {}) const;
    Tensor operator()(const Tensor& src, const EncoderArgs& args = {}) const { return forward(src, args); }
    /// Incremental causal self-attention (decoder-only LMs, inference): src holds only the
    /// new positions; cache grows by them.
    Tensor forward_step(const Tensor& src, KVCache& cache) const;

    TransformerEncoderLayerOptions options;
    std::shared_ptr<MultiheadAttention> self_attn;
    std::shared_ptr<Linear> linear1, linear2;
    std::shared_ptr<Dropout> dropout, dropout1, dropout2;
    std::shared_ptr<LayerNorm> norm1, norm2;

private:
    Tensor ff_block(const Tensor& x) const;
};

class TransformerDecoderLayer : public Cloneable<TransformerDecoderLayer> {
public:
    explicit TransformerDecoderLayer(const TransformerDecoderLayerOptions& options);
    /// output, plus the cross-attention weights when args.need_weights.
    DecoderOutput forward(const Tensor& tgt, const Tensor& memory, const DecoderArgs& args = {}) const;
    /// Incremental decoding (inference): tgt holds only the new positions; cache grows.
    Tensor forward_step(const Tensor& tgt, const Tensor& memory, DecoderLayerCache& cache,
                        const Tensor& memory_key_padding_mask = {}) const;

    TransformerDecoderLayerOptions options;
    std::shared_ptr<MultiheadAttention> self_attn, multihead_attn;
    std::shared_ptr<Linear> linear1, linear2;
    std::shared_ptr<Dropout> dropout, dropout1, dropout2, dropout3;
    std::shared_ptr<LayerNorm> norm1, norm2, norm3;

private:
    Tensor ff_block(const Tensor& x) const;
};

struct TransformerEncoderOptions {
    TransformerEncoderLayerOptions layer;
    std::int64_t num_layers = 1;
    bool final_norm = false;  ///< a LayerNorm after the last layer (nn.Transformer uses one)
};

class TransformerEncoder : public Cloneable<TransformerEncoder> {
public:
    explicit TransformerEncoder(const TransformerEncoderOptions& options);
    /// PyTorch's form: num_layers deep copies of layer (identical initial weights), optional norm.
    TransformerEncoder(const TransformerEncoderLayer& layer, std::int64_t num_layers, bool final_norm = false);
    Tensor forward(const Tensor& src, const EncoderArgs& args = {}) const;
    Tensor operator()(const Tensor& src, const EncoderArgs& args = {}) const { return forward(src, args); }

    TransformerEncoderOptions options;
    std::shared_ptr<ModuleList<TransformerEncoderLayer>> layers;
    std::shared_ptr<LayerNorm> norm;  ///< null without final_norm
};

using TransformerDecoderOptions = TransformerEncoderOptions;

class TransformerDecoder : public Cloneable<TransformerDecoder> {
public:
    explicit TransformerDecoder(const TransformerDecoderOptions& options);
    TransformerDecoder(const TransformerDecoderLayer& layer, std::int64_t num_layers, bool final_norm = false);
    DecoderOutput forward(const Tensor& tgt, const Tensor& memory, const DecoderArgs& args = {}) const;
    /// Incremental decoding through every layer (and the final norm); caches[i] per layer.
    Tensor forward_step(const Tensor& tgt, const Tensor& memory, std::vector<DecoderLayerCache>& caches,
                        const Tensor& memory_key_padding_mask = {}) const;

    TransformerDecoderOptions options;
    std::shared_ptr<ModuleList<TransformerDecoderLayer>> layers;
    std::shared_ptr<LayerNorm> norm;
};

struct TransformerOptions {
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
    bool bias = true;
    DType dtype = DType::f32;
};

struct TransformerArgs {
    Tensor src_mask = {}, tgt_mask = {}, memory_mask = {};
    Tensor src_key_padding_mask = {}, tgt_key_padding_mask = {}, memory_key_padding_mask = {};
    bool src_is_causal = false, tgt_is_causal = false, memory_is_causal = false;
    bool need_weights = false;  ///< cross-attention weights per decoder layer (beyond torch.nn)
    bool average_attn_weights = true;
};

/// nn.Transformer: encoder and decoder, each with a final LayerNorm; every parameter with
/// more than one dimension re-initialised xavier_uniform (PyTorch's _reset_parameters).
class Transformer : public Cloneable<Transformer> {
public:
    explicit Transformer(const TransformerOptions& options = {});
    Tensor forward(const Tensor& src, const Tensor& tgt, const TransformerArgs& args = {}) const;
    Tensor operator()(const Tensor& src, const Tensor& tgt, const TransformerArgs& args = {}) const
    {
        return forward(src, tgt, args);
    }
    /// The decoder's output and (with need_weights) each layer's cross-attention weights.
    DecoderOutput forward_with_attention(const Tensor& src, const Tensor& tgt, const TransformerArgs& args = {}) const;

    TransformerOptions options;
    std::shared_ptr<TransformerEncoder> encoder;
    std::shared_ptr<TransformerDecoder> decoder;
};

}  // namespace spool::nn
