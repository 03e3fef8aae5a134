// Scaled dot-product attention, fused: per flattened batch index b (batch x heads) two
// GEMMs around a masked row softmax, optionally dropout on the probabilities. The
// probabilities are kept for backward ([B, L, S]); a memory-efficient recompute path can
// come later. Batches run in parallel; the GEMMs inside each run on one thread.
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/gemm.hpp"
#include "tensor/kernels.hpp"
#include "tensor/nn_kernels.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {

struct Dims {
    std::int64_t B, L, S, E, Ev;
};

Dims dims_of(const Value& q, const Value& k, const Value& v)
{
    SPOOL_CHECK(q.rank() == 3 && k.rank() == 3 && v.rank() == 3, ShapeError,
                "scaled_dot_product_attention: kernel expects [B, L, E] operands; got ", to_string(q.shape()), ", ",
                to_string(k.shape()), " and ", to_string(v.shape()));
    return {q.shape()[0], q.shape()[1], k.shape()[1], q.shape()[2], v.shape()[2]};
}

/// Masked, scaled scores in P[L, S] -> probabilities; a row with no allowed key is all 0.
template <class T>
void masked_softmax_rows(T* P, const Dims& d, std::int64_t b, const AttentionMask& am)
{
    const T ninf = -std::numeric_limits<T>::infinity();
    const Value& m = am.mask;
    const bool has = m.defined();
    std::int64_t Bm = has ? m.shape()[0] : 1, Lm = has ? m.shape()[1] : 1, Sm = has ? m.shape()[2] : 1;
    const std::int64_t mb = Bm == 1 ? 0 : b;
    for (std::int64_t i = 0; i < d.L; ++i) {
        T* row = P + i * d.S;
        if (has) {
            std::int64_t base = (mb * Lm + (Lm == 1 ? 0 : i)) * Sm;
            if (m.dtype() == DType::b8) {
                const bool* mr = m.data<bool>() + base;
                for (std::int64_t j = 0; j < d.S; ++j)
                    if (!mr[Sm == 1 ? 0 : j]) row[j] = ninf;
            } else {
                const T* mr = m.data<T>() + base;
                for (std::int64_t j = 0; j < d.S; ++j) row[j] += mr[Sm == 1 ? 0 : j];
            }
        }
        if (am.causal)
            for (std::int64_t j = i + 1; j < d.S; ++j) row[j] = ninf;
        T mx = ninf;
        for (std::int64_t j = 0; j < d.S; ++j) mx = row[j] > mx || std::isnan(row[j]) ? row[j] : mx;
        if (mx == ninf) {  // every key masked: zero probabilities, so a zero output row
            std::fill(row, row + d.S, T(0));
            continue;
        }
        T s = 0;
        for (std::int64_t j = 0; j < d.S; ++j) s += row[j] = std::exp(row[j] - mx);
        const T inv = T(1) / s;
        for (std::int64_t j = 0; j < d.S; ++j) row[j] *= inv;
    }
}

template <class F>
void for_each_batch(const Dims& d, F body)
{
    int nt = threads_for(d.B * d.L * d.S * (d.E + d.Ev));
    if (d.B == 1) nt = 1;
    spool::detail::parallel_for(d.B, nt, body);
}

}  // namespace

Value attention(const Value& q, const Value& k, const Value& v, const AttentionMask& mask, double scale,
                double dropout_p, AttentionSaved* saved)
{
    const Dims d = dims_of(q, k, v);
    return dispatch_float(q.dtype(), "scaled_dot_product_attention", [&]<class T>() {
        Value probs = Value::empty(Shape{d.B, d.L, d.S}, q.dtype());
        Value out = Value::empty(Shape{d.B, d.L, d.Ev}, q.dtype());
        Value keep = dropout_p > 0 ? dropout_mask(probs.shape(), q.dtype(), dropout_p) : Value();
        Value dropped = dropout_p > 0 ? Value::empty(probs.shape(), q.dtype()) : Value();
        const T* qs = q.data<T>();
        const T* ks = k.data<T>();
        const T* vs = v.data<T>();
        T* ps = probs.data<T>();
        T* os = out.data<T>();
        for_each_batch(d, [&](std::int64_t b) {
            T* P = ps + b * d.L * d.S;
            // P = scale * q_b k_bᵀ
            gemm<T>(false, true, d.L, d.S, d.E, T(scale), qs + b * d.L * d.E, d.E, ks + b * d.S * d.E, d.E, T(0), P, d.S);
            masked_softmax_rows(P, d, b, mask);
            const T* A = P;
            if (keep.defined()) {
                T* Dp = dropped.data<T>() + b * d.L * d.S;
                const T* kp = keep.data<T>() + b * d.L * d.S;
                for (std::int64_t i = 0; i < d.L * d.S; ++i) Dp[i] = P[i] * kp[i];
                A = Dp;
            }
            // out_b = A v_b
            gemm<T>(false, false, d.L, d.Ev, d.S, T(1), A, d.S, vs + b * d.S * d.Ev, d.Ev, T(0), os + b * d.L * d.Ev,
                    d.Ev);
        });
        if (saved) *saved = {probs, dropped};
        return out;
    });
}

// With A the probabilities, A' = dropout(A) (= A without dropout), O = A' V:
//   dA' = dO Vᵀ + dWeights,  dV = A'ᵀ dO,  dA = dA' * keep (the dropout multiplier, A'/A)
//   dS = A * (dA - rowsum(dA * A))   (softmax backward; masked entries have A = 0)
//   dQ = scale * dS K,  dK = scale * dSᵀ Q
void attention_backward(const Value& dout, const Value& dweights, const Value& q, const Value& k, const Value& v,
                        double scale, const AttentionSaved& saved, Value* dq, Value* dk, Value* dv)
{
    const Dims d = dims_of(q, k, v);
    dispatch_float(q.dtype(), "scaled_dot_product_attention_backward", [&]<class T>() {
        *dq = Value::empty(q.shape(), q.dtype());
        *dk = Value::empty(k.shape(), k.dtype());
        *dv = Value::empty(v.shape(), v.dtype());
        const bool has_drop = saved.dropped.defined();
        const T* qs = q.data<T>();
        const T* ks = k.data<T>();
        const T* vs = v.data<T>();
        const T* ps = saved.probs.data<T>();
        const T* drs = has_drop ? saved.dropped.data<T>() : nullptr;
        const T* go = dout.defined() ? dout.data<T>() : nullptr;
        const T* gw = dweights.defined() ? dweights.data<T>() : nullptr;
        T* dqs = dq->data<T>();
        T* dks = dk->data<T>();
        T* dvs = dv->data<T>();
        const std::int64_t LS = d.L * d.S;
        for_each_batch(d, [&](std::int64_t b) {
            std::vector<T> dA(LS, T(0));
            const T* A = ps + b * LS;
            const T* Ad = has_drop ? drs + b * LS : A;
            if (go) {
                const T* dO = go + b * d.L * d.Ev;
                gemm<T>(false, true, d.L, d.S, d.Ev, T(1), dO, d.Ev, vs + b * d.S * d.Ev, d.Ev, T(0), dA.data(), d.S);
                gemm<T>(true, false, d.S, d.Ev, d.L, T(1), Ad, d.S, dO, d.Ev, T(0), dvs + b * d.S * d.Ev, d.Ev);
            } else {
                std::fill(dvs + b * d.S * d.Ev, dvs + (b + 1) * d.S * d.Ev, T(0));
            }
            if (gw)
                for (std::int64_t i = 0; i < LS; ++i) dA[i] += gw[b * LS + i];
            if (has_drop)  // keep multiplier = dropped / probs where probs > 0
                for (std::int64_t i = 0; i < LS; ++i) dA[i] = A[i] > T(0) ? dA[i] * (Ad[i] / A[i]) : T(0);
            for (std::int64_t i = 0; i < d.L; ++i) {
                T* r = dA.data() + i * d.S;
                const T* a = A + i * d.S;
                T dot = 0;
                for (std::int64_t j = 0; j < d.S; ++j) dot += r[j] * a[j];
                for (std::int64_t j = 0; j < d.S; ++j) r[j] = a[j] * (r[j] - dot);
            }
            gemm<T>(false, false, d.L, d.E, d.S, T(scale), dA.data(), d.S, ks + b * d.S * d.E, d.E, T(0),
                    dqs + b * d.L * d.E, d.E);
            gemm<T>(true, false, d.S, d.E, d.L, T(scale), dA.data(), d.S, qs + b * d.L * d.E, d.E, T(0),
                    dks + b * d.S * d.E, d.E);
        });
    });
}

}  // namespace spool::kernels
