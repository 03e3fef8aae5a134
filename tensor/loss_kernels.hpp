// Fused loss kernels (docs/losses.md): cross-entropy from logits — log-softmax, NLL,
// label smoothing, class weights and ignore_index in one pass over each row — with its
// hand-written backward ((softmax − q) scaled), plus logsumexp over rows and log-sigmoid,
// the pieces other losses are composed from. No gradients, no tape, no reductions across
// rows: autograd/ops_loss.cpp records these and reduces. Letters: N rows, C classes; a
// row is contiguous, so logits are [N, C]. Shapes and targets are checked by the caller.
#pragma once
#include <cstdint>

#include "tensor/value.hpp"

namespace spool::kernels {

/// The target distribution q of a row, written so that every cross-entropy form is one kernel.
///   class-index target y (int64 [N]):     q_c = on · w_y · [c == y] + off · w_c
///   probability target t (float [N, C]):  q_c = w_c · (on · t_c + off)
/// w are the class weights (all 1 without weights). PyTorch's label smoothing ε is
/// on = 1 − ε, off = ε / C; "The Annotated Transformer" form is on = 1 − ε − ε/(C−2),
/// off = ε/(C−2) with w = 0 on the padding class and row_offset = Σ q log q.
struct CrossEntropySpec {
    double on = 1.0;                   ///< mass on the target class (times its weight)
    double off = 0.0;                  ///< mass spread over all classes (times each weight)
    std::int64_t ignore_index = -100;  ///< class-index rows with this target count for nothing
    double row_offset = 0.0;           ///< added to each counted row (Σ q log q makes H(q, p) a KL)
};

/// Per-row results of the forward pass: what the reduction and the backward need.
struct CrossEntropyRows {
    Value loss;               ///< [N] Σ_c q_c (lse − z_c) + row_offset; 0 on ignored rows
    Value max;                ///< [N] m = max_c z_c (0 for a row of −inf); 0 on ignored rows
    Value log_sum;            ///< [N] log Σ_c exp(z_c − m), so lse = m + log_sum; 0 on ignored rows
    double total_weight = 0;  ///< 'mean''s divisor: Σ w_y over counted rows, or N for probability targets
};

/// Forward over logits [N, C] (float32/float64); weight is [C] or undefined. Each row is read
/// from memory once (a max pass, then an exp/sum pass that finds it in cache). With grad
/// non-null the gradient of Σ_i loss_i (of their mean with grad_of_mean) is written there in
/// the same pass, from a cached row of exps — dlogits[i, c] = g (mass_i softmax(z_i)_c − q_ic),
/// mass_i = Σ_c q_ic, 0 on ignored rows — so backward only rescales it (scale_rows_) and the
/// logits are read once in all. That gradient is the only [N, C] buffer.
CrossEntropyRows cross_entropy_forward(const Value& logits, const Value& target, const Value& weight,
                                       const CrossEntropySpec& spec, Value* grad = nullptr, bool grad_of_mean = false);
/// x[i, :] *= g_i in place; g has one element (the same for every row) or N.
void scale_rows_(Value& x, const Value& g);
/// Probability targets only: dtarget[i, c] = g_i · on · w_c · (lse_i − z_ic) = −g_i · on · w_c · log_softmax(z_i)_c.
Value cross_entropy_target_backward(const Value& g, const Value& logits, const Value& weight,
                                    const CrossEntropyRows& rows, const CrossEntropySpec& spec);

/// log Σ_c exp x[i, c] over the rows of x [N, C] -> [N]; the row max is subtracted so exp
/// cannot overflow. A row of all −inf gives −inf.
Value logsumexp_rows(const Value& x);
/// dx[i, c] = g_i · exp(x[i, c] − lse_i)
Value logsumexp_rows_backward(const Value& g, const Value& x, const Value& lse);

/// log σ(x) = min(x, 0) − log1p(exp(−|x|)): finite for any finite x, exact for large |x|.
Value log_sigmoid(const Value& x);
/// dx = dy · σ(−x) = dy / (1 + exp(x))
Value log_sigmoid_backward(const Value& dy, const Value& x);

}  // namespace spool::kernels
