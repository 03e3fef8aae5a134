// Decoding with a KV cache: greedy and beam search for Seq2SeqTransformer, greedy
// generation for TransformerLM. Each new token costs one decoder step over the cached
// keys/values — O(t) per token — instead of re-running the decoder on the whole prefix.
// Runs without recording (NoGrad) and in whatever train/eval mode the model is in: call
// model.eval() first for deterministic output.
#pragma once
#include "nn/seq2seq.hpp"

namespace spool::nn {

struct GenerationOptions {
    std::int64_t max_new_tokens = 64;
    std::int64_t bos_id = 1;        ///< first decoder input
    std::int64_t eos_id = 2;        ///< a hypothesis ends when it emits this
    std::int64_t pad_id = 0;        ///< fills positions after a row's EOS
    std::int64_t beam_width = 1;
    /// Beam hypotheses are ranked by sum(log p) / length^length_penalty (1.0: mean log-prob;
    /// 0: raw sum, which favours short outputs).
    double length_penalty = 1.0;
};

/// Generated ids [N, <= max_new_tokens] (no BOS; EOS included; pad_id after it).
/// src is [S, N] (or [N, S] with batch_first); the mask is [N, S], true = padding.
Tensor greedy_decode(const Seq2SeqTransformer& model, const Tensor& src, const Tensor& src_key_padding_mask = {},
                     const GenerationOptions& options = {});

/// Batched beam search; returns the best hypothesis per row, as greedy_decode does.
/// beam_width 1 gives exactly greedy_decode's output.
Tensor beam_search(const Seq2SeqTransformer& model, const Tensor& src, const Tensor& src_key_padding_mask = {},
                   const GenerationOptions& options = {});

/// Continue prompts [T, N] (or [N, T]) greedily: [N, <= max_new_tokens] new ids.
Tensor generate(const TransformerLM& model, const Tensor& prompt, const GenerationOptions& options = {});

}  // namespace spool::nn
