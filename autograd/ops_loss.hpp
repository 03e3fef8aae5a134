// Loss primitives with hand-written backward (docs/losses.md): the fused
// cross-entropy (torch.nn.functional.cross_entropy: log-softmax, NLL, label smoothing,
// class weights, ignore_index and the reduction in one op), logsumexp and logsigmoid.
// The Loss classes, the registry and the losses composed from ops are in losses/.
#pragma once
#include <cstdint>
#include <string_view>

#include "autograd/tensor.hpp"
#include "tensor/loss_kernels.hpp"

namespace spool {

/// How a loss reduces its per-element values. batchmean (sum / batch size) is kl_div's only.
enum class Reduction { none, mean, sum, batchmean };

/// "none", "mean", "sum", "batchmean".
const char* reduction_name(Reduction r);
/// The Reduction called name; throws ValueError naming loss and the bad name.
Reduction parse_reduction(std::string_view name, std::string_view loss = "loss");

/// torch.nn.functional.cross_entropy's options, same names, order and defaults.
struct CrossEntropyOptions {
    Tensor weight = {};                 ///< class weights [C] (undefined: all 1), not differentiated
    std::int64_t ignore_index = -100;   ///< class-index targets equal to it count for nothing
    Reduction reduction = Reduction::mean;
    double label_smoothing = 0.0;       ///< ε in [0, 1): target (1 − ε)·onehot + ε/C
};

/// Throws ValueError naming cross_entropy for label_smoothing outside [0, 1) or reduction batchmean.
void validate(const CrossEntropyOptions& options);

/// Cross-entropy from logits, exactly F.cross_entropy. input (C), (N, C) or (N, C, d1, ...);
/// target int64 class indices (), (N) or (N, d1, ...), or class probabilities of input's shape.
/// 'mean' divides by the summed weight of non-ignored targets (N·d for probabilities).
/// When that is 0 (every target ignored) the loss is 0 with zero gradients; PyTorch gives NaN.
/// Likewise a class with −inf logit (masked) and no target mass (weight 0, or probability 0
/// with no smoothing) adds 0, where PyTorch's 0 · −inf gives NaN.
/// When the logits require grad on a live tape, the forward also writes their gradient (the
/// one [N, C] buffer) in its single pass over them; backward then only scales it by dy.
/// (N, C, d1, ...) inputs are transposed to (N·d, C) first: one extra copy of the logits.
Tensor cross_entropy(const Tensor& input, const Tensor& target, const CrossEntropyOptions& options = {});

/// The fused primitive behind cross_entropy (OpKind::CrossEntropy), for losses whose target
/// distribution is another q of the family in kernels::CrossEntropySpec (losses/ builds "The
/// Annotated Transformer" label smoothing on it). logits [N, C]; target int64 [N] or float
/// [N, C]; weight [C] or undefined; loss names the caller in error messages.
Tensor fused_cross_entropy(const Tensor& logits, const Tensor& target, const Tensor& weight,
                           const kernels::CrossEntropySpec& spec, Reduction reduction,
                           const char* loss = "cross_entropy");

/// torch.logsumexp: log Σ exp(x) over dim, the max subtracted so exp cannot overflow.
Tensor logsumexp(const Tensor& x, int dim, bool keepdim = false);

/// F.logsigmoid: log σ(x) = −softplus(−x), finite for every finite x; gradient σ(−x).
Tensor logsigmoid(const Tensor& x);

// ---- checks shared with losses/ ----------------------------------------------------------------
namespace detail {
/// The shape of class-index targets for input (C), (N, C), (N, C, d1, ...): input's shape
/// without the class dim (dim 1, or 0 for an unbatched (C) input).
Shape class_index_shape(const Shape& input);
/// Class-index targets for input: int64, class_index_shape(input), every value in [0, C) or
/// equal to ignore_index. Messages name loss, the bad value and both shapes.
void check_class_index_target(const Tensor& input, const Tensor& target, std::int64_t ignore_index,
                              std::string_view loss);
/// Class weights: shape (C,) and the input's dtype.
void check_class_weight(const Tensor& weight, const Tensor& input, std::int64_t C, std::string_view loss);
/// none, mean or sum — and batchmean where batchmean_ok (kl_div).
void check_reduction(Reduction r, std::string_view loss, bool batchmean_ok = false);
}  // namespace detail

}  // namespace spool
