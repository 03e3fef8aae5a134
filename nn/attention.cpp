#include "nn/attention.hpp"

#include <cmath>
#include <limits>
#include <iterator>

#include "autograd/ops.hpp"
#include "autograd/ops_nn.hpp"
#include "autograd/tape.hpp"
#include "tensor/nn_kernels.hpp"
#include "nn/init.hpp"

namespace spool::nn {

namespace {
constexpr const char* MHA = "MultiheadAttention";

/// bool (true = masked out) or float mask -> additive float mask of dtype dt.
Tensor additive(const Tensor& m, DType dt, const char* which)
{
    if (m.dtype() == DType::b8) return masked_fill(zeros(m.shape(), {.dtype = dt}), m, -std::numeric_limits<double>::infinity());
    SPOOL_CHECK(m.dtype() == dt, TypeError, MHA, ": ", which, " must be bool or ", dtype_name(dt), "; got ",
                dtype_name(m.dtype()));
    return m;
}
}  // namespace

MultiheadAttention::MultiheadAttention(const MultiheadAttentionOptions& o) : Cloneable(MHA), options(o)
{
    SPOOL_CHECK(o.embed_dim > 0 && o.num_heads > 0, ValueError, MHA, ": embed_dim and num_heads must be positive; got ",
                o.embed_dim, " and ", o.num_heads);
    SPOOL_CHECK(o.embed_dim % o.num_heads == 0, ValueError, MHA, ": embed_dim must be divisible by num_heads; got embed_dim ",
                o.embed_dim, " and num_heads ", o.num_heads);
    SPOOL_CHECK(o.dropout >= 0 && o.dropout < 1, ValueError, MHA, ": dropout must be in [0, 1); got ", o.dropout);
    const std::int64_t E = o.embed_dim;
    TensorOptions to{.dtype = o.dtype};
    // registration order as PyTorch: in_proj_weight (or q/k/v_proj_weight), in_proj_bias, out_proj
    if (same_embed_dim()) {
        in_proj_weight = register_parameter("in_proj_weight", empty({3 * E, E}, to));
        init::xavier_uniform_(in_proj_weight);
    } else {
        q_proj_weight = register_parameter("q_proj_weight", empty({E, E}, to));
        k_proj_weight = register_parameter("k_proj_weight", empty({E, o.kdim.value_or(E)}, to));
        v_proj_weight = register_parameter("v_proj_weight", empty({E, o.vdim.value_or(E)}, to));
        for (Tensor* w : {&q_proj_weight, &k_proj_weight, &v_proj_weight}) init::xavier_uniform_(*w);
    }
    if (o.bias) in_proj_bias = register_parameter("in_proj_bias", zeros({3 * E}, to));
    out_proj = register_module("out_proj",
                               std::make_shared<NonDynamicallyQuantizableLinear>(LinearOptions{E, E, o.bias, o.dtype}));
    if (o.bias) init::zeros_(out_proj->bias);
}

bool MultiheadAttention::same_embed_dim() const
{
    return options.kdim.value_or(options.embed_dim) == options.embed_dim &&
           options.vdim.value_or(options.embed_dim) == options.embed_dim;
}

void MultiheadAttention::project(const Tensor& query, const Tensor& key, const Tensor& value, Tensor* q, Tensor* k,
                                 Tensor* v) const
{
    const std::int64_t E = options.embed_dim;
    if (q && k && v && same_embed_dim() && query.same(key) && key.same(value)) {
        // self-attention: one GEMM for q, k and v, then split the last dim
        std::vector<Tensor> qkv = split(linear(query, in_proj_weight, in_proj_bias), E, -1);
        *q = qkv[0];
        *k = qkv[1];
        *v = qkv[2];
        return;
    }
    auto one = [&](const Tensor& x, int i, const Tensor& separate) {
        Tensor w = same_embed_dim() ? slice(in_proj_weight, 0, i * E, (i + 1) * E) : separate;
        Tensor b = in_proj_bias.defined() ? slice(in_proj_bias, 0, i * E, (i + 1) * E) : Tensor();
        return linear(x, w, b);
    };
    if (q) *q = one(query, 0, q_proj_weight);
    if (k) *k = one(key, 1, k_proj_weight);
    if (v) *v = one(value, 2, v_proj_weight);
}

Tensor MultiheadAttention::split_heads(const Tensor& x) const
{
    const std::int64_t H = options.num_heads, D = options.embed_dim / H;
    const std::int64_t a = x.shape()[0], b = x.shape()[1];
    Tensor r = reshape(x, {a, b, H, D});
    return options.batch_first ? permute(r, {0, 2, 1, 3}) : permute(r, {1, 2, 0, 3});
}

Tensor MultiheadAttention::merge_heads(const Tensor& x) const
{
    // [N, H, T, D] -> [T, N, E] (or [N, T, E])
    const std::int64_t N = x.shape()[0], T = x.shape()[2], E = options.embed_dim;
    return options.batch_first ? reshape(permute(x, {0, 2, 1, 3}), {N, T, E})
                               : reshape(permute(x, {2, 0, 1, 3}), {T, N, E});
}

std::pair<Tensor, Tensor> MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                                      const AttentionArgs& args) const
{
    const std::int64_t E = options.embed_dim, H = options.num_heads;
    const int bd = options.batch_first ? 0 : 1, td = 1 - bd;
    SPOOL_CHECK(query.defined() && key.defined() && value.defined(), ValueError, MHA, ": query, key and value must be defined");
    SPOOL_CHECK(query.dim() == 3 && key.dim() == 3 && value.dim() == 3, ShapeError, MHA,
                ": expected 3-D (batched) query, key and value; got ", to_string(query.shape()), ", ",
                to_string(key.shape()), " and ", to_string(value.shape()));
    SPOOL_CHECK(query.shape()[2] == E, ShapeError, MHA, ": query's last dimension must be embed_dim ", E, "; got query ",
                to_string(query.shape()));
    SPOOL_CHECK(key.shape()[2] == options.kdim.value_or(E) && value.shape()[2] == options.vdim.value_or(E), ShapeError,
                MHA, ": key/value widths must be kdim ", options.kdim.value_or(E), " / vdim ", options.vdim.value_or(E),
                "; got key ", to_string(key.shape()), " and value ", to_string(value.shape()));
    const std::int64_t N = query.shape()[bd], L = query.shape()[td], S = key.shape()[td];
    SPOOL_CHECK(key.shape()[bd] == N && value.shape()[bd] == N && value.shape()[td] == S, ShapeError, MHA,
                ": batch and key/value lengths must agree; got query ", to_string(query.shape()), ", key ",
                to_string(key.shape()), " and value ", to_string(value.shape()));

    // one additive mask broadcast over [N, H, L, S]
    Tensor mask;
    if (args.attn_mask.defined()) {
        const Tensor& am = args.attn_mask;
        bool ok = (am.dim() == 2 && am.shape() == Shape{L, S}) || (am.dim() == 3 && am.shape() == Shape{N * H, L, S});
        SPOOL_CHECK(ok, ShapeError, MHA, ": attn_mask must be ", to_string(Shape{L, S}), " or ",
                    to_string(Shape{N * H, L, S}), "; got ", to_string(am.shape()));
        mask = reshape(additive(am, query.dtype(), "attn_mask"), am.dim() == 2 ? std::vector<std::int64_t>{1, 1, L, S}
                                                                               : std::vector<std::int64_t>{N, H, L, S});
    }
    bool causal = args.is_causal && !args.attn_mask.defined();
    if (args.key_padding_mask.defined()) {
        const Tensor& kp = args.key_padding_mask;
        SPOOL_CHECK(kp.shape() == Shape({N, S}), ShapeError, MHA, ": key_padding_mask must be ", to_string(Shape{N, S}),
                    "; got ", to_string(kp.shape()));
        Tensor kpm = reshape(additive(kp, query.dtype(), "key_padding_mask"), {N, 1, 1, S});
        mask = mask.defined() ? mask + kpm : kpm;
        if (causal) {  // SDPA takes a mask or is_causal, not both: fold the causal mask in
            Tensor sq = generate_square_subsequent_mask(std::max(L, S), query.dtype());
            mask = mask + reshape(slice(slice(sq, 0, 0, L), 1, 0, S), {1, 1, L, S});
            causal = false;
        }
    }

    SdpaOptions so{.attn_mask = mask,
                   .dropout_p = is_training() ? options.dropout : 0.0,
                   .is_causal = causal,
                   .need_weights = args.need_weights};
    AttentionOutput r;
    if (attention_heads_supported(L, S, args.need_weights)) {
        // short sequences: attention reads the heads where the projections wrote them and writes
        // its output with the heads merged (no split, permute or merge copies, either way)
        AttentionHeads hs{.heads = H, .head_dim = E / H, .batch_first = options.batch_first};
        Tensor qs, ks, vs;
        if (same_embed_dim() && query.same(key) && key.same(value)) {
            qs = ks = vs = linear(query, in_proj_weight, in_proj_bias);  // [.., 3E]: q | k | v
            hs.k_col = E;
            hs.v_col = 2 * E;
        } else {
            project(query, query, query, &qs, nullptr, nullptr);
            if (same_embed_dim() && key.same(value)) {  // cross-attention: one GEMM for k and v
                ks = vs = linear(key, slice(in_proj_weight, 0, E, 3 * E),
                                 in_proj_bias.defined() ? slice(in_proj_bias, 0, E, 3 * E) : Tensor());
                hs.v_col = E;
            } else {
                project(key, key, value, nullptr, &ks, &vs);
            }
        }
        r = scaled_dot_product_attention_heads(qs, ks, vs, hs, so);
    } else {
        Tensor q, k, v;
        project(query, key, value, &q, &k, &v);
        AttentionOutput split = scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v), so);
        r = {merge_heads(split.output), split.weights};
    }
    Tensor out = out_proj->forward(r.output);
    Tensor w = r.weights;
    if (w.defined() && args.average_attn_weights) w = mean(w, {1});
    return {out, w};
}

Tensor KVCache::keys() const { return filled == capacity() ? k : slice(k, 2, 0, filled); }
Tensor KVCache::values() const { return filled == capacity() ? v : slice(v, 2, 0, filled); }

Tensor MultiheadAttention::forward_cached(const Tensor& x, KVCache& cache) const
{
    const std::int64_t E = options.embed_dim, H = options.num_heads, D = E / H;
    const bool bf = options.batch_first;
    SPOOL_CHECK(x.defined() && x.dim() == 3 && x.shape()[2] == E, ShapeError, MHA,
                ": forward_cached expects the new positions as ", bf ? "[N, T, E]" : "[T, N, E]", " with E = ", E,
                "; got ", x.defined() ? to_string(x.shape()) : std::string("an undefined tensor"));
    const Tensor inputs[] = {x, in_proj_weight, q_proj_weight, in_proj_bias};
    SPOOL_CHECK(!detail::recording(inputs, std::size(inputs)), ValueError, MHA,
                ": forward_cached is for inference (it writes the key/value cache in place and records no "
                "gradients); run it under NoGrad or without a Tape");
    const std::int64_t N = x.shape()[bf ? 0 : 1], Tn = x.shape()[bf ? 1 : 0], past = cache.length();
    SPOOL_CHECK(cache.empty() || (cache.k.shape()[0] == N && cache.k.shape()[1] == H && cache.k.dtype() == x.dtype()),
                ShapeError, MHA, ": the cache holds keys ", to_string(cache.k.shape()), " of ", dtype_name(cache.k.dtype()),
                " but the new positions are ", to_string(x.shape()), " of ", dtype_name(x.dtype()));
    // projections: one GEMM whose column blocks are q, k and v, or three separate ones
    Tensor qkv, q, k, v;
    std::int64_t cq = 0, ck = 0, cv = 0;
    if (same_embed_dim()) {
        qkv = linear(x, in_proj_weight, in_proj_bias);
        q = k = v = qkv;
        ck = E, cv = 2 * E;
    } else {
        project(x, x, x, &q, &k, &v);
    }
    Value kb = cache.k.defined() ? cache.k.value().view(Shape{N * H, cache.capacity(), D}) : Value();
    Value vb = cache.v.defined() ? cache.v.value().view(Shape{N * H, cache.capacity(), D}) : Value();
    kernels::reserve_positions(kb, N * H, D, past + Tn, past, x.dtype());
    kernels::reserve_positions(vb, N * H, D, past + Tn, past, x.dtype());
    kernels::write_heads(k.value(), bf, ck, H, D, kb, past);
    kernels::write_heads(v.value(), bf, cv, H, D, vb, past);
    Value qh = Value::empty(Shape{N * H, Tn, D}, x.dtype());
    kernels::write_heads(q.value(), bf, cq, H, D, qh, 0);
    const std::int64_t C = kb.shape()[1];
    cache.k = Tensor(kb.view(Shape{N, H, C, D}));
    cache.v = Tensor(vb.view(Shape{N, H, C, D}));
    cache.filled = past + Tn;
    // the new positions attend every cached one and, causally, each other
    kernels::AttentionMask am;
    am.causal = Tn > 1;
    am.causal_offset = past;
    Value o;
    {
        detail::OpProfile prof(OpKind::Attention);  // SPOOL_PROFILE counts it with the other attention calls
        o = kernels::attention_prefix(qh, kb, vb, past + Tn, am, 1.0 / std::sqrt(static_cast<double>(D)));
    }
    return out_proj->forward(merge_heads(Tensor(o.view(Shape{N, H, Tn, D}))));
}

Tensor MultiheadAttention::forward_memory(const Tensor& query, const Tensor& memory, KVCache& cache,
                                          const Tensor& memory_key_padding_mask) const
{
    Tensor q;
    project(query, query, query, &q, nullptr, nullptr);
    if (cache.empty()) {
        Tensor k, v;
        project(memory, memory, memory, nullptr, &k, &v);
        cache.k = split_heads(k);
        cache.v = split_heads(v);
        cache.filled = cache.k.shape()[2];
    }
    SdpaOptions so;
    if (memory_key_padding_mask.defined()) {
        const std::int64_t N = cache.k.shape()[0], S = cache.k.shape()[2];
        SPOOL_CHECK(memory_key_padding_mask.shape() == Shape({N, S}), ShapeError, MHA,
                    ": memory_key_padding_mask must be ", to_string(Shape{N, S}), "; got ",
                    to_string(memory_key_padding_mask.shape()));
        so.attn_mask = reshape(additive(memory_key_padding_mask, q.dtype(), "key_padding_mask"), {N, 1, 1, S});
    }
    AttentionOutput r = scaled_dot_product_attention(split_heads(q), cache.k, cache.v, so);
    return out_proj->forward(merge_heads(r.output));
}

Tensor generate_square_subsequent_mask(std::int64_t sz, DType dtype)
{
    SPOOL_CHECK(sz >= 0, ValueError, "generate_square_subsequent_mask: size must be >= 0; got ", sz);
    Value m = Value::zeros(Shape{sz, sz}, dtype);
    for (std::int64_t i = 0; i < sz; ++i)
        for (std::int64_t j = i + 1; j < sz; ++j) m.set(i * sz + j, -std::numeric_limits<double>::infinity());
    return Tensor(m);
}

}  // namespace spool::nn
