// Loss primitives (see ops_loss.hpp): fused cross-entropy with its reductions, logsumexp,
// logsigmoid. Kernels are in tensor/loss_kernels.cpp; the checks here run before any
// allocation and name the loss, the bad value and the shapes. Letters: N rows (N·d for
// (N, C, d1, ...) inputs), C classes.
#include "autograd/ops_loss.hpp"

#include <memory>
#include <vector>

#include "autograd/checks.hpp"
#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"

namespace spool {

namespace k = kernels;

const char* reduction_name(Reduction r)
{
    switch (r) {
    case Reduction::none: return "none";
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
    case Reduction::batchmean: return "batchmean";
    }
    return "?";
}

Reduction parse_reduction(std::string_view name, std::string_view loss)
{
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum, Reduction::batchmean})
        if (name == reduction_name(r)) return r;
    throw ValueError(detail::cat(loss, ": reduction must be none, mean, sum or batchmean; got '", name, "'"));
}

namespace detail {

Shape class_index_shape(const Shape& input)
{
    Shape s;
    for (int i = 0; i < input.rank(); ++i)
        if (i != (input.rank() == 1 ? 0 : 1)) s.push_back(input[i]);
    return s;
}

void check_class_index_target(const Tensor& input, const Tensor& target, std::int64_t ignore_index,
                              std::string_view loss)
{
    SPOOL_CHECK(target.defined(), ValueError, loss, ": target tensor is undefined");
    SPOOL_CHECK(input.dim() >= 1, ShapeError, loss, ": expected input of shape (C), (N, C) or (N, C, d1, ...); got ",
                to_string(input.shape()));
    const Shape want = class_index_shape(input.shape());
    SPOOL_CHECK(target.dtype() == DType::i64, TypeError, loss, ": class-index targets must be int64; got ",
                dtype_name(target.dtype()), " target ", to_string(target.shape()), " for input ",
                to_string(input.shape()));
    if (target.shape() != want) {
        // the common slip: sequence logits [N, T, V] with classes last, as most models give them
        const Shape classes_last(std::vector<std::int64_t>(input.shape().begin(), input.shape().end() - 1));
        const bool last = input.dim() >= 3 && target.shape() == classes_last;
        throw ShapeError(detail::cat(loss, ": expected target of shape ", to_string(want), " for input ",
                                     to_string(input.shape()), "; got target ", to_string(target.shape()),
                                     last ? ". Classes are dim 1, as in PyTorch: for logits with classes last "
                                            "flatten them to (N*T, C) and the target to (N*T), or permute the "
                                            "logits to (N, C, T)"
                                          : ""));
    }
    const std::int64_t C = input.shape()[input.dim() == 1 ? 0 : 1];
    const std::int64_t* y = target.data<std::int64_t>();
    for (std::int64_t i = 0; i < target.numel(); ++i)
        SPOOL_CHECK(y[i] == ignore_index || (y[i] >= 0 && y[i] < C), ValueError, loss, ": target ", y[i],
                    " at position ", i, " is out of bounds for ", C, " classes (and is not ignore_index ",
                    ignore_index, "); got input ", to_string(input.shape()), " and target ", to_string(target.shape()));
}

void check_class_weight(const Tensor& weight, const Tensor& input, std::int64_t C, std::string_view loss)
{
    SPOOL_CHECK(weight.dim() == 1 && weight.numel() == C && weight.dtype() == input.dtype(), ValueError, loss,
                ": weight must have shape (", C, ",) (one per class) and the input's dtype ", dtype_name(input.dtype()),
                "; got weight ", to_string(weight.shape()), " ", dtype_name(weight.dtype()), " for input ",
                to_string(input.shape()));
}

void check_reduction(Reduction r, std::string_view loss, bool batchmean_ok)
{
    SPOOL_CHECK(r != Reduction::batchmean || batchmean_ok, ValueError, loss,
                ": reduction 'batchmean' is kl_div's only; use none, mean or sum");
}

}  // namespace detail

namespace {

/// Σ of the per-row losses (accumulated in double), divided for 'mean' by total — 0 when
/// total is 0, where PyTorch's 0/0 gives NaN.
Value reduce_rows(const Value& loss, Reduction r, double total)
{
    if (r == Reduction::none) return loss;
    double s = 0;
    for (std::int64_t i = 0; i < loss.numel(); ++i) s += loss.at(i);
    if (r == Reduction::mean) s = total > 0 ? s / total : 0.0;
    return Value::full(Shape{}, s, loss.dtype());
}

/// The gradient scale of each row from the reduced output's gradient dy.
Value row_scale(const Value& dy, Reduction r, double total)
{
    if (r == Reduction::mean) return k::mul_scalar(dy, total > 0 ? 1.0 / total : 0.0);
    return dy;  // none: dy[i] for row i; sum: dy for every row
}

}  // namespace

// ---- cross-entropy -------------------------------------------------------------------------------

// fused_cross_entropy(z [N, C], target, w) -> per-row loss_i = Σ_c q_ic (lse_i − z_ic), reduced
//   backward: dz_i += dy_i (mass_i softmax(z_i) − q_i) / (Σw for mean)
//             dt_i += dy_i on w ⊙ (lse_i − z_i) / (Σw for mean)      (probability targets)
//   When z requires grad, the forward writes dz for dy = 1 in the same pass over the logits and
//   saves it: backward scales it by dy in place (nothing when dy is 1, as for loss.backward()).
//   saves that dz; z and the row statistics only when a probability target needs a gradient
Tensor fused_cross_entropy(const Tensor& logits, const Tensor& target, const Tensor& weight,
                           const k::CrossEntropySpec& spec, Reduction reduction, const char* loss)
{
    detail::OpProfile prof(OpKind::CrossEntropy);
    detail::check_float(logits, loss);
    SPOOL_CHECK(target.defined(), ValueError, loss, ": target tensor is undefined");
    SPOOL_CHECK(logits.dim() == 2, ShapeError, loss, ": expected input of shape (N, C); got ",
                to_string(logits.shape()));
    if (is_floating(target.dtype())) {
        SPOOL_CHECK(target.shape() == logits.shape(), ShapeError, loss,
                    ": class probabilities must have the input's shape; got input ", to_string(logits.shape()),
                    " and target ", to_string(target.shape()));
        SPOOL_CHECK(target.dtype() == logits.dtype(), TypeError, loss,
                    ": class probabilities must have the input's dtype; got input ", dtype_name(logits.dtype()),
                    " and target ", dtype_name(target.dtype()));
    } else {
        detail::check_class_index_target(logits, target, spec.ignore_index, loss);
    }
    if (weight.defined()) detail::check_class_weight(weight, logits, logits.shape()[1], loss);
    detail::check_reduction(reduction, loss);

    const Value zv = logits.value(), tv = target.value(), wv = weight.defined() ? weight.value() : Value();
    Value dz;
    k::CrossEntropyRows rows = k::cross_entropy_forward(zv, tv, wv, spec, detail::recording(&logits, 1) ? &dz : nullptr,
                                                        reduction == Reduction::mean);
    Value out = reduce_rows(rows.loss, reduction, rows.total_weight);
    const bool target_grad = is_floating(target.dtype()) && target.requires_grad();
    if (!target_grad) rows = {};  // only the target's gradient needs the row statistics and z
    const Value zs = target_grad ? zv : Value();
    // backward runs once: it takes the saved gradient out of its slot and hands that very buffer
    // on as the logits' gradient (no copy: nothing else holds it then)
    const auto slot = std::make_shared<Value>(dz);
    dz = Value();
    auto backward = [slot, zs, wv, rows, spec, reduction](const Value& dy, Grads& dx) {
        if (dx.needs(0)) {
            Value g = std::move(*slot);
            if (dy.numel() != 1 || dy.at(0) != 1.0) k::scale_rows_(g, dy);
            dx.add(0, std::move(g));
        }
        if (dx.needs(1))
            dx.add(1, k::cross_entropy_target_backward(row_scale(dy, reduction, rows.total_weight), zs, wv, rows, spec));
    };
    if (!target_grad) return record(OpKind::CrossEntropy, {logits, target}, std::move(out), std::move(backward), {*slot});
    return record(OpKind::CrossEntropy, {logits, target}, std::move(out), std::move(backward),
                  {*slot, zs, rows.max, rows.log_sum});
}

void validate(const CrossEntropyOptions& o)
{
    SPOOL_CHECK(o.label_smoothing >= 0.0 && o.label_smoothing < 1.0, ValueError,
                "cross_entropy: label_smoothing must be in [0, 1); got ", o.label_smoothing);
    detail::check_reduction(o.reduction, "cross_entropy");
}

// cross_entropy(input, target) = fused_cross_entropy over (N·d, C) rows with on = 1 − ε, off = ε/C
Tensor cross_entropy(const Tensor& input, const Tensor& target, const CrossEntropyOptions& o)
{
    constexpr const char* op = "cross_entropy";
    detail::check_float(input, op);
    SPOOL_CHECK(target.defined(), ValueError, op, ": target tensor is undefined");
    SPOOL_CHECK(input.dim() >= 1, ShapeError, op, ": expected input of shape (C), (N, C) or (N, C, d1, ...); got ",
                to_string(input.shape()));
    validate(o);
    const int r = input.dim();
    const std::int64_t C = input.shape()[r == 1 ? 0 : 1];
    const Shape index_shape = detail::class_index_shape(input.shape());
    const bool prob = is_floating(target.dtype());
    if (prob) {
        SPOOL_CHECK(target.shape() == input.shape(), ShapeError, op,
                    ": class probabilities must have the input's shape; got input ", to_string(input.shape()),
                    " and target ", to_string(target.shape()), " (class indices would be int64 of shape ",
                    to_string(index_shape), ")");
        SPOOL_CHECK(o.ignore_index < 0, ValueError, op,
                    ": ignore_index is not supported for class-probability targets; got ignore_index ", o.ignore_index);
    } else {
        detail::check_class_index_target(input, target, o.ignore_index, op);
    }
    if (o.weight.defined()) detail::check_class_weight(o.weight, input, C, op);
    const k::CrossEntropySpec spec{
        .on = 1.0 - o.label_smoothing, .off = o.label_smoothing / static_cast<double>(C), .ignore_index = o.ignore_index};

    // to rows [M, C]: (C) is one row; (N, C, d1, ...) moves the class dim last
    const std::int64_t M = index_shape.numel();
    Tensor z = input, t = target;
    if (r != 2) {
        if (r > 2) {
            std::vector<int> perm{0};
            for (int i = 2; i < r; ++i) perm.push_back(i);
            perm.push_back(1);
            z = permute(input, perm);
            if (prob) t = permute(target, perm);
        }
        z = reshape(z, {M, C});
        t = prob ? reshape(t, {M, C}) : reshape(t, {M});
    }
    Tensor loss = fused_cross_entropy(z, t, o.weight, spec, o.reduction, op);
    return o.reduction == Reduction::none ? reshape(loss, index_shape.vec()) : loss;
}

// ---- logsumexp -------------------------------------------------------------------------------------

// logsumexp(x, dim) -> y = m + log Σ exp(x − m)        dx += dy · exp(x − y)
//   dim is moved last (a copy only when it is not last already); saves x's rows and y
Tensor logsumexp(const Tensor& x, int dim, bool keepdim)
{
    detail::OpProfile prof(OpKind::LogSumExp);
    detail::check_float(x, "logsumexp");
    const int d = normalize_axis(dim, x.dim(), "logsumexp");
    const Shape s = x.dim() == 0 ? Shape{1} : x.shape();
    std::vector<int> perm;
    for (int i = 0; i < s.rank(); ++i)
        if (i != d) perm.push_back(i);
    perm.push_back(d);
    const bool moved = d != s.rank() - 1;
    const Value xv = moved ? k::permute(x.value(), perm) : x.value().view(s);
    const std::int64_t C = s[d], N = s.prod(0, d) * s.prod(d + 1, s.rank());
    const Value rows = xv.view(Shape{N, C});
    const Value lse = k::logsumexp_rows(rows);
    Shape out;
    for (int i = 0; i < x.dim(); ++i)
        if (i != d) out.push_back(s[i]);
        else if (keepdim) out.push_back(1);
    return record(
        OpKind::LogSumExp, {x}, lse.view(out),
        [rows, lse, moved, perm, moved_shape = xv.shape(), xs = x.shape()](const Value& dy, Grads& dx) {
            Value g = k::logsumexp_rows_backward(dy.view(lse.shape()), rows, lse);
            if (moved) {
                std::vector<int> inverse(perm.size());
                for (std::size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int>(i);
                g = k::permute(g.view(moved_shape), inverse);
            }
            dx.add(0, g.view(xs));
        },
        {rows, lse});
}

// ---- logsigmoid --------------------------------------------------------------------------------------

// logsigmoid(x) -> y = log σ(x) = min(x, 0) − log1p(exp(−|x|))        dx += dy · σ(−x)        saves x
Tensor logsigmoid(const Tensor& x)
{
    detail::OpProfile prof(OpKind::LogSigmoid);
    detail::check_float(x, "logsigmoid");
    const Value xv = x.value();
    return record(
        OpKind::LogSigmoid, {x}, k::log_sigmoid(xv),
        [xv](const Value& dy, Grads& dx) { dx.add(0, k::log_sigmoid_backward(dy, xv)); }, {xv});
}

}  // namespace spool
