#include "optim/clip.hpp"

#include <cmath>

#include "tensor/optim_kernels.hpp"
#include "tensor/profiler.hpp"

namespace spool::optim {

namespace {

/// The gradients to clip in place. A gradient buffer shared with another owner (autograd
/// may hand the same buffer to two leaves, e.g. both inputs of an add) is copied first,
/// so that scaling one parameter's gradient never scales another's twice.
std::vector<Value*> own_grads(const std::vector<Tensor>& params)
{
    std::vector<Value*> grads;
    for (const Tensor& p : params) {
        if (!p.defined()) continue;
        Value& g = p.impl()->grad;
        if (!g.defined()) continue;
        if (g.use_count() > 1) g = g.clone();
        grads.push_back(&g);
    }
    return grads;
}

}  // namespace

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite)
{
    profiler::Scope prof("clip_grad_norm", profiler::Pass::optimizer);
    SPOOL_CHECK(norm_type > 0, ValueError, "clip_grad_norm: norm_type must be positive (or INFINITY); got ", norm_type);
    std::vector<Value*> grads = own_grads(params);
    if (grads.empty()) return 0.0;
    std::vector<const Value*> view(grads.begin(), grads.end());
    double total;
    if (std::isinf(norm_type)) total = kernels::max_abs(view);
    else if (norm_type == 2.0) total = std::sqrt(kernels::sum_squares(view));
    else total = std::pow(kernels::sum_abs_pow(view, norm_type), 1.0 / norm_type);
    SPOOL_CHECK(!error_if_nonfinite || std::isfinite(total), ValueError, "clip_grad_norm: the total norm of order ",
                norm_type, " of the gradients is non-finite (", total,
                "), so it cannot be clipped; pass error_if_nonfinite = false to scale by it anyway");
    const double coef = max_norm / (total + 1e-6);
    // PyTorch multiplies by min(coef, 1) always; a factor of exactly 1 changes nothing, so skip the pass
    if (!(coef >= 1.0)) kernels::scale_(grads, coef);
    return total;
}

void clip_grad_value(const std::vector<Tensor>& params, double clip_value)
{
    profiler::Scope prof("clip_grad_value", profiler::Pass::optimizer);
    SPOOL_CHECK(clip_value >= 0, ValueError, "clip_grad_value: clip_value must be non-negative; got ", clip_value);
    kernels::clamp_(own_grads(params), -clip_value, clip_value);
}

}  // namespace spool::optim
