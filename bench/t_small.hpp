// The T-small model of bench/train_step.hpp's Config, built with spool's public API: shared by
// bench/train_step (spool's side) and bench/zero_memory. Not in train_step.hpp, which the
// LibTorch peer includes without spool's headers.
#pragma once
#include "bench/train_step.hpp"
#include "nn/seq2seq.hpp"

namespace spool::bench {

/// Shared embedding × √d_model + sinusoidal positions, post-norm, generator tied to the embedding.
inline nn::Seq2SeqOptions t_small_options(const Config& c)
{
    return {.src_vocab = c.vocab, .tgt_vocab = c.vocab, .d_model = c.d_model, .nhead = c.heads,
            .num_encoder_layers = c.layers, .num_decoder_layers = c.layers, .dim_feedforward = c.ff,
            .dropout = c.dropout, .max_len = 4096, .tie_weights = true};
}

}  // namespace spool::bench
