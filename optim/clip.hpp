// Gradient clipping, torch.nn.utils.clip_grad_norm_ / clip_grad_value_: in place on the
// parameters' gradients; parameters without a gradient are skipped. Call between
// backward and optimizer.step(); with gradient accumulation, after the last backward.
#pragma once
#include <vector>

#include "autograd/tensor.hpp"

namespace spool::optim {

/// Scales all gradients by min(1, max_norm / (total_norm + 1e-6)), where total_norm is
/// the norm_type-norm of all gradients as one vector (norm_type may be INFINITY), and
/// returns total_norm (0 when no parameter has a gradient). A non-finite total norm
/// throws ValueError when error_if_nonfinite; otherwise the gradients are scaled by it
/// (becoming NaN), as in PyTorch.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = false);

/// Clamps every gradient element to [-clip_value, clip_value].
void clip_grad_value(const std::vector<Tensor>& params, double clip_value);

}  // namespace spool::optim
