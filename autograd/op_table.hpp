// The op table (docs/autograd.md): one row per OpKind with sample cases — input
// shapes (broadcasting and size-1 dims included), the input domain that keeps finite
// differences away from kinks and poles, and the call. The gradcheck suite iterates it,
// so an op cannot exist without being gradient-checked.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "autograd/gradcheck.hpp"
#include "autograd/op_kind.hpp"
#include "autograd/tensor.hpp"

namespace spool {

/// Where sample inputs are drawn from.
enum class Domain {
    any,        ///< standard normal
    positive,   ///< uniform [0.5, 2): log, sqrt, pow
    nonzero,    ///< normal with |x| >= 0.1: abs, relu (kink at 0)
    off_grid,   ///< normal kept 0.05 away from ±0.5: clamp's bounds in the samples
};

struct OpCase {
    std::string label;          ///< e.g. "broadcast (2,3)+(3,)"
    std::vector<Shape> shapes;  ///< differentiable inputs
    Domain domain = Domain::any;
    std::function<Tensor(const std::vector<Tensor>&)> fn;
    GradcheckOptions opts = {};  ///< PyTorch's defaults unless a row says why not
};

struct OpSpec {
    OpKind kind;
    std::vector<OpCase> cases;
};

/// One row per OpKind, in enum order.
const std::vector<OpSpec>& op_table();

/// Sample inputs for a case: float64, requires_grad, from the seeded generator.
std::vector<Tensor> make_inputs(const OpCase& c, DType dtype = DType::f64);

}  // namespace spool
