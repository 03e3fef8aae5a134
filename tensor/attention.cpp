// Scaled dot-product attention, fused, in two forms. Materialised: per flattened batch index b
// (batch x heads) two GEMMs around a masked row softmax, the [B, L, S] probabilities kept for
// backward (the path that returns the weights). Blockwise (flash-attention style): query-block x
// key-block tiles with an online softmax; forward keeps the output and each row's log-sum-exp,
// backward recomputes the tiles, so memory is linear in the sequence length. Dropout on the
// blockwise path regenerates its mask from the Philox counters instead of storing it.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "tensor/gemm.hpp"
#include "tensor/kernels.hpp"
#include "tensor/kernels_arch.hpp"
#include "tensor/nn_kernels.hpp"
#include "tensor/parallel.hpp"
#include "tensor/random.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {

/// Where an operand's rows lie: batch item b = n * H + h starts at n * sn + h * sh + col, its
/// rows ld apart. Split-out heads ([B, rows, width], H = 1): sn = rows * width, sh = col = 0,
/// ld = width. Heads still side by side in a projection's columns (HeadsLayout): sh = E.
struct Lay {
    std::int64_t sn, sh, col, ld;
};

struct Dims {
    std::int64_t B, L, S, E, Ev;
    std::int64_t kb, vb;  ///< elements between batch items of k and v (S * E and S * Ev unless a cache has spare room)
    std::int64_t H = 1;   ///< heads per batch item of the layouts below
    Lay q{}, k{}, v{}, o{};
    bool split = true;  ///< the split-out layout (q, k, v and the output [B, rows, width]); the few-row loops need it
    std::int64_t at(const Lay& l, std::int64_t b) const { return (b / H) * l.sn + (b % H) * l.sh + l.col; }
};

Dims contiguous_dims(std::int64_t B, std::int64_t L, std::int64_t S, std::int64_t E, std::int64_t Ev, std::int64_t kb,
                     std::int64_t vb)
{
    Dims d{B, L, S, E, Ev, kb, vb};
    d.q = {L * E, 0, 0, E};
    d.k = {kb, 0, 0, E};
    d.v = {vb, 0, 0, Ev};
    d.o = {L * Ev, 0, 0, Ev};
    return d;
}

Dims dims_of(const Value& q, const Value& k, const Value& v)
{
    SPOOL_CHECK(q.rank() == 3 && k.rank() == 3 && v.rank() == 3, ShapeError,
                "scaled_dot_product_attention: kernel expects [B, L, E] operands; got ", to_string(q.shape()), ", ",
                to_string(k.shape()), " and ", to_string(v.shape()));
    const std::int64_t S = k.shape()[1];
    return contiguous_dims(q.shape()[0], q.shape()[1], S, q.shape()[2], v.shape()[2], S * q.shape()[2],
                           S * v.shape()[2]);
}

AttentionBlocking g_blocking;

/// Apply the mask and causality to a tile of scores of batch b: rows [i0, i0 + nq), keys
/// [j0, j0 + nk), row stride ld. A disallowed entry becomes -inf; a float mask is added.
template <class T>
void mask_tile(T* St, std::int64_t ld, std::int64_t nq, std::int64_t nk, std::int64_t b, std::int64_t i0,
               std::int64_t j0, const AttentionMask& am)
{
    const T ninf = -std::numeric_limits<T>::infinity();
    if (am.mask.defined()) {
        const Value& m = am.mask;
        const std::int64_t Bm = m.shape()[0], Lm = m.shape()[1], Sm = m.shape()[2];
        const std::int64_t mb = Bm == 1 ? 0 : b;
        for (std::int64_t r = 0; r < nq; ++r) {
            T* row = St + r * ld;
            const std::int64_t base = (mb * Lm + (Lm == 1 ? 0 : i0 + r)) * Sm + (Sm == 1 ? 0 : j0);
            if (m.dtype() == DType::b8) {
                const bool* mr = m.data<bool>() + base;
                for (std::int64_t c = 0; c < nk; ++c)
                    if (!mr[Sm == 1 ? 0 : c]) row[c] = ninf;
            } else {
                const T* mr = m.data<T>() + base;
                for (std::int64_t c = 0; c < nk; ++c) row[c] += mr[Sm == 1 ? 0 : c];
            }
        }
    }
    if (am.causal)  // query i attends keys j <= i + causal_offset
        for (std::int64_t r = 0; r < nq; ++r) {
            T* row = St + r * ld;
            for (std::int64_t c = std::max<std::int64_t>(0, i0 + r + 1 + am.causal_offset - j0); c < nk; ++c)
                row[c] = ninf;
        }
}

// The row loops of the softmaxes (largest entry, exp and sum, scaling) run in the chosen
// instruction set's compilation (tensor/kernels_arch.cpp).
template <class T>
T row_max_nan(const T* row, std::int64_t n)
{
    return typed_kernels<T>().row_max_nan(row, n);
}

template <class T>
T exp_shift_sum(T* row, std::int64_t n, T m)
{
    return typed_kernels<T>().exp_shift_sum(row, n, m);
}

template <class T>
void scale_row(T* row, std::int64_t n, T a)
{
    typed_kernels<T>().scale_row(row, n, a);
}

/// Masked, scaled scores in P[L, S] -> probabilities; a row with no allowed key is all 0.
template <class T>
void masked_softmax_rows(T* P, const Dims& d, std::int64_t b, const AttentionMask& am)
{
    mask_tile(P, d.S, d.L, d.S, b, 0, 0, am);
    for (std::int64_t i = 0; i < d.L; ++i) {
        T* row = P + i * d.S;
        const T mx = row_max_nan(row, d.S);
        if (mx == -std::numeric_limits<T>::infinity()) {  // every key masked: a zero output row
            std::fill(row, row + d.S, T(0));
            continue;
        }
        scale_row(row, d.S, T(1) / exp_shift_sum(row, d.S, mx));
    }
}

template <class F>
void for_each_batch(const Dims& d, F body)
{
    const int nt = d.B == 1 ? 1 : threads_for(d.B * d.L * d.S * (d.E + d.Ev));
    spool::detail::parallel_for(d.B, nt, body);
}

/// Dropout on tile rows: row r of [nq, nk] (stride ld) times the keep multiplier of element
/// (b, i0 + r, j0 + c) of the [B, L, S] draw that starts at s — the forward's draw, word for word.
template <class T>
class TileDropout {
public:
    TileDropout(const Dims& d, double p, const RngState& s, std::int64_t block_k)
        : d_(d), s_(s), on_(p > 0), threshold_(rng::keep_threshold(p)), keep_(static_cast<T>(1.0 / (1.0 - p))),
          words_(on_ ? block_k : 0)
    {
    }
    bool on() const { return on_; }
    /// z[c] = keep multiplier of (b, i, j0 + c), c < nk.
    void row(std::int64_t b, std::int64_t i, std::int64_t j0, std::int64_t nk, T* z)
    {
        const auto first = static_cast<std::uint64_t>((b * d_.L + i) * d_.S + j0);
        rng::words(s_, first, words_.data(), nk);
        for (std::int64_t c = 0; c < nk; ++c) z[c] = words_[c] >= threshold_ ? keep_ : T(0);
    }

private:
    Dims d_;
    RngState s_;
    bool on_;
    std::uint32_t threshold_;
    T keep_;
    std::vector<std::uint32_t> words_;
};

/// The keys a query block [i0, i0 + nq) may see: all S, or with causality only j < i0 + nq + offset.
std::int64_t key_end(const Dims& d, const AttentionMask& am, std::int64_t i0, std::int64_t nq)
{
    return am.causal ? std::min(d.S, i0 + nq + am.causal_offset) : d.S;
}

// ---- materialised path ---------------------------------------------------------------------

// A few query rows (decoding: one new token) make GEMMs of M = 1..4 rows, whose packing costs
// more than their multiply-adds; these two loops read the keys and values in place instead.
constexpr std::int64_t kFewRows = 4;

/// P[L, S] = scale * Q[L, E] Kᵀ and O[L, Ev] = A[L, S] V for L <= kFewRows, in the chosen
/// instruction set's compilation (tensor/kernels_arch.cpp).
template <class T>
void scores_few_rows(std::int64_t L, std::int64_t S, std::int64_t E, T scale, const T* Q, const T* K, T* P)
{
    typed_kernels<T>().scores_few_rows(L, S, E, scale, Q, K, P);
}

template <class T>
void weighted_sum_few_rows(std::int64_t L, std::int64_t S, std::int64_t Ev, const T* A, const T* V, T* O)
{
    typed_kernels<T>().weighted_sum_few_rows(L, S, Ev, A, V, O);
}

template <class T>
Value forward_materialised(const Value& q, const Value& k, const Value& v, const Dims& d, const AttentionMask& mask,
                           double scale, double dropout_p, AttentionSaved* saved, const Shape& out_shape = Shape{})
{
    Value probs = Value::empty(Shape{d.B, d.L, d.S}, q.dtype());
    Value out = Value::empty(d.split ? Shape{d.B, d.L, d.Ev} : out_shape, q.dtype());
    // dropout as dropout_mask would draw it (word n of the reservation decides element n of
    // [B, L, S]), drawn row by row where it is used instead of as a float mask of its own
    const bool drop = dropout_p > 0;
    Value dropped = drop ? Value::empty(probs.shape(), q.dtype()) : Value();
    const RngState rs = drop ? dropout_reserve(probs.numel()) : RngState{};
    const std::uint32_t threshold = drop ? rng::keep_threshold(dropout_p) : 0;
    const T keep = drop ? static_cast<T>(1.0 / (1.0 - dropout_p)) : T(1);
    const T* qs = q.data<T>();
    const T* ks = k.data<T>();
    const T* vs = v.data<T>();
    T* ps = probs.data<T>();
    T* os = out.data<T>();
    for_each_batch(d, [&](std::int64_t b) {
        T* P = ps + b * d.L * d.S;
        // P = scale * q_b k_bᵀ
        if (d.split && d.L <= kFewRows)
            scores_few_rows(d.L, d.S, d.E, T(scale), qs + b * d.L * d.E, ks + b * d.kb, P);
        else
            gemm<T>(false, true, d.L, d.S, d.E, T(scale), qs + d.at(d.q, b), d.q.ld, ks + d.at(d.k, b), d.k.ld, T(0),
                    P, d.S);
        masked_softmax_rows(P, d, b, mask);
        const T* A = P;
        if (drop) {  // item b's [L, S] words are one run of the draw, drawn a chunk at a time
            T* Dp = dropped.data<T>() + b * d.L * d.S;
            const std::int64_t n = d.L * d.S;
            constexpr std::int64_t chunk = 4096;
            alignas(64) std::uint32_t w[chunk];
            const std::uint32_t th = threshold;  // locals, so the loop vectorises
            const T km = keep;
            for (std::int64_t i0 = 0; i0 < n; i0 += chunk) {
                const std::int64_t m = std::min(chunk, n - i0);
                rng::words(rs, static_cast<std::uint64_t>(b * n + i0), w, m);
                const T* p = P + i0;
                T* o = Dp + i0;
                for (std::int64_t i = 0; i < m; ++i) o[i] = p[i] * (w[i] < th ? T(0) : km);
            }
            A = Dp;
        }
        // out_b = A v_b
        if (d.split && d.L <= kFewRows)
            weighted_sum_few_rows(d.L, d.S, d.Ev, A, vs + b * d.vb, os + b * d.L * d.Ev);
        else
            gemm<T>(false, false, d.L, d.Ev, d.S, T(1), A, d.S, vs + d.at(d.v, b), d.v.ld, T(0), os + d.at(d.o, b),
                    d.o.ld);
    });
    if (saved) {
        saved->probs = probs;
        saved->dropped = dropped;
        saved->dropout_p = dropout_p;
    }
    return out;
}

// With A the probabilities, A' = dropout(A) (= A without dropout), O = A' V:
//   dA' = dO Vᵀ + dWeights,  dV = A'ᵀ dO,  dA = dA' * keep (the dropout multiplier, A'/A)
//   dS = A * (dA - rowsum(dA * A))   (softmax backward; masked entries have A = 0)
//   dQ = scale * dS K,  dK = scale * dSᵀ Q
template <class T>
void backward_materialised(const Value& dout, const Value& dweights, const Value& q, const Value& k, const Value& v,
                           const Dims& d, double scale, const AttentionSaved& saved, Value* dq, Value* dk, Value* dv)
{
    const bool has_drop = saved.dropped.defined();
    const T keep_mult = static_cast<T>(1.0 / (1.0 - saved.dropout_p));
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
    Value dA_all = Value::empty(saved.probs.shape(), q.dtype());  // the softmax's gradient, item by item
    T* dAs = dA_all.data<T>();
    for_each_batch(d, [&](std::int64_t b) {
        T* dA = dAs + b * LS;  // written in full below before it is read
        const T* A = ps + b * LS;
        const T* Ad = has_drop ? drs + b * LS : A;
        // dq, dk, dv have the layouts of q, k and v (for split-out heads: [B, rows, width])
        T* dV = dvs + d.at(d.v, b);
        if (go) {
            const T* dO = go + d.at(d.o, b);
            gemm<T>(false, true, d.L, d.S, d.Ev, T(1), dO, d.o.ld, vs + d.at(d.v, b), d.v.ld, T(0), dA, d.S);
            gemm<T>(true, false, d.S, d.Ev, d.L, T(1), Ad, d.S, dO, d.o.ld, T(0), dV, d.v.ld);
        } else {
            for (std::int64_t j = 0; j < d.S; ++j) std::fill(dV + j * d.v.ld, dV + j * d.v.ld + d.Ev, T(0));
            std::fill(dA, dA + LS, T(0));
        }
        if (gw)
            for (std::int64_t i = 0; i < LS; ++i) dA[i] += gw[b * LS + i];
        if (has_drop) {  // dropout's multiplier: kept where the dropped probability is not 0
            const T km = keep_mult;  // a local, so the loop vectorises
            for (std::int64_t i = 0; i < LS; ++i) dA[i] = Ad[i] != T(0) ? dA[i] * km : T(0);
        }
        typed_kernels<T>().softmax_backward(false, dA, A, dA, d.L, d.S, 1);
        gemm<T>(false, false, d.L, d.E, d.S, T(scale), dA, d.S, ks + d.at(d.k, b), d.k.ld, T(0),
                dqs + d.at(d.q, b), d.q.ld);
        gemm<T>(true, false, d.S, d.E, d.L, T(scale), dA, d.S, qs + d.at(d.q, b), d.q.ld, T(0),
                dks + d.at(d.k, b), d.k.ld);
    });
}

// ---- blockwise path --------------------------------------------------------------------------
// Work is split into tiles of BQ query rows x BK keys. Every scratch buffer is a tile (or a
// [B, L] / [B, L, E] vector) and comes from the caching allocator, so allocator_stats() sees it.

/// Run body(item, thread) for item in [0, n) on nt threads, dynamically scheduled (causal tiles
/// differ in cost).
template <class F>
void parallel_items(std::int64_t n, int nt, F body)
{
    std::atomic<std::int64_t> next{0};
    spool::detail::parallel_team(static_cast<int>(std::min<std::int64_t>(nt, std::max<std::int64_t>(n, 1))),
                                 [&](int t, int) {
                                     for (std::int64_t w; (w = next.fetch_add(1, std::memory_order_relaxed)) < n;)
                                         body(w, t);
                                 });
}

// Forward of one query block, keys in tiles j0 = 0, BK, ...:
//   S = scale Q_blk K_tileᵀ + mask;  m' = max(m, rowmax S);  P = exp(S - m')
//   l = l e^(m - m') + rowsum P;  O = O e^(m - m') + dropout(P) V_tile
// then O /= l and lse = m + log l (+inf for a row with no allowed key, whose O is 0).
template <class T>
Value forward_blockwise(const Value& q, const Value& k, const Value& v, const Dims& d, const AttentionMask& mask,
                        double scale, double dropout_p, AttentionSaved* saved)
{
    const AttentionBlocking blk = g_blocking;
    const std::int64_t BQ = blk.block_q, BK = blk.block_k, nqb = (d.L + BQ - 1) / BQ;
    const T ninf = -std::numeric_limits<T>::infinity();
    Value out = Value::zeros(Shape{d.B, d.L, d.Ev}, q.dtype());
    Value lse = Value::empty(Shape{d.B, d.L}, q.dtype());
    RngState rs;
    if (dropout_p > 0) rs = dropout_reserve(d.B * d.L * d.S);  // as dropout_mask
    const int nt = static_cast<int>(std::min<std::int64_t>(threads_for(d.B * d.L * d.S * (d.E + d.Ev)), d.B * nqb));
    // per thread: a score tile, the dropout multipliers of one row, running max and sum
    Value scratch = Value::empty(Shape{nt, BQ * BK + BK + 2 * BQ}, q.dtype());
    const T* qs = q.data<T>();
    const T* ks = k.data<T>();
    const T* vs = v.data<T>();
    T* os = out.data<T>();
    T* lses = lse.data<T>();
    parallel_items(d.B * nqb, nt, [&](std::int64_t w, int t) {
        const std::int64_t b = w / nqb, i0 = (w % nqb) * BQ, nq = std::min(BQ, d.L - i0);
        T* St = scratch.data<T>() + t * (BQ * BK + BK + 2 * BQ);
        T* z = St + BQ * BK;
        T* m = z + BK;
        T* l = m + BQ;
        TileDropout<T> drop(d, dropout_p, rs, BK);
        std::fill(m, m + nq, ninf);
        std::fill(l, l + nq, T(0));
        const T* Q = qs + (b * d.L + i0) * d.E;
        T* O = os + (b * d.L + i0) * d.Ev;
        const std::int64_t kend = key_end(d, mask, i0, nq);
        for (std::int64_t j0 = 0; j0 < kend; j0 += BK) {
            const std::int64_t nk = std::min(BK, kend - j0);
            gemm<T>(false, true, nq, nk, d.E, T(scale), Q, d.E, ks + b * d.kb + j0 * d.E, d.E, T(0), St, nk);
            mask_tile(St, nk, nq, nk, b, i0, j0, mask);
            for (std::int64_t r = 0; r < nq; ++r) {
                T* row = St + r * nk;
                const T mx = row_max_nan(row, nk);
                const T mn = std::isnan(mx) || mx > m[r] ? mx : m[r];
                if (mn == ninf) {  // nothing allowed so far: this tile adds nothing to the row
                    std::fill(row, row + nk, T(0));
                    continue;
                }
                const T alpha = std::exp(m[r] - mn);  // 0 when m was -inf
                if (alpha != T(1)) {
                    l[r] *= alpha;
                    scale_row(O + r * d.Ev, d.Ev, alpha);
                }
                l[r] += exp_shift_sum(row, nk, mn);
                m[r] = mn;
                if (drop.on()) {  // the sum above is before dropout: dropout scales probabilities, not scores
                    drop.row(b, i0 + r, j0, nk, z);
                    for (std::int64_t c = 0; c < nk; ++c) row[c] *= z[c];
                }
            }
            gemm<T>(false, false, nq, d.Ev, nk, T(1), St, nk, vs + b * d.vb + j0 * d.Ev, d.Ev, T(1), O, d.Ev);
        }
        for (std::int64_t r = 0; r < nq; ++r) {
            T& ls = lses[b * d.L + i0 + r];
            if (l[r] == T(0)) {  // every key masked: zero output row; backward's exp(s - inf) is 0
                std::fill(O + r * d.Ev, O + (r + 1) * d.Ev, T(0));
                ls = std::numeric_limits<T>::infinity();
                continue;
            }
            scale_row(O + r * d.Ev, d.Ev, T(1) / l[r]);
            ls = m[r] + std::log(l[r]);
        }
    });
    if (saved) {
        saved->out = out;
        saved->lse = lse;
        saved->mask = mask;
        saved->dropout_p = dropout_p;
        saved->rng = rs;
    }
    return out;
}

// Backward, one batch item (batch x head) per work item, its key tiles in order and query
// tiles inside them (recomputing the forward's tiles):
//   P = exp(scale Q Kᵀ + mask - lse),  Z = dropout multipliers,  Di = rowsum(dO ∘ O)
//   dV += (P∘Z)ᵀ dO,  dP = (dO Vᵀ)∘Z,  dS = P∘(dP - Di)
//   dK += scale dSᵀ Q,  dQ += scale dS K
// Di equals rowsum(dP∘P) = Σ_j (dO_i·V_j) Z_ij P_ij = dO_i·O_i, so no [L, S] row sum is needed.
// dK, dV and dQ of a batch item belong to its work item, and dQ gathers the key tiles in
// order: the same bits at every thread count (a split over key tiles would need per-thread dQ
// copies summed in an order that depends on the schedule).
template <class T>
void backward_blockwise(const Value& dout, const Value& q, const Value& k, const Value& v, const Dims& d, double scale,
                        const AttentionSaved& saved, Value* dq, Value* dk, Value* dv)
{
    const AttentionBlocking blk = g_blocking;
    const std::int64_t BQ = blk.block_q, BK = blk.block_k, nkb = (d.S + BK - 1) / BK;
    *dq = Value::zeros(q.shape(), q.dtype());
    *dk = Value::zeros(k.shape(), k.dtype());
    *dv = Value::zeros(v.shape(), v.dtype());
    if (!dout.defined() || d.L == 0 || d.S == 0) return;
    const T* qs = q.data<T>();
    const T* ks = k.data<T>();
    const T* vs = v.data<T>();
    const T* dos = dout.data<T>();
    const T* lses = saved.lse.data<T>();
    Value Dv = Value::empty(Shape{d.B, d.L}, q.dtype());  // Di = rowsum(dO ∘ O)
    T* Di = Dv.data<T>();
    {
        const T* os = saved.out.data<T>();
        for (std::int64_t i = 0; i < d.B * d.L; ++i) {
            T s = 0;
            for (std::int64_t e = 0; e < d.Ev; ++e) s += dos[i * d.Ev + e] * os[i * d.Ev + e];
            Di[i] = s;
        }
    }
    const int nt = static_cast<int>(std::min<std::int64_t>(threads_for(d.B * d.L * d.S * (d.E + d.Ev)), d.B));
    const std::int64_t per = 3 * BQ * BK;  // P; the dropout multipliers Z; dS (first P∘Z)
    Value scratch = Value::empty(Shape{nt, per}, q.dtype());
    const AttentionMask& mask = saved.mask;
    const bool has_drop = saved.dropout_p > 0;
    parallel_items(d.B, nt, [&](std::int64_t b, int t) {
        T* P = scratch.data<T>() + t * per;
        T* Z = P + BQ * BK;
        T* dS = Z + BQ * BK;
        T* dQ = dq->data<T>();
        TileDropout<T> drop(d, saved.dropout_p, saved.rng, BK);
        for (std::int64_t kb = 0; kb < nkb; ++kb) {
            const std::int64_t j0 = kb * BK, nk = std::min(BK, d.S - j0);
            const T* K = ks + b * d.kb + j0 * d.E;
            const T* V = vs + b * d.vb + j0 * d.Ev;
            T* dK = dk->data<T>() + (b * d.S + j0) * d.E;
            T* dV = dv->data<T>() + (b * d.S + j0) * d.Ev;
            // with causality, query rows i < j0 see none of these keys
            for (std::int64_t i0 = mask.causal ? std::max<std::int64_t>(0, j0 - mask.causal_offset) / BQ * BQ : 0; i0 < d.L; i0 += BQ) {
                const std::int64_t nq = std::min(BQ, d.L - i0);
                const T* Q = qs + (b * d.L + i0) * d.E;
                const T* dO = dos + (b * d.L + i0) * d.Ev;
                gemm<T>(false, true, nq, nk, d.E, T(scale), Q, d.E, K, d.E, T(0), P, nk);
                mask_tile(P, nk, nq, nk, b, i0, j0, mask);
                for (std::int64_t r = 0; r < nq; ++r) {
                    const T ls = lses[b * d.L + i0 + r];
                    T* row = P + r * nk;
                    if (ls == std::numeric_limits<T>::infinity())  // no allowed key: P = 0
                        std::fill(row, row + nk, T(0));
                    else
                        exp_shift_sum(row, nk, ls);
                    if (has_drop) drop.row(b, i0 + r, j0, nk, Z + r * nk);
                }
                const T* Pd = P;
                if (has_drop) {
                    for (std::int64_t i = 0; i < nq * nk; ++i) dS[i] = P[i] * Z[i];
                    Pd = dS;
                }
                gemm<T>(true, false, nk, d.Ev, nq, T(1), Pd, nk, dO, d.Ev, T(1), dV, d.Ev);
                gemm<T>(false, true, nq, nk, d.Ev, T(1), dO, d.Ev, V, d.Ev, T(0), dS, nk);
                for (std::int64_t r = 0; r < nq; ++r) {
                    const T D = Di[b * d.L + i0 + r];
                    T* g = dS + r * nk;
                    const T* p = P + r * nk;
                    if (has_drop) {
                        const T* z = Z + r * nk;
                        for (std::int64_t c = 0; c < nk; ++c) g[c] = p[c] * (g[c] * z[c] - D);
                    } else {
                        for (std::int64_t c = 0; c < nk; ++c) g[c] = p[c] * (g[c] - D);
                    }
                }
                gemm<T>(true, false, nk, d.E, nq, T(scale), dS, nk, Q, d.E, T(1), dK, d.E);
                gemm<T>(false, false, nq, d.E, nk, T(scale), dS, nk, K, d.E, T(1), dQ + (b * d.L + i0) * d.E, d.E);
            }
        }
    });
}

bool use_blockwise(const Dims& d, bool need_weights)
{
    return !need_weights && d.L * d.S >= g_blocking.min_scores;
}

}  // namespace

AttentionBlocking attention_blocking() { return g_blocking; }

void set_attention_blocking(const AttentionBlocking& b)
{
    SPOOL_CHECK(b.block_q >= 1 && b.block_k >= 1 && b.min_scores >= 0, ValueError,
                "set_attention_blocking: block sizes must be >= 1 and min_scores >= 0; got block_q ", b.block_q,
                ", block_k ", b.block_k, " and min_scores ", b.min_scores);
    g_blocking = b;
}

Value attention(const Value& q, const Value& k, const Value& v, const AttentionMask& mask, double scale,
                double dropout_p, bool need_weights, AttentionSaved* saved)
{
    const Dims d = dims_of(q, k, v);
    return dispatch_float(q.dtype(), "scaled_dot_product_attention", [&]<class T>() {
        if (use_blockwise(d, need_weights)) return forward_blockwise<T>(q, k, v, d, mask, scale, dropout_p, saved);
        return forward_materialised<T>(q, k, v, d, mask, scale, dropout_p, saved);
    });
}

void attention_backward(const Value& dout, const Value& dweights, const Value& q, const Value& k, const Value& v,
                        double scale, const AttentionSaved& saved, Value* dq, Value* dk, Value* dv)
{
    const Dims d = dims_of(q, k, v);
    dispatch_float(q.dtype(), "scaled_dot_product_attention_backward", [&]<class T>() {
        if (saved.blockwise()) return backward_blockwise<T>(dout, q, k, v, d, scale, saved, dq, dk, dv);
        *dq = Value::empty(q.shape(), q.dtype());
        *dk = Value::empty(k.shape(), k.dtype());
        *dv = Value::empty(v.shape(), v.dtype());
        backward_materialised<T>(dout, dweights, q, k, v, d, scale, saved, dq, dk, dv);
    });
}

namespace {

Dims heads_dims(const HeadsLayout& h)
{
    const auto lay = [&](std::int64_t rows, std::int64_t width, std::int64_t col) {
        return h.batch_first ? Lay{rows * width, h.E, col, width} : Lay{width, h.E, col, h.N * width};
    };
    Dims d{h.N * h.H, h.L, h.S, h.E, h.E, 0, 0};
    d.H = h.H;
    d.q = lay(h.L, h.q_width, h.q_col);
    d.k = lay(h.S, h.k_width, h.k_col);
    d.v = lay(h.S, h.v_width, h.v_col);
    d.o = lay(h.L, h.H * h.E, 0);
    d.split = false;
    return d;
}

void check_heads(const Value& src, std::int64_t rows, std::int64_t width, std::int64_t col, const HeadsLayout& h,
                 const char* what)
{
    const Shape want = h.batch_first ? Shape{h.N, rows, width} : Shape{rows, h.N, width};
    SPOOL_CHECK(src.shape() == want && col >= 0 && col + h.H * h.E <= width, ShapeError,
                "scaled_dot_product_attention (heads layout): ", what, " source ", to_string(src.shape()),
                " does not hold ", h.H, " heads of ", h.E, " at column ", col, " of ", to_string(want));
}

}  // namespace

bool attention_heads_supported(std::int64_t L, std::int64_t S, bool need_weights)
{
    Dims d{1, L, S, 1, 1, 0, 0};
    return L > kFewRows && !use_blockwise(d, need_weights);
}

Value attention_heads(const Value& qsrc, const Value& ksrc, const Value& vsrc, const HeadsLayout& h,
                      const AttentionMask& mask, double scale, double dropout_p, bool need_weights,
                      AttentionSaved* saved)
{
    check_heads(qsrc, h.L, h.q_width, h.q_col, h, "query");
    check_heads(ksrc, h.S, h.k_width, h.k_col, h, "key");
    check_heads(vsrc, h.S, h.v_width, h.v_col, h, "value");
    SPOOL_CHECK(attention_heads_supported(h.L, h.S, need_weights), ValueError,
                "scaled_dot_product_attention (heads layout): L = ", h.L, ", S = ", h.S,
                " take the blockwise or few-row path, which need split-out heads");
    const Dims d = heads_dims(h);
    const Shape out_shape = h.batch_first ? Shape{h.N, h.L, h.H * h.E} : Shape{h.L, h.N, h.H * h.E};
    return dispatch_float(qsrc.dtype(), "scaled_dot_product_attention", [&]<class T>() {
        return forward_materialised<T>(qsrc, ksrc, vsrc, d, mask, scale, dropout_p, saved, out_shape);
    });
}

void attention_heads_backward(const Value& dout, const Value& dweights, const Value& qsrc, const Value& ksrc,
                              const Value& vsrc, const HeadsLayout& h, double scale, const AttentionSaved& saved,
                              Value& dq, Value& dk, Value& dv)
{
    SPOOL_ASSERT(!saved.blockwise() && dq.shape() == qsrc.shape() && dk.shape() == ksrc.shape() &&
                 dv.shape() == vsrc.shape());
    const Dims d = heads_dims(h);
    dispatch_float(qsrc.dtype(), "scaled_dot_product_attention_backward", [&]<class T>() {
        backward_materialised<T>(dout, dweights, qsrc, ksrc, vsrc, d, scale, saved, &dq, &dk, &dv);
    });
}

Value attention_prefix(const Value& q, const Value& kbuf, const Value& vbuf, std::int64_t S, const AttentionMask& mask,
                       double scale)
{
    SPOOL_ASSERT(q.rank() == 3 && kbuf.rank() == 3 && vbuf.rank() == 3 && S <= kbuf.shape()[1] &&
                 kbuf.shape()[1] == vbuf.shape()[1]);
    const std::int64_t C = kbuf.shape()[1], E = q.shape()[2], Ev = vbuf.shape()[2];
    const Dims d = contiguous_dims(q.shape()[0], q.shape()[1], S, E, Ev, C * E, C * Ev);
    return dispatch_float(q.dtype(), "scaled_dot_product_attention", [&]<class T>() {
        if (use_blockwise(d, false)) return forward_blockwise<T>(q, kbuf, vbuf, d, mask, scale, 0.0, nullptr);
        return forward_materialised<T>(q, kbuf, vbuf, d, mask, scale, 0.0, nullptr);
    });
}

void write_heads(const Value& x, bool batch_first, std::int64_t col, std::int64_t H, std::int64_t D, Value& dst,
                 std::int64_t pos)
{
    const std::int64_t T = x.shape()[batch_first ? 1 : 0], N = x.shape()[batch_first ? 0 : 1], W = x.shape()[2];
    const std::int64_t C = dst.shape()[1];
    SPOOL_ASSERT(x.rank() == 3 && dst.rank() == 3 && dst.shape()[0] == N * H && dst.shape()[2] == D &&
                 col + H * D <= W && pos + T <= C && x.dtype() == dst.dtype());
    const std::size_t run = static_cast<std::size_t>(D) * itemsize(x.dtype());
    const char* src = static_cast<const char*>(x.raw());
    char* out = static_cast<char*>(dst.raw());
    const std::int64_t item = itemsize(x.dtype());
    for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t n = 0; n < N; ++n) {
            const char* row = src + ((batch_first ? n * T + t : t * N + n) * W + col) * item;
            for (std::int64_t h = 0; h < H; ++h)
                std::memcpy(out + ((n * H + h) * C + pos + t) * D * item, row + h * D * item, run);
        }
}

void reserve_positions(Value& buf, std::int64_t B, std::int64_t D, std::int64_t need, std::int64_t filled, DType dtype)
{
    const std::int64_t C = buf.defined() ? buf.shape()[1] : 0;
    if (need <= C) return;
    const std::int64_t room = std::max<std::int64_t>({need, 2 * C, 16});
    Value grown = Value::empty(Shape{B, room, D}, dtype);
    if (filled > 0) {
        const std::int64_t item = itemsize(dtype);
        const char* from = static_cast<const char*>(buf.raw());
        char* to = static_cast<char*>(grown.raw());
        for (std::int64_t b = 0; b < B; ++b)
            std::memcpy(to + b * room * D * item, from + b * C * D * item, static_cast<std::size_t>(filled * D * item));
    }
    buf = grown;
}

}  // namespace spool::kernels
