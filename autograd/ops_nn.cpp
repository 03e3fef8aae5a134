// linear, layer_norm and scaled dot-product attention: the fused primitives of nn.
// Dimension letters: N rows (all leading dims flattened), B flattened batch dims,
// L query length, S key length, E query/key width, Ev value width.
#include <algorithm>
#include <cmath>
#include <utility>

#include "autograd/ops.hpp"
#include "autograd/ops_nn.hpp"
#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"
#include "tensor/nn_kernels.hpp"

namespace spool {

namespace k = kernels;

// linear(x, W, b) -> y[N, out] = x[N, in] Wᵀ + b
//   dx += dy W,  dW += dyᵀ x,  db += Σ_N dy           saves x, W
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias)
{
    detail::OpProfile prof(OpKind::Linear);
    SPOOL_CHECK(x.defined() && weight.defined(), ValueError, "linear: input or weight is undefined");
    SPOOL_CHECK(weight.dim() == 2, ShapeError, "linear: weight must be 2-D [out_features, in_features]; got ",
                to_string(weight.shape()));
    SPOOL_CHECK(x.dim() >= 1 && x.shape()[x.dim() - 1] == weight.shape()[1], ShapeError,
                "linear: input's last dimension must equal in_features; got input ", to_string(x.shape()),
                " and weight ", to_string(weight.shape()));
    SPOOL_CHECK(x.dtype() == weight.dtype() && is_floating(x.dtype()), TypeError,
                "linear: input and weight must be float tensors of one dtype; got ", dtype_name(x.dtype()), " and ",
                dtype_name(weight.dtype()));
    const std::int64_t in = weight.shape()[1], out = weight.shape()[0], N = x.numel() / std::max<std::int64_t>(in, 1);
    if (bias.defined()) {
        SPOOL_CHECK(bias.dim() == 1 && bias.shape()[0] == out, ShapeError, "linear: bias must have shape (", out,
                    ",); got ", to_string(bias.shape()));
        SPOOL_CHECK(bias.dtype() == x.dtype(), TypeError, "linear: bias dtype ", dtype_name(bias.dtype()),
                    " differs from input dtype ", dtype_name(x.dtype()));
    }
    Value x2 = x.value().view(Shape{N, in});
    Value w = weight.value();
    Value y = k::linear(x2, w, bias.defined() ? bias.value() : Value());
    Shape ys = x.shape();
    ys.set(ys.rank() - 1, out, "linear");
    const bool has_bias = bias.defined();
    return record(
        OpKind::Linear, {x, weight, bias}, y.view(ys),
        [x2, w, xs = x.shape(), has_bias, N, out](const Value& dy, Grads& dx) {
            Value g = dy.view(Shape{N, out});
            if (dx.needs(0)) dx.add(0, k::matmul(g, w).view(xs));
            if (dx.needs(1)) dx.add(1, k::matmul(g, x2, true, false));
            if (has_bias && dx.needs(2)) dx.add(2, k::sum(g, 0).view(Shape{out}));
        },
        {x2, w});
}

// layer_norm(x, D, w, b) -> y = (x - mean) rstd * w + b over the last D elements
//   backward in kernels::layer_norm_backward                      saves x, mean, rstd, w
Tensor layer_norm(const Tensor& x, const std::vector<std::int64_t>& normalized_shape, const Tensor& weight,
                  const Tensor& bias, double eps)
{
    detail::OpProfile prof(OpKind::LayerNorm);
    SPOOL_CHECK(x.defined(), ValueError, "layer_norm: input is undefined");
    SPOOL_CHECK(is_floating(x.dtype()), TypeError, "layer_norm: expected a float tensor; got ", dtype_name(x.dtype()));
    const int nd = static_cast<int>(normalized_shape.size());
    bool ok = nd >= 1 && nd <= x.dim();
    for (int i = 0; ok && i < nd; ++i) ok = x.shape()[x.dim() - nd + i] == normalized_shape[i];
    SPOOL_CHECK(ok, ShapeError, "layer_norm: input ", to_string(x.shape()), " does not end in normalized_shape ",
                to_string(Shape(normalized_shape)));
    Shape ns(normalized_shape);
    for (const Tensor* p : {&weight, &bias})
        if (p->defined()) {
            SPOOL_CHECK(p->shape() == ns, ShapeError, "layer_norm: weight and bias must have normalized_shape ",
                        to_string(ns), "; got ", to_string(p->shape()));
            SPOOL_CHECK(p->dtype() == x.dtype(), TypeError, "layer_norm: weight/bias dtype ", dtype_name(p->dtype()),
                        " differs from input dtype ", dtype_name(x.dtype()));
        }
    const std::int64_t D = ns.numel();
    Value w = weight.defined() ? weight.value().view(Shape{D}) : Value();
    Value b = bias.defined() ? bias.value().view(Shape{D}) : Value();
    k::LayerNormSaved saved;
    Value xv = x.value();
    Value y = k::layer_norm(xv, D, w, b, eps, &saved);
    return record(
        OpKind::LayerNorm, {x, weight, bias}, std::move(y),
        [xv, w, saved, D, ns](const Value& dy, Grads& dx) {
            Value dw, db;
            Value g = k::layer_norm_backward(dy, xv, D, w, saved, dx.needs(1) ? &dw : nullptr,
                                             dx.needs(2) ? &db : nullptr);
            if (dx.needs(0)) dx.add(0, g);
            if (dx.needs(1)) dx.add(1, dw.view(ns));
            if (dx.needs(2)) dx.add(2, db.view(ns));
        },
        {xv, saved.mean, saved.rstd});
}

namespace {

/// The kernel's mask from SdpaOptions, for queries shaped qshape ([..., L, E]), S keys and B
/// flattened batch items: a bool or float mask broadcast to [..., L, S], indexed [mb, Lm, Sm].
k::AttentionMask attention_mask_of(const SdpaOptions& o, const Shape& qshape, std::int64_t S, std::int64_t B, DType dt,
                                   const char* op)
{
    k::AttentionMask am;
    am.causal = o.is_causal;
    const int r = qshape.rank();
    if (o.attn_mask.defined()) {
        const Tensor& m = o.attn_mask;
        SPOOL_CHECK(m.dtype() == DType::b8 || m.dtype() == dt, TypeError, op,
                    ": attn_mask must be bool or the query's dtype; got ", dtype_name(m.dtype()));
        Shape full = qshape;
        full.set(r - 1, S, op);  // [..., L, S]
        Shape bs = broadcast_shapes(m.shape(), full, op);
        SPOOL_CHECK(bs == full, ShapeError, op, ": attn_mask ", to_string(m.shape()), " does not broadcast to ",
                    to_string(full));
        int mr = m.dim();
        std::int64_t Lm = mr >= 2 ? m.shape()[mr - 2] : 1, Sm = mr >= 1 ? m.shape()[mr - 1] : 1;
        std::int64_t mb = m.numel() / std::max<std::int64_t>(Lm * Sm, 1);
        Value mv = m.value();
        if (mb == 1 || mb == B) {
            // batch dims absent/all 1, or complete: index [mb, Lm, Sm] directly
            bool complete = mb == 1 || mr == r;
            if (complete) am.mask = mv.view(Shape{mb, Lm, Sm});
        }
        if (!am.mask.defined()) {
            // partially broadcast batch dims: materialise as an additive float mask
            Value add = mv;
            if (mv.dtype() == DType::b8)  // true = may attend -> 0, false -> -inf
                add = k::masked_fill(Value::full(mv.shape(), -INFINITY, dt), mv, 0.0);
            Shape fb = full;
            fb.set(r - 2, Lm, op);
            fb.set(r - 1, Sm, op);
            am.mask = k::broadcast_to(add, fb).view(Shape{B, Lm, Sm});
        }
    }

    return am;
}

/// What both attention ops check first: three defined float tensors of one dtype, and options
/// PyTorch accepts.
void check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v, const SdpaOptions& o, const char* op)
{
    SPOOL_CHECK(q.defined() && k.defined() && v.defined(), ValueError, op, ": query, key or value is undefined");
    SPOOL_CHECK(is_floating(q.dtype()) && q.dtype() == k.dtype() && q.dtype() == v.dtype(), TypeError, op,
                ": query, key and value must be float tensors of one dtype; got ", dtype_name(q.dtype()), ", ",
                dtype_name(k.dtype()), " and ", dtype_name(v.dtype()));
    SPOOL_CHECK(o.dropout_p >= 0 && o.dropout_p < 1, ValueError, op, ": dropout_p must be in [0, 1); got ", o.dropout_p);
    SPOOL_CHECK(!(o.is_causal && o.attn_mask.defined()), ValueError, op,
                ": pass either attn_mask or is_causal, not both (as PyTorch)");
}

}  // namespace

// scaled_dot_product_attention(q, k, v) -> O = dropout(softmax(scale q kᵀ + mask)) v, and the
// weights A' = dropout(softmax(...)) when asked
//   backward in kernels::attention_backward: saves q, k, v and either (need_weights) the
//   probabilities, or (blockwise, the default) the output and each row's log-sum-exp
AttentionOutput scaled_dot_product_attention(const Tensor& q, const Tensor& kk, const Tensor& v,
                                             const SdpaOptions& o)
{
    detail::OpProfile prof(OpKind::Attention);
    const char* op = "scaled_dot_product_attention";
    check_attention_args(q, kk, v, o, op);
    const int r = q.dim();
    bool ok = r >= 2 && kk.dim() == r && v.dim() == r;
    for (int i = 0; ok && i < r - 2; ++i) ok = q.shape()[i] == kk.shape()[i] && q.shape()[i] == v.shape()[i];
    ok = ok && q.shape()[r - 1] == kk.shape()[r - 1] && kk.shape()[r - 2] == v.shape()[r - 2];
    SPOOL_CHECK(ok, ShapeError, op, ": expected query [..., L, E], key [..., S, E], value [..., S, Ev] with equal batch dims; got ",
                to_string(q.shape()), ", ", to_string(kk.shape()), " and ", to_string(v.shape()));
    const std::int64_t L = q.shape()[r - 2], E = q.shape()[r - 1], S = kk.shape()[r - 2], Ev = v.shape()[r - 1];
    const std::int64_t B = q.numel() / std::max<std::int64_t>(L * E, 1);
    const double scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(E)));

    const k::AttentionMask am = attention_mask_of(o, q.shape(), S, B, q.dtype(), op);

    Value q3 = q.value().view(Shape{B, L, E}), k3 = kk.value().view(Shape{B, S, E}), v3 = v.value().view(Shape{B, S, Ev});
    k::AttentionSaved saved;
    Value out = k::attention(q3, k3, v3, am, scale, o.dropout_p, o.need_weights, &saved);
    Shape os = q.shape(), ws = q.shape();
    os.set(r - 1, Ev, op);
    ws.set(r - 1, S, op);
    std::vector<Value> outs{out.view(os)};
    if (o.need_weights) outs.push_back((saved.dropped.defined() ? saved.dropped : saved.probs).view(ws));
    auto backward = [q3, k3, v3, scale, saved, qs = q.shape(), ks = kk.shape(), vs = v.shape(), B, L, S, Ev](
                        const std::vector<Value>& d, Grads& dx) {
        Value dout = d[0].defined() ? d[0].view(Shape{B, L, Ev}) : Value();
        Value dw = d.size() > 1 && d[1].defined() ? d[1].view(Shape{B, L, S}) : Value();
        Value dq, dk, dv;
        k::attention_backward(dout, dw, q3, k3, v3, scale, saved, &dq, &dk, &dv);
        if (dx.needs(0)) dx.add(0, dq.view(qs));
        if (dx.needs(1)) dx.add(1, dk.view(ks));
        if (dx.needs(2)) dx.add(2, dv.view(vs));
    };
    // blockwise: O(L) statistics besides the output; materialised: the [B, L, S] probabilities
    auto res = saved.blockwise()
                   ? record_multi(OpKind::Attention, {q, kk, v}, std::move(outs), backward,
                                  {q3, k3, v3, saved.out, saved.lse})
                   : record_multi(OpKind::Attention, {q, kk, v}, std::move(outs), backward,
                                  {q3, k3, v3, saved.probs, saved.dropped});
    return {res[0], o.need_weights ? res[1] : Tensor()};
}

bool attention_heads_supported(std::int64_t L, std::int64_t S, bool need_weights)
{
    return k::attention_heads_supported(L, S, need_weights);
}

// scaled_dot_product_attention_heads(qsrc, ksrc, vsrc) -> the attention above, heads read and
// written in place in their sources' columns
//   backward in kernels::attention_heads_backward: one gradient per distinct source (the fused
//   projection's gradient is written once, by blocks of columns)     saves the sources, probs
AttentionOutput scaled_dot_product_attention_heads(const Tensor& qsrc, const Tensor& ksrc, const Tensor& vsrc,
                                                   const AttentionHeads& hs, const SdpaOptions& o)
{
    detail::OpProfile prof(OpKind::Attention);
    const char* op = "scaled_dot_product_attention_heads";
    check_attention_args(qsrc, ksrc, vsrc, o, op);
    SPOOL_CHECK(qsrc.dim() == 3 && ksrc.dim() == 3 && vsrc.dim() == 3 && hs.heads >= 1 && hs.head_dim >= 1, ShapeError,
                op, ": expected 3-D sources and heads, head_dim >= 1; got ", to_string(qsrc.shape()), ", ",
                to_string(ksrc.shape()), ", ", to_string(vsrc.shape()), ", heads ", hs.heads, ", head_dim ",
                hs.head_dim);
    const int bd = hs.batch_first ? 0 : 1, td = 1 - bd;
    const std::int64_t N = qsrc.shape()[bd], L = qsrc.shape()[td], S = ksrc.shape()[td], H = hs.heads,
                       E = hs.head_dim;
    SPOOL_CHECK(ksrc.shape()[bd] == N && vsrc.shape()[bd] == N && vsrc.shape()[td] == S, ShapeError, op,
                ": batch and key/value lengths must agree; got ", to_string(qsrc.shape()), ", ",
                to_string(ksrc.shape()), " and ", to_string(vsrc.shape()));
    const k::HeadsLayout h{N,     H, L, S, E, hs.batch_first, qsrc.shape()[2], hs.q_col, ksrc.shape()[2], hs.k_col,
                           vsrc.shape()[2], hs.v_col};
    const double scale = o.scale.value_or(1.0 / std::sqrt(static_cast<double>(E)));
    const k::AttentionMask am = attention_mask_of(o, Shape{N, H, L, E}, S, N * H, qsrc.dtype(), op);

    k::AttentionSaved saved;
    Value out = k::attention_heads(qsrc.value(), ksrc.value(), vsrc.value(), h, am, scale, o.dropout_p, o.need_weights,
                                   &saved);
    std::vector<Value> outs{out};
    if (o.need_weights) outs.push_back((saved.dropped.defined() ? saved.dropped : saved.probs).view(Shape{N, H, L, S}));

    // one input per distinct source; slot[i] is the input of q, k, v
    std::vector<Tensor> inputs;
    int slot[3];
    const Tensor* srcs[3] = {&qsrc, &ksrc, &vsrc};
    for (int i = 0; i < 3; ++i) {
        slot[i] = -1;
        for (std::size_t j = 0; j < inputs.size(); ++j)
            if (inputs[j].same(*srcs[i])) slot[i] = static_cast<int>(j);
        if (slot[i] < 0) {
            slot[i] = static_cast<int>(inputs.size());
            inputs.push_back(*srcs[i]);
        }
    }
    // a source whose columns the heads do not all cover gets a zeroed gradient
    std::vector<bool> covered(inputs.size());
    for (std::size_t j = 0; j < inputs.size(); ++j) {
        std::vector<std::pair<std::int64_t, std::int64_t>> blocks;
        const std::int64_t cols[3] = {hs.q_col, hs.k_col, hs.v_col};
        for (int i = 0; i < 3; ++i)
            if (slot[i] == static_cast<int>(j)) blocks.emplace_back(cols[i], cols[i] + H * E);
        std::sort(blocks.begin(), blocks.end());
        std::int64_t end = 0;
        for (const auto& [b, e] : blocks)
            if (b <= end) end = std::max(end, e);
        covered[j] = end >= inputs[j].shape()[2];
    }
    Value qv = qsrc.value(), kv = ksrc.value(), vv = vsrc.value();
    auto backward = [qv, kv, vv, h, scale, saved, slot, covered, N, H, L, S](const std::vector<Value>& d, Grads& dx) {
        Value dw = d.size() > 1 && d[1].defined() ? d[1].view(Shape{N * H, L, S}) : Value();
        const Value* src[3] = {&qv, &kv, &vv};
        std::vector<Value> g(covered.size());
        for (int i = 0; i < 3; ++i) {
            Value& gi = g[static_cast<std::size_t>(slot[i])];
            if (!gi.defined())
                gi = covered[static_cast<std::size_t>(slot[i])] ? Value::empty(src[i]->shape(), src[i]->dtype())
                                                               : Value::zeros(src[i]->shape(), src[i]->dtype());
        }
        k::attention_heads_backward(d[0], dw, qv, kv, vv, h, scale, saved, g[static_cast<std::size_t>(slot[0])],
                                    g[static_cast<std::size_t>(slot[1])], g[static_cast<std::size_t>(slot[2])]);
        for (std::size_t j = 0; j < g.size(); ++j)
            if (dx.needs(static_cast<int>(j))) dx.add(static_cast<int>(j), g[j]);
    };
    // each distinct source counted once in the tape's saved bytes
    const Value kv_saved = slot[1] != slot[0] ? kv : Value();
    const Value vv_saved = slot[2] != slot[0] && slot[2] != slot[1] ? vv : Value();
    auto res = record_multi(OpKind::Attention, inputs, std::move(outs), backward,
                            {qv, kv_saved, vv_saved, saved.probs, saved.dropped});
    return {res[0], o.need_weights ? res[1] : Tensor()};
}

}  // namespace spool
