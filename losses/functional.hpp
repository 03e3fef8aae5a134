// The losses as functions (torch.nn.functional's names where PyTorch has the loss), each
// with an options struct of PyTorch's field names and defaults. cross_entropy is the fused
// primitive of autograd/ops_loss.hpp; label_smoothing_kl runs on that primitive too; the
// others are composed from differentiable ops. The Loss classes (loss.hpp) wrap these.
// Letters: N batch, C classes, d extra dims, B batch, H heads, T target length, S source length.
#pragma once
#include <cstdint>

#include "autograd/ops_loss.hpp"

namespace spool::losses {

using spool::cross_entropy;
using spool::CrossEntropyOptions;
using spool::Reduction;
using spool::validate;

// ---- classification -----------------------------------------------------------------------

/// F.nll_loss's options.
struct NLLLossOptions {
    Tensor weight = {};                ///< class weights [C] (undefined: all 1)
    std::int64_t ignore_index = -100;  ///< targets equal to it count for nothing
    Reduction reduction = Reduction::mean;
};

/// F.nll_loss: −w_y · input[y] for log-probabilities input (C), (N, C) or (N, C, d1, ...) and
/// int64 targets (), (N) or (N, d1, ...); 'mean' divides by Σ w_y over non-ignored targets
/// (0 when nothing is counted: the loss is 0, where PyTorch gives NaN).
Tensor nll_loss(const Tensor& input, const Tensor& target, const NLLLossOptions& options = {});

/// "The Annotated Transformer"'s LabelSmoothing criterion (field names from there).
struct LabelSmoothingKLOptions {
    std::int64_t padding_idx = 0;  ///< its class gets no mass; rows whose target it is are dropped
    double smoothing = 0.0;        ///< ε in [0, 1): 1 − ε on the target, ε/(V − 2) on the other non-padding classes
    Reduction reduction = Reduction::mean;  ///< mean: summed, then divided by the non-padding token count
};

/// KL(q ‖ softmax(input)) with the Annotated Transformer's smoothed target q. input (N, V) logits
/// or log-probabilities (log_softmax is idempotent, so both give the same loss), target int64 (N).
/// Differs from cross_entropy's label_smoothing: see docs/losses.md.
Tensor label_smoothing_kl(const Tensor& input, const Tensor& target, const LabelSmoothingKLOptions& options = {});

/// Focal loss (Lin et al. 2017), multiclass.
struct FocalLossOptions {
    double gamma = 2.0;                ///< γ >= 0; 0 gives cross-entropy
    Tensor alpha = {};                 ///< per-class balancing weights [C] (undefined: none)
    std::int64_t ignore_index = -100;
    Reduction reduction = Reduction::mean;  ///< mean: over non-ignored targets (not divided by Σ α_y)
};

/// −α_y (1 − p_y)^γ log p_y with p = softmax(input) over the class dim; input and target as for
/// cross_entropy (class indices). (1 − p_y)^γ has zero gradient where p_y rounds to 1, also for γ < 1.
Tensor focal_loss(const Tensor& input, const Tensor& target, const FocalLossOptions& options = {});

/// z-loss (PaLM, Chowdhery et al. 2022): keeps the softmax normalizer log Z near 0.
struct ZLossOptions {
    double coefficient = 1e-4;         ///< PaLM's 1e-4
    std::int64_t ignore_index = -100;  ///< positions whose target equals it are dropped
    Reduction reduction = Reduction::mean;  ///< mean: over counted positions
};

/// coefficient · logsumexp(input over the class dim)². input as for cross_entropy; target (int64
/// class indices, may be undefined) only selects the positions that count. Add it to a
/// cross-entropy: cross_entropy(z, y) + z_loss(z, y).
Tensor z_loss(const Tensor& input, const Tensor& target = {}, const ZLossOptions& options = {});

// ---- pointwise ------------------------------------------------------------------------------

/// F.kl_div's options. 'mean' averages over every element (PyTorch's default, not the KL);
/// 'batchmean' divides the sum by the batch size (the KL divergence per sample).
struct KLDivLossOptions {
    Reduction reduction = Reduction::mean;
    bool log_target = false;  ///< target given as log-probabilities
};

/// F.kl_div: target · (log target − input) (0 where target is 0), or exp(target) · (target −
/// input) with log_target; input holds log-probabilities of the same shape as target.
Tensor kl_div(const Tensor& input, const Tensor& target, const KLDivLossOptions& options = {});

/// F.mse_loss's options.
struct MSELossOptions {
    Reduction reduction = Reduction::mean;
};

/// F.mse_loss: (input − target)² for same-shaped input and target.
Tensor mse_loss(const Tensor& input, const Tensor& target, const MSELossOptions& options = {});

/// F.binary_cross_entropy_with_logits's options.
struct BCEWithLogitsLossOptions {
    Tensor weight = {};      ///< per-element weights, broadcast to the input (undefined: none)
    Reduction reduction = Reduction::mean;
    Tensor pos_weight = {};  ///< weight of positive examples, broadcast along the last dim (undefined: 1)
};

/// F.binary_cross_entropy_with_logits: −w [p_w y log σ(x) + (1 − y) log σ(−x)] through logsigmoid,
/// so it is finite and exact for logits of any size, and smooth at x = 0.
Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target,
                                        const BCEWithLogitsLossOptions& options = {});

// ---- attention ------------------------------------------------------------------------------

/// The two forms of the attention-alignment loss.
enum class AlignmentForm {
    ce,   ///< −log A[t, a(t)] (soft: −Σ_s G[t, s] log A[t, s]), Liu et al. 2016
    mse,  ///< Σ_s (A[t, s] − G[t, s])²
};

/// "ce" or "mse".
const char* alignment_form_name(AlignmentForm f);

struct AttentionAlignmentLossOptions {
    AlignmentForm form = AlignmentForm::ce;
    std::int64_t head = -1;            ///< [B, H, T, S] input: supervise this head; −1 averages the heads
    std::int64_t ignore_index = -100;  ///< index targets equal to it are unaligned
    Reduction reduction = Reduction::mean;  ///< mean: over aligned target positions
    double eps = 1e-12;                ///< ce form: log(max(A, eps)), so a zero weight gives a finite loss
};

/// Supervised attention: attention weights attn [B, T, S] or [B, H, T, S] (rows sum to 1 over S)
/// against gold alignments — target int64 [B, T] (the source position aligned to each target
/// position) or float [B, T, S] (a soft alignment G). mask bool [B, T] (optional) marks the
/// aligned positions; index targets equal to ignore_index and soft rows summing to 0 are
/// unaligned too. Per aligned position t the loss is the form's; 'none' gives [B, T] (0 where
/// unaligned). Combine with the token loss: cross_entropy(logits, y) + λ · alignment.
Tensor attention_alignment_loss(const Tensor& attn, const Tensor& target, const Tensor& mask = {},
                                const AttentionAlignmentLossOptions& options = {});

// ---- option checks ----------------------------------------------------------------------------
// Each throws ValueError naming the loss and the bad value; the functions above and the Loss
// classes' constructors call them.
void validate(const NLLLossOptions& options);
void validate(const LabelSmoothingKLOptions& options);
void validate(const FocalLossOptions& options);
void validate(const ZLossOptions& options);
void validate(const KLDivLossOptions& options);
void validate(const MSELossOptions& options);
void validate(const BCEWithLogitsLossOptions& options);
void validate(const AttentionAlignmentLossOptions& options);

}  // namespace spool::losses

// ---- the same functions under spool:: --------------------------------------------------------
// torch.nn.functional keeps every loss in one namespace; here each loss function and its
// options are reachable both as spool::losses::name (above) and as spool::name (below, and
// cross_entropy, declared in spool::). Using-declarations: one function, two spellings.
// The Loss classes and the registry (loss.hpp, registry.hpp) stay in spool::losses.
namespace spool {
using losses::AlignmentForm;
using losses::AttentionAlignmentLossOptions;
using losses::BCEWithLogitsLossOptions;
using losses::FocalLossOptions;
using losses::KLDivLossOptions;
using losses::LabelSmoothingKLOptions;
using losses::MSELossOptions;
using losses::NLLLossOptions;
using losses::ZLossOptions;
using losses::alignment_form_name;
using losses::attention_alignment_loss;
using losses::binary_cross_entropy_with_logits;
using losses::focal_loss;
using losses::kl_div;
using losses::label_smoothing_kl;
using losses::mse_loss;
using losses::nll_loss;
using losses::validate;
using losses::z_loss;
}  // namespace spool
