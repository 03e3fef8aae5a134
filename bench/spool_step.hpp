// spool's side of W2 (the T-small training step), shared by bench/train_step and bench/ddp:
// the model, Adam with Noam warm-up, label-smoothed cross-entropy, one STEP line per measured
// step (bench/train_step.hpp: print_step). bench/ddp trains a part of each batch's rows and
// averages the gradients over MPI ranks through the hooks. Bench-only.
#pragma once
#include <cstdio>
#include <functional>

#include "bench/t_small.hpp"
#include "bench/train_step.hpp"
#include "spool.hpp"

namespace spool::bench {

struct SpoolStepHooks {
    std::int64_t rows_begin = 0, rows_end = -1;          ///< the batch columns trained on (-1: all)
    std::function<void(nn::Module&)> on_model;           ///< once, after the model is built
    std::function<void()> after_backward;                ///< timed as part of backward (bench/ddp: the sync)
    std::function<void()> after_step;                    ///< after each measured step's STEP line
};

/// Runs c.warmup + c.steps training steps at `threads` threads; prints STEP for the measured
/// ones and ALLOC (the caching allocator's peak and held MiB) at the end.
inline void run_spool_steps(const Config& c, int threads, const SpoolStepHooks& h = {})
{
    set_num_threads(threads);
    manual_seed(0);
    nn::Seq2SeqTransformer model(t_small_options(c));
    model.train();
    if (h.on_model) h.on_model(model);
    optim::Adam opt(model.named_parameters(), optim::AdamOptions{.lr = 1.0, .betas = {0.9, 0.98}, .eps = 1e-9});
    optim::NoamLR sched(opt, optim::NoamOptions{.d_model = c.d_model, .warmup_steps = c.warmup_steps});
    const auto batches = make_batches(c, 4);
    const std::int64_t r0 = h.rows_begin, r1 = h.rows_end < 0 ? c.batch : h.rows_end;
    for (int s = 0; s < c.warmup + c.steps; ++s) {
        // SPOOL_PROFILE: the table counts the measured steps only (warm-up steps fault pages in)
        if (s == c.warmup && profiler::enabled()) profiler::reset();
        const Batch& b = batches[std::size_t(s) % batches.size()];
        Tensor src = slice(from_vector(b.src, {c.src_len, c.batch}), 1, r0, r1);
        Tensor tgt = slice(from_vector(b.tgt, {c.tgt_len + 1, c.batch}), 1, r0, r1);
        Tensor tgt_in = slice(tgt, 0, 0, c.tgt_len), tgt_out = slice(tgt, 0, 1, c.tgt_len + 1);
        StepTimes t{};
        const double t0 = now_s();
        {
            Tape tape;
            Tensor logits = model(src, tgt_in);
            Tensor loss = cross_entropy(reshape(logits, {-1, c.vocab}), reshape(tgt_out, {-1}),
                                        {.label_smoothing = c.smoothing});
            t.loss = loss.item();
            const double t1 = now_s();
            tape.backward(loss);
            t.fwd = t1 - t0;
        }
        if (h.after_backward) h.after_backward();
        const double t2 = now_s();
        t.bwd = t2 - t0 - t.fwd;
        opt.step();
        sched.step();
        opt.zero_grad();
        t.opt = now_s() - t2;
        if (s >= c.warmup) {
            print_step(t);
            if (h.after_step) h.after_step();
        }
    }
    const AllocatorStats a = allocator_stats();
    std::printf("ALLOC %.3f %.3f\n", double(a.peak_bytes_in_use) / (1 << 20), double(a.bytes_cached + a.bytes_in_use) / (1 << 20));
}

}  // namespace spool::bench
