#include "nn/transformer.hpp"

#include "autograd/ops.hpp"
#include "nn/init.hpp"

namespace spool::nn {

namespace {

void check_layer_options(const TransformerEncoderLayerOptions& o, const char* who)
{
    SPOOL_CHECK(o.d_model > 0 && o.nhead > 0, ValueError, who, ": d_model and nhead must be positive; got d_model ",
                o.d_model, " and nhead ", o.nhead);
    SPOOL_CHECK(o.d_model % o.nhead == 0, ValueError, who, ": nhead must divide d_model; got d_model ", o.d_model,
                " and nhead ", o.nhead);
    SPOOL_CHECK(o.dim_feedforward > 0, ValueError, who, ": dim_feedforward must be positive; got ", o.dim_feedforward);
    SPOOL_CHECK(o.activation == "relu" || o.activation == "gelu", ValueError, who,
                ": activation should be relu/gelu, not ", o.activation);
    SPOOL_CHECK(o.dropout >= 0 && o.dropout < 1, ValueError, who, ": dropout must be in [0, 1); got ", o.dropout);
}

void check_input(const Tensor& x, std::int64_t d_model, const char* who, const char* name)
{
    SPOOL_CHECK(x.defined() && x.dim() == 3 && x.shape()[2] == d_model, ShapeError, who, ": expected ", name,
                " of rank 3 with last dimension d_model ", d_model, "; got ", x.defined() ? to_string(x.shape()) : "undefined");
}

/// drop(act(x)); relu and dropout in one pass (relu_dropout: the same numbers and draw)
Tensor activate_dropout(const Tensor& x, const std::string& activation, const Dropout& drop)
{
    if (activation == "gelu") return drop.forward(gelu(x));
    return relu_dropout(x, drop.options.p, drop.is_training());
}

/// One residual sub-layer: pre-norm x + f(norm(x)), post-norm norm(x + f(x)).
template <class F>
Tensor sublayer(bool norm_first, const LayerNorm& norm, const Tensor& x, F f)
{
    return norm_first ? x + f(norm.forward(x)) : norm.forward(x + f(x));
}

MultiheadAttentionOptions mha_options(const TransformerEncoderLayerOptions& o)
{
    return {.embed_dim = o.d_model, .num_heads = o.nhead, .dropout = o.dropout, .bias = o.bias,
            .batch_first = o.batch_first, .dtype = o.dtype};
}

LayerNormOptions norm_options(const TransformerEncoderLayerOptions& o)
{
    return {.normalized_shape = {o.d_model}, .eps = o.layer_norm_eps, .bias = o.bias, .dtype = o.dtype};
}

}  // namespace

// ---- encoder layer ---------------------------------------------------------------------------------
// post-norm: x = norm1(x + sa(x)); x = norm2(x + ff(x))        (sublayer() above)
// pre-norm:  x = x + sa(norm1(x)); x = x + ff(norm2(x))
// sa(x) = dropout1(self_attn(x, x, x)), ff(x) = dropout2(linear2(dropout(act(linear1(x)))))

TransformerEncoderLayer::TransformerEncoderLayer(const TransformerEncoderLayerOptions& o)
    : Cloneable("TransformerEncoderLayer"), options(o)
{
    check_layer_options(o, "TransformerEncoderLayer");
    self_attn = register_module("self_attn", std::make_shared<MultiheadAttention>(mha_options(o)));
    linear1 = register_module("linear1", std::make_shared<Linear>(LinearOptions{o.d_model, o.dim_feedforward, o.bias, o.dtype}));
    dropout = register_module("dropout", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
    linear2 = register_module("linear2", std::make_shared<Linear>(LinearOptions{o.dim_feedforward, o.d_model, o.bias, o.dtype}));
    norm1 = register_module("norm1", std::make_shared<LayerNorm>(norm_options(o)));
    norm2 = register_module("norm2", std::make_shared<LayerNorm>(norm_options(o)));
    dropout1 = register_module("dropout1", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
    dropout2 = register_module("dropout2", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
}

Tensor TransformerEncoderLayer::ff_block(const Tensor& x) const
{
    return dropout2->forward(linear2->forward(activate_dropout(linear1->forward(x), options.activation, *dropout)));
}

Tensor TransformerEncoderLayer::forward(const Tensor& src, const EncoderArgs& args) const
{
    check_input(src, options.d_model, "TransformerEncoderLayer", "src");
    auto sa = [&](const Tensor& x) {
        AttentionArgs a{.key_padding_mask = args.src_key_padding_mask, .need_weights = false, .attn_mask = args.mask,
                        .is_causal = args.is_causal};
        return dropout1->forward(self_attn->forward(x, x, x, a).first);
    };
    auto ff = [&](const Tensor& x) { return ff_block(x); };
    return sublayer(options.norm_first, *norm2, sublayer(options.norm_first, *norm1, src, sa), ff);
}

Tensor TransformerEncoderLayer::forward_step(const Tensor& src, KVCache& cache) const
{
    auto sa = [&](const Tensor& x) { return self_attn->forward_cached(x, cache); };
    auto ff = [&](const Tensor& x) { return ff_block(x); };
    return sublayer(options.norm_first, *norm2, sublayer(options.norm_first, *norm1, src, sa), ff);
}

// ---- decoder layer ---------------------------------------------------------------------------------
// post-norm: x = norm1(x + sa(x)); x = norm2(x + mha(x, mem)); x = norm3(x + ff(x))
// pre-norm:  x = x + sa(norm1(x)); x = x + mha(norm2(x), mem); x = x + ff(norm3(x))

TransformerDecoderLayer::TransformerDecoderLayer(const TransformerDecoderLayerOptions& o)
    : Cloneable("TransformerDecoderLayer"), options(o)
{
    check_layer_options(o, "TransformerDecoderLayer");
    self_attn = register_module("self_attn", std::make_shared<MultiheadAttention>(mha_options(o)));
    multihead_attn = register_module("multihead_attn", std::make_shared<MultiheadAttention>(mha_options(o)));
    linear1 = register_module("linear1", std::make_shared<Linear>(LinearOptions{o.d_model, o.dim_feedforward, o.bias, o.dtype}));
    dropout = register_module("dropout", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
    linear2 = register_module("linear2", std::make_shared<Linear>(LinearOptions{o.dim_feedforward, o.d_model, o.bias, o.dtype}));
    norm1 = register_module("norm1", std::make_shared<LayerNorm>(norm_options(o)));
    norm2 = register_module("norm2", std::make_shared<LayerNorm>(norm_options(o)));
    norm3 = register_module("norm3", std::make_shared<LayerNorm>(norm_options(o)));
    dropout1 = register_module("dropout1", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
    dropout2 = register_module("dropout2", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
    dropout3 = register_module("dropout3", std::make_shared<Dropout>(DropoutOptions{o.dropout}));
}

Tensor TransformerDecoderLayer::ff_block(const Tensor& x) const
{
    return dropout3->forward(linear2->forward(activate_dropout(linear1->forward(x), options.activation, *dropout)));
}

DecoderOutput TransformerDecoderLayer::forward(const Tensor& tgt, const Tensor& memory, const DecoderArgs& args) const
{
    check_input(tgt, options.d_model, "TransformerDecoderLayer", "tgt");
    check_input(memory, options.d_model, "TransformerDecoderLayer", "memory");
    Tensor weights;
    auto sa = [&](const Tensor& x) {
        AttentionArgs a{.key_padding_mask = args.tgt_key_padding_mask, .need_weights = false, .attn_mask = args.tgt_mask,
                        .is_causal = args.tgt_is_causal};
        return dropout1->forward(self_attn->forward(x, x, x, a).first);
    };
    auto mha = [&](const Tensor& x) {
        AttentionArgs a{.key_padding_mask = args.memory_key_padding_mask, .need_weights = args.need_weights,
                        .attn_mask = args.memory_mask, .average_attn_weights = args.average_attn_weights,
                        .is_causal = args.memory_is_causal};
        auto [out, w] = multihead_attn->forward(x, memory, memory, a);
        weights = w;
        return dropout2->forward(out);
    };
    auto ff = [&](const Tensor& x) { return ff_block(x); };
    const bool nf = options.norm_first;
    Tensor x = sublayer(nf, *norm3, sublayer(nf, *norm2, sublayer(nf, *norm1, tgt, sa), mha), ff);
    DecoderOutput out{x, {}};
    if (args.need_weights) out.cross_attention.push_back(weights);
    return out;
}

Tensor TransformerDecoderLayer::forward_step(const Tensor& tgt, const Tensor& memory, DecoderLayerCache& cache,
                                             const Tensor& memory_key_padding_mask) const
{
    auto sa = [&](const Tensor& x) { return self_attn->forward_cached(x, cache.self); };
    auto mha = [&](const Tensor& x) {
        return multihead_attn->forward_memory(x, memory, cache.cross, memory_key_padding_mask);
    };
    auto ff = [&](const Tensor& x) { return ff_block(x); };
    const bool nf = options.norm_first;
    Tensor x = sublayer(nf, *norm3, sublayer(nf, *norm2, sublayer(nf, *norm1, tgt, sa), mha), ff);
    return x;
}

// ---- stacks --------------------------------------------------------------------------------------------

TransformerEncoder::TransformerEncoder(const TransformerEncoderOptions& o)
    : TransformerEncoder(TransformerEncoderLayer(o.layer), o.num_layers, o.final_norm)
{
}

TransformerEncoder::TransformerEncoder(const TransformerEncoderLayer& layer, std::int64_t num_layers, bool final_norm)
    : Cloneable("TransformerEncoder"), options{layer.options, num_layers, final_norm}
{
    SPOOL_CHECK(num_layers >= 1, ValueError, "TransformerEncoder: num_layers must be >= 1; got ", num_layers);
    layers = register_module("layers", std::make_shared<ModuleList<TransformerEncoderLayer>>());
    for (std::int64_t i = 0; i < num_layers; ++i) layers->push_back(layer.clone_as());
    if (final_norm) norm = register_module("norm", std::make_shared<LayerNorm>(norm_options(layer.options)));
}

Tensor TransformerEncoder::forward(const Tensor& src, const EncoderArgs& args) const
{
    Tensor x = src;
    for (const auto& l : *layers) x = l->forward(x, args);
    return norm ? norm->forward(x) : x;
}

TransformerDecoder::TransformerDecoder(const TransformerDecoderOptions& o)
    : TransformerDecoder(TransformerDecoderLayer(o.layer), o.num_layers, o.final_norm)
{
}

TransformerDecoder::TransformerDecoder(const TransformerDecoderLayer& layer, std::int64_t num_layers, bool final_norm)
    : Cloneable("TransformerDecoder"), options{layer.options, num_layers, final_norm}
{
    SPOOL_CHECK(num_layers >= 1, ValueError, "TransformerDecoder: num_layers must be >= 1; got ", num_layers);
    layers = register_module("layers", std::make_shared<ModuleList<TransformerDecoderLayer>>());
    for (std::int64_t i = 0; i < num_layers; ++i) layers->push_back(layer.clone_as());
    if (final_norm) norm = register_module("norm", std::make_shared<LayerNorm>(norm_options(layer.options)));
}

DecoderOutput TransformerDecoder::forward(const Tensor& tgt, const Tensor& memory, const DecoderArgs& args) const
{
    DecoderOutput out{tgt, {}};
    for (const auto& l : *layers) {
        DecoderOutput r = l->forward(out.output, memory, args);
        out.output = r.output;
        for (auto& w : r.cross_attention) out.cross_attention.push_back(w);
    }
    if (norm) out.output = norm->forward(out.output);
    return out;
}

Tensor TransformerDecoder::forward_step(const Tensor& tgt, const Tensor& memory, std::vector<DecoderLayerCache>& caches,
                                        const Tensor& memory_key_padding_mask) const
{
    if (caches.size() != layers->size()) caches.resize(layers->size());
    Tensor x = tgt;
    for (std::size_t i = 0; i < layers->size(); ++i)
        x = (*layers)[i]->forward_step(x, memory, caches[i], memory_key_padding_mask);
    return norm ? norm->forward(x) : x;
}

// ---- Transformer -----------------------------------------------------------------------------------------

Transformer::Transformer(const TransformerOptions& o) : Cloneable("Transformer"), options(o)
{
    TransformerEncoderLayerOptions lo{.d_model = o.d_model, .nhead = o.nhead, .dim_feedforward = o.dim_feedforward,
                                      .dropout = o.dropout, .activation = o.activation, .layer_norm_eps = o.layer_norm_eps,
                                      .batch_first = o.batch_first, .norm_first = o.norm_first, .bias = o.bias,
                                      .dtype = o.dtype};
    SPOOL_CHECK(o.num_encoder_layers >= 1 && o.num_decoder_layers >= 1, ValueError,
                "Transformer: num_encoder_layers and num_decoder_layers must be >= 1; got ", o.num_encoder_layers, " and ",
                o.num_decoder_layers);
    encoder = register_module("encoder", std::make_shared<TransformerEncoder>(TransformerEncoderLayer(lo),
                                                                                o.num_encoder_layers, true));
    decoder = register_module("decoder", std::make_shared<TransformerDecoder>(TransformerDecoderLayer(lo),
                                                                                o.num_decoder_layers, true));
    for (auto& [name, p] : named_parameters())
        if (p.dim() > 1) {
            Tensor h = p;
            init::xavier_uniform_(h);
        }
}

DecoderOutput Transformer::forward_with_attention(const Tensor& src, const Tensor& tgt, const TransformerArgs& a) const
{
    check_input(src, options.d_model, "Transformer", "src");
    check_input(tgt, options.d_model, "Transformer", "tgt");
    const int bd = options.batch_first ? 0 : 1;
    SPOOL_CHECK(src.shape()[bd] == tgt.shape()[bd], ShapeError, "Transformer: the batch number of src and tgt must be equal; got src ",
                to_string(src.shape()), " and tgt ", to_string(tgt.shape()));
    Tensor memory = encoder->forward(src, {a.src_mask, a.src_key_padding_mask, a.src_is_causal});
    return decoder->forward(tgt, memory,
                            {a.tgt_mask, a.memory_mask, a.tgt_key_padding_mask, a.memory_key_padding_mask, a.tgt_is_causal,
                             a.memory_is_causal, a.need_weights, a.average_attn_weights});
}

Tensor Transformer::forward(const Tensor& src, const Tensor& tgt, const TransformerArgs& args) const
{
    return forward_with_attention(src, tgt, args).output;
}

}  // namespace spool::nn
