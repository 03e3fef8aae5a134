// The small training run the checkpoint tests resume: a Seq2SeqTransformer with dropout,
// Adam (betas 0.9/0.98, eps 1e-9) and a Noam warmup, fixed seeds. Batches are a pure
// function of the step (their own generator, not spool's), so a resumed run sees the same
// data; dropout draws from spool's global generator, which the checkpoint restores.
// Shared by test_checkpoint.cpp and checkpoint_child.cpp.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "spool.hpp"

namespace spool::test {

struct TrainingRun {
    std::shared_ptr<nn::Seq2SeqTransformer> model;
    std::unique_ptr<optim::Adam> opt;
    std::unique_ptr<optim::NoamLR> sched;

    /// Build with init_seed (a resumed run uses another one: loading must overwrite it all).
    explicit TrainingRun(std::uint64_t init_seed)
    {
        manual_seed(init_seed);
        model = std::make_shared<nn::Seq2SeqTransformer>(nn::Seq2SeqOptions{
            .src_vocab = 11, .tgt_vocab = 11, .d_model = 16, .nhead = 2, .num_encoder_layers = 1,
            .num_decoder_layers = 1, .dim_feedforward = 32, .dropout = 0.1, .max_len = 32});
        opt = std::make_unique<optim::Adam>(model->named_parameters(),
                                            optim::AdamOptions{.lr = 1.0, .betas = {0.9, 0.98}, .eps = 1e-9});
        sched = std::make_unique<optim::NoamLR>(*opt, optim::NoamOptions{.d_model = 16, .warmup_steps = 4});
    }

    /// One training step on batch number `step`; returns the loss. A poisoned batch makes
    /// the loss (and every gradient) NaN.
    double step(std::int64_t step, bool poisoned = false)
    {
        std::mt19937_64 gen(static_cast<std::uint64_t>(step) + 1000);
        std::vector<std::int64_t> src(6 * 3), tgt(5 * 3), gold(5 * 3);
        for (auto& v : src) v = static_cast<std::int64_t>(1 + gen() % 10);
        for (std::size_t i = 0; i < tgt.size(); ++i) {
            tgt[i] = static_cast<std::int64_t>(1 + gen() % 10);
            gold[i] = tgt[i];  // learn to copy: a loss that falls within a few steps
        }
        Tape tape;
        Tensor logits = (*model)(from_vector(src, {6, 3}), from_vector(tgt, {5, 3}));
        Tensor loss = cross_entropy(reshape(logits, {15, 11}), from_vector(gold, {15}));
        if (poisoned) loss = loss * std::numeric_limits<double>::quiet_NaN();
        tape.backward(loss);
        const double value = loss.item();
        if (opt->step()) sched->step();  // a skipped step does not advance the schedule
        opt->zero_grad();
        return value;
    }
};

}  // namespace spool::test
