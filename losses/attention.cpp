// The attention-alignment loss (supervised attention, Liu et al. 2016): attention weights
// A [B, (H,) T, S] against gold alignments, in cross-entropy or squared-error form, averaged
// over the aligned target positions. Composed from ops. Letters: B batch, H heads, T target
// length, S source length.
#include <vector>

#include "losses/detail.hpp"
#include "losses/functional.hpp"

namespace spool::losses {

const char* alignment_form_name(AlignmentForm f) { return f == AlignmentForm::ce ? "ce" : "mse"; }

namespace {

constexpr std::string_view loss_name = "attention_alignment";

/// The [B, T, S] attention the loss supervises: attn itself, one head of it, or the heads' mean.
Tensor supervised_attention(const Tensor& attn, std::int64_t head)
{
    SPOOL_CHECK(attn.dim() == 3 || attn.dim() == 4, ShapeError, loss_name,
                ": expected attention weights of shape (B, T, S) or (B, H, T, S); got ", to_string(attn.shape()));
    if (attn.dim() == 3) {
        SPOOL_CHECK(head == -1, ValueError, loss_name, ": head ", head, " given, but attention ",
                    to_string(attn.shape()), " has no head dim");
        return attn;
    }
    const std::int64_t H = attn.shape()[1];
    SPOOL_CHECK(head >= -1 && head < H, ValueError, loss_name, ": head must be in [0, ", H,
                ") or -1 (the mean of the heads); got ", head, " for attention ", to_string(attn.shape()));
    return head == -1 ? mean(attn, {1}) : squeeze(slice(attn, 1, head, head + 1), 1);
}

/// Index targets: int64 [B, T] of source positions in [0, S) or ignore_index.
void check_index_alignment(const Tensor& target, const Shape& bts, std::int64_t ignore_index)
{
    const Shape want{bts[0], bts[1]};
    SPOOL_CHECK(target.shape() == want, ShapeError, loss_name, ": expected int64 target of shape ", to_string(want),
                " (one source position per target position) for attention ", to_string(bts), "; got target ",
                to_string(target.shape()));
    const std::int64_t* a = target.data<std::int64_t>();
    for (std::int64_t i = 0; i < target.numel(); ++i)
        SPOOL_CHECK(a[i] == ignore_index || (a[i] >= 0 && a[i] < bts[2]), ValueError, loss_name,
                    ": aligned source position ", a[i], " at target position ", i, " is out of range for ", bts[2],
                    " source positions (and is not ignore_index ", ignore_index, "); got attention ", to_string(bts),
                    " and target ", to_string(target.shape()));
}

/// One-hot rows of the index alignment, zero rows where it is ignore_index: G [B, T, S].
Tensor one_hot_alignment(const Tensor& target, const Shape& bts, std::int64_t ignore_index, DType dtype)
{
    Tensor g = zeros(bts, {.dtype = dtype});
    const std::int64_t* a = target.data<std::int64_t>();
    for (std::int64_t i = 0; i < target.numel(); ++i)
        if (a[i] != ignore_index) g.value().set(i * bts[2] + a[i], 1.0);
    return g;
}

/// Soft targets: rows that sum to 0 are unaligned, as are rows the mask excludes.
std::vector<bool> aligned_rows(const Tensor& g, const Tensor& mask)
{
    const std::int64_t rows = g.shape()[0] * g.shape()[1], S = g.shape()[2];
    std::vector<bool> keep(static_cast<std::size_t>(rows));
    for (std::int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (std::int64_t j = 0; j < S; ++j) s += g.value().at(r * S + j);
        keep[static_cast<std::size_t>(r)] = s != 0 && (!mask.defined() || mask.data<bool>()[r]);
    }
    return keep;
}

}  // namespace

void validate(const AttentionAlignmentLossOptions& o)
{
    SPOOL_CHECK(o.eps > 0, ValueError, loss_name, ": eps must be > 0; got ", o.eps);
    detail::check_at_least(static_cast<double>(o.head), -1, loss_name, "head (-1: the mean of the heads)");
    detail::check_reduction(o.reduction, loss_name);
}

// ce : −log max(A[t, a(t)], eps)            soft: −Σ_s G[t, s] log max(A[t, s], eps)
// mse: Σ_s (A[t, s] − G[t, s])²              (G the one-hot rows of a(t) for index targets)
// per aligned position t; mean divides by the number of aligned positions
Tensor attention_alignment_loss(const Tensor& attn, const Tensor& target, const Tensor& mask,
                                const AttentionAlignmentLossOptions& o)
{
    detail::check_float_input(attn, loss_name, "attention");
    SPOOL_CHECK(target.defined(), ValueError, loss_name, ": target tensor is undefined");
    validate(o);
    const Tensor A = supervised_attention(attn, o.head);
    const Shape bts = A.shape();
    const std::int64_t B = bts[0], T = bts[1], S = bts[2];
    if (mask.defined())
        SPOOL_CHECK(mask.dtype() == DType::b8 && mask.shape() == Shape({B, T}), ShapeError, loss_name,
                    ": mask must be bool of shape ", to_string(Shape{B, T}), " for attention ", to_string(bts),
                    "; got ", dtype_name(mask.dtype()), " mask ", to_string(mask.shape()));

    if (target.dtype() == DType::i64) {
        check_index_alignment(target, bts, o.ignore_index);
        const detail::Kept kept = detail::kept_positions(target, o.ignore_index, mask, loss_name);
        Tensor rows;
        if (o.form == AlignmentForm::ce) {
            const Tensor picked = detail::pick_classes(reshape(A, {B * T, S}), reshape(target, {B * T}), kept);
            rows = -log(clamp(picked, o.eps, std::nullopt));
        } else {
            const Tensor d = A - one_hot_alignment(target, bts, o.ignore_index, A.dtype());
            rows = detail::select_kept(sum(d * d, {-1}), kept);
        }
        return detail::reduce_kept(rows, kept, o.reduction, static_cast<double>(kept.count()));
    }

    SPOOL_CHECK(is_floating(target.dtype()) && target.shape() == bts, ShapeError, loss_name,
                ": expected an int64 target of shape ", to_string(Shape{B, T}), " or a soft alignment of shape ",
                to_string(bts), " for attention ", to_string(bts), "; got ", dtype_name(target.dtype()), " target ",
                to_string(target.shape()));
    SPOOL_CHECK(target.dtype() == A.dtype(), TypeError, loss_name, ": soft alignment must have the attention's dtype ",
                dtype_name(A.dtype()), "; got ", dtype_name(target.dtype()));
    const detail::Kept kept = detail::kept_where(aligned_rows(target, mask), Shape{B, T});
    Tensor per_row;
    if (o.form == AlignmentForm::ce) {
        per_row = -sum(target * log(clamp(A, o.eps, std::nullopt)), {-1});
    } else {
        const Tensor d = A - target;
        per_row = sum(d * d, {-1});
    }
    return detail::reduce_kept(detail::select_kept(per_row, kept), kept, o.reduction,
                               static_cast<double>(kept.count()));
}

}  // namespace spool::losses
