#include "nn/seq2seq.hpp"

#include <cmath>

#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "nn/init.hpp"

namespace spool::nn {

namespace {
/// Tied generator: the Linear's weight becomes the embedding's table.
void tie(Linear& generator, const Embedding& table)
{
    generator.weight = table.weight;
    generator.set_parameter("weight", table.weight);
}

/// These models scale embeddings by √d_model in forward, so their tables start at
/// N(0, 1/d_model) instead of Embedding's N(0, 1): the scaled embeddings then have unit
/// variance (not √d_model, which would drown the positional signal), and a tied generator
/// starts with unit-variance logits, i.e. a near-uniform prediction (fairseq's Transformer
/// embeddings are initialised the same way). The padding row stays zero.
void init_scaled_table(Embedding& table, std::int64_t d_model)
{
    NoGrad no_grad;
    table.weight.value() = (table.weight * (1.0 / std::sqrt(static_cast<double>(d_model)))).value();
}

/// Layout helpers: sequence dim 0 (seq-first) or 1 (batch-first).
int seq_dim(bool batch_first) { return batch_first ? 1 : 0; }
}  // namespace

// ---- Seq2SeqTransformer ---------------------------------------------------------------------------------

Seq2SeqTransformer::Seq2SeqTransformer(const Seq2SeqOptions& o) : Cloneable("Seq2SeqTransformer"), options(o)
{
    SPOOL_CHECK(o.src_vocab > 0 && o.tgt_vocab > 0, ValueError, "Seq2SeqTransformer: src_vocab and tgt_vocab must be positive; got ",
                o.src_vocab, " and ", o.tgt_vocab);
    const bool share = o.share_embeddings || o.tie_weights, tie_generator = o.tie_generator || o.tie_weights;
    SPOOL_CHECK(!share || o.src_vocab == o.tgt_vocab, ValueError, "Seq2SeqTransformer: ",
                o.tie_weights ? "tie_weights" : "share_embeddings", " needs src_vocab == tgt_vocab; got ", o.src_vocab, " and ",
                o.tgt_vocab);
    src_embed = register_module("src_embed", std::make_shared<Embedding>(EmbeddingOptions{
                                                 o.src_vocab, o.d_model, o.padding_idx, o.dtype}));
    tgt_embed = share ? src_embed
                      : std::make_shared<Embedding>(EmbeddingOptions{o.tgt_vocab, o.d_model, o.padding_idx, o.dtype});
    register_module("tgt_embed", tgt_embed);
    init_scaled_table(*src_embed, o.d_model);
    if (!share) init_scaled_table(*tgt_embed, o.d_model);
    positional_encoding = register_module(
        "positional_encoding", std::make_shared<PositionalEncoding>(PositionalEncodingOptions{
                                   o.d_model, o.max_len, o.dropout, o.batch_first, o.dtype}));
    transformer = register_module("transformer", std::make_shared<Transformer>(TransformerOptions{
                                                     .d_model = o.d_model, .nhead = o.nhead,
                                                     .num_encoder_layers = o.num_encoder_layers,
                                                     .num_decoder_layers = o.num_decoder_layers,
                                                     .dim_feedforward = o.dim_feedforward, .dropout = o.dropout,
                                                     .activation = o.activation, .layer_norm_eps = o.layer_norm_eps,
                                                     .batch_first = o.batch_first, .norm_first = o.norm_first,
                                                     .dtype = o.dtype}));
    generator = register_module("generator", std::make_shared<Linear>(LinearOptions{o.d_model, o.tgt_vocab, true, o.dtype}));
    if (tie_generator) tie(*generator, *tgt_embed);
}

Tensor Seq2SeqTransformer::embed(const Embedding& table, const Tensor& ids, std::int64_t offset) const
{
    SPOOL_CHECK(ids.defined() && ids.dim() == 2, ShapeError, type_name(), ": expected token ids ",
                options.batch_first ? "[N, T]" : "[T, N]", "; got ", ids.defined() ? to_string(ids.shape()) : "undefined");
    // embeddings scaled by √d_model so they are not drowned by the positional signal
    return positional_encoding->forward(table(ids) * std::sqrt(static_cast<double>(options.d_model)), offset);
}

Seq2SeqOutput Seq2SeqTransformer::forward_with_attention(const Tensor& src, const Tensor& tgt, const Seq2SeqArgs& a) const
{
    const std::int64_t T = tgt.shape()[seq_dim(options.batch_first)];
    Tensor s = embed(*src_embed, src, 0), t = embed(*tgt_embed, tgt, 0);
    // the mask takes the parameters' dtype, which to(f64) may have changed since construction
    TransformerArgs ta{.tgt_mask = generate_square_subsequent_mask(T, t.dtype()),
                       .src_key_padding_mask = a.src_key_padding_mask,
                       .tgt_key_padding_mask = a.tgt_key_padding_mask,
                       .memory_key_padding_mask = a.memory_key_padding_mask,
                       .tgt_is_causal = true,
                       .need_weights = a.need_weights,
                       .average_attn_weights = a.average_attn_weights};
    DecoderOutput d = transformer->forward_with_attention(s, t, ta);
    return {generator->forward(d.output), d.cross_attention};
}

Tensor Seq2SeqTransformer::forward(const Tensor& src, const Tensor& tgt, const Seq2SeqArgs& args) const
{
    return forward_with_attention(src, tgt, args).logits;
}

Tensor Seq2SeqTransformer::encode(const Tensor& src, const Tensor& src_key_padding_mask) const
{
    return transformer->encoder->forward(embed(*src_embed, src, 0), {.src_key_padding_mask = src_key_padding_mask});
}

Tensor Seq2SeqTransformer::decode_step(const Tensor& tgt_new, const Tensor& memory, std::vector<DecoderLayerCache>& caches,
                                       std::int64_t position, const Tensor& memory_key_padding_mask) const
{
    Tensor h = transformer->decoder->forward_step(embed(*tgt_embed, tgt_new, position), memory, caches,
                                                  memory_key_padding_mask);
    const int sd = seq_dim(options.batch_first);
    const std::int64_t Tn = h.shape()[sd];
    return squeeze(generator->forward(slice(h, sd, Tn - 1, Tn)), sd);  // [N, V]
}

// ---- TransformerLM --------------------------------------------------------------------------------------

TransformerLM::TransformerLM(const TransformerLMOptions& o) : Cloneable("TransformerLM"), options(o)
{
    SPOOL_CHECK(o.vocab > 0, ValueError, "TransformerLM: vocab must be positive; got ", o.vocab);
    SPOOL_CHECK(o.num_layers >= 1, ValueError, "TransformerLM: num_layers must be >= 1; got ", o.num_layers);
    embed = register_module("embed", std::make_shared<Embedding>(EmbeddingOptions{o.vocab, o.d_model, std::nullopt, o.dtype}));
    init_scaled_table(*embed, o.d_model);
    positional_encoding = register_module(
        "positional_encoding", std::make_shared<PositionalEncoding>(PositionalEncodingOptions{
                                   o.d_model, o.max_len, o.dropout, o.batch_first, o.dtype}));
    TransformerEncoderLayerOptions lo{.d_model = o.d_model, .nhead = o.nhead, .dim_feedforward = o.dim_feedforward,
                                      .dropout = o.dropout, .activation = o.activation, .layer_norm_eps = o.layer_norm_eps,
                                      .batch_first = o.batch_first, .norm_first = o.norm_first, .dtype = o.dtype};
    layers = register_module("layers", std::make_shared<ModuleList<TransformerEncoderLayer>>());
    for (std::int64_t i = 0; i < o.num_layers; ++i) layers->push_back(std::make_shared<TransformerEncoderLayer>(lo));
    if (o.norm_first)
        norm = register_module("norm", std::make_shared<LayerNorm>(LayerNormOptions{
                                           .normalized_shape = {o.d_model}, .eps = o.layer_norm_eps, .dtype = o.dtype}));
    head = register_module("head", std::make_shared<Linear>(LinearOptions{o.d_model, o.vocab, !o.tie_weights, o.dtype}));
    if (o.tie_weights) tie(*head, *embed);
}

Tensor TransformerLM::forward(const Tensor& ids, const Tensor& key_padding_mask) const
{
    SPOOL_CHECK(ids.defined() && ids.dim() == 2, ShapeError, "TransformerLM: expected token ids ",
                options.batch_first ? "[N, T]" : "[T, N]", "; got ", ids.defined() ? to_string(ids.shape()) : "undefined");
    const std::int64_t T = ids.shape()[seq_dim(options.batch_first)];
    Tensor x = positional_encoding->forward((*embed)(ids) * std::sqrt(static_cast<double>(options.d_model)));
    EncoderArgs a{.mask = generate_square_subsequent_mask(T, x.dtype()), .src_key_padding_mask = key_padding_mask,
                  .is_causal = true};
    for (const auto& l : *layers) x = l->forward(x, a);
    if (norm) x = norm->forward(x);
    return head->forward(x);
}

Tensor TransformerLM::step(const Tensor& ids_new, std::vector<KVCache>& caches, std::int64_t position) const
{
    if (caches.size() != layers->size()) caches.resize(layers->size());
    Tensor x = positional_encoding->forward((*embed)(ids_new) * std::sqrt(static_cast<double>(options.d_model)), position);
    for (std::size_t i = 0; i < layers->size(); ++i) x = (*layers)[i]->forward_step(x, caches[i]);
    if (norm) x = norm->forward(x);
    const int sd = seq_dim(options.batch_first);
    const std::int64_t Tn = x.shape()[sd];
    return squeeze(head->forward(slice(x, sd, Tn - 1, Tn)), sd);
}

}  // namespace spool::nn
