// spool::gradcheck: compare the tape's gradients with central finite differences, like
// torch.autograd.gradcheck (same defaults: eps 1e-6, atol 1e-5, rtol 1e-3). Small
// problems get the full Jacobian (one backward per output element); large ones a
// random-direction check (random seed over the outputs, random direction over inputs).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/tensor.hpp"

namespace spool {

struct GradcheckOptions {
    double eps = 1e-6;   ///< finite-difference step
    double atol = 1e-5;  ///< |analytical - numerical| <= atol + rtol * |numerical|
    double rtol = 1e-3;
    /// Use the full Jacobian while (output elements) x (input elements) stays below this.
    std::int64_t max_full_jacobian = 1 << 16;
    int random_directions = 4;  ///< directions tried in the random check
};

struct GradcheckResult {
    bool ok = true;
    bool full_jacobian = true;
    int checked = 0;          ///< Jacobian entries (or directions) compared
    double max_abs_err = 0;   ///< largest |analytical - numerical|
    std::string message;      ///< first failure: input, element, both values
    explicit operator bool() const { return ok; }
};

using GradcheckFn = std::function<Tensor(const std::vector<Tensor>&)>;

/// Check fn's gradients at inputs. Inputs that require grad must be float64 (they are
/// perturbed in place and restored); the others are passed through unchanged. The RNG
/// state is reset before every evaluation, so dropout is deterministic across them.
GradcheckResult gradcheck(const GradcheckFn& fn, const std::vector<Tensor>& inputs, const GradcheckOptions& opts = {});

}  // namespace spool
