// Fused cross-entropy, logsumexp over rows and log-sigmoid (see loss_kernels.hpp).
// Cross-entropy reads each row of logits from memory once: a max pass, then an exp/sum pass
// that finds the row in cache and keeps its exps in a per-thread row, from which the
// gradient row is written — the only [N, C] buffer, with streaming stores when it is large
// (its cache lines are then not first read from memory). One exp per logit in all.
#include "tensor/loss_kernels.hpp"
#include "tensor/parallel.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {

// ---- stores ----------------------------------------------------------------------------------

/// Outputs at least this large are written with streaming (non-temporal) stores: they do not
/// fit in the caches anyway, and a streaming store skips the read-for-ownership of the line.
constexpr std::size_t stream_min_bytes = std::size_t{16} << 20;

template <class T>
inline void stream_store(T* p, const batch<T>& v)
{
    constexpr std::size_t bytes = sizeof(batch<T>);
    if constexpr (false) {
    }
#if defined(__AVX512F__)
    else if constexpr (bytes == 64 && std::is_same_v<T, float>) _mm512_stream_ps(p, v);
    else if constexpr (bytes == 64) _mm512_stream_pd(p, v);
#endif
#if defined(__AVX__)
    else if constexpr (bytes == 32 && std::is_same_v<T, float>) _mm256_stream_ps(p, v);
    else if constexpr (bytes == 32) _mm256_stream_pd(p, v);
#endif
#if defined(__SSE2__)
    else if constexpr (bytes == 16 && std::is_same_v<T, float>) _mm_stream_ps(p, v);
    else if constexpr (bytes == 16) _mm_stream_pd(p, v);
#endif
    else v.store_aligned(p);
}

/// Streaming stores are weakly ordered: each writing thread fences before the data is used.
inline void store_fence()
{
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

/// out[i] = f.one(i) for i < n, whole batches through f.vec(i). Streaming stores need aligned
/// addresses, so a scalar peel runs up to the first one.
template <class T, bool Stream, class F>
void write_row(T* out, std::int64_t n, const F& f)
{
    constexpr std::int64_t W = batch<T>::size;
    std::int64_t i = 0;
    if constexpr (Stream) {
        for (; i < n && reinterpret_cast<std::uintptr_t>(out + i) % sizeof(batch<T>) != 0; ++i) out[i] = f.one(i);
        for (; i + W <= n; i += W) stream_store(out + i, f.vec(i));
    } else {
        for (; i + W <= n; i += W) f.vec(i).store_unaligned(out + i);
    }
    for (; i < n; ++i) out[i] = f.one(i);
}

/// body(i) for every row, threaded over rows when the work is large. With fence, every
/// thread fences its streaming stores before the region ends.
template <class F>
void for_rows(std::int64_t rows, std::int64_t work, bool fence, F body)
{
    const int nt = rows > 1 ? threads_for(work) : 1;
    spool::detail::parallel_blocks(rows, nt, 1, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t i = b; i < e; ++i) body(i);
        if (fence) store_fence();
    });
}

// ---- per-class factors u_c -------------------------------------------------------------------
// What the forward sums next to Σ exp (a = Σ u_c (z_c − m), and Σ u_c) and the backward
// subtracts: the class weights for a smoothed class-index target, the smoothed weighted
// probabilities for a probability target, nothing for plain logsumexp.

struct NoFactor {};

template <class T>
struct Ones {
    batch<T> vec(std::int64_t) const { return batch<T>(T(1)); }
    T one(std::int64_t) const { return T(1); }
};

template <class T>
struct Weights {
    const T* w;
    batch<T> vec(std::int64_t i) const { return batch<T>::load_unaligned(w + i); }
    T one(std::int64_t i) const { return w[i]; }
};

/// u_c = w_c (on t_c + off); w may be null (all ones).
template <class T>
struct SmoothedProbs {
    const T* t;
    const T* w;
    T on, off;
    batch<T> vec(std::int64_t i) const
    {
        batch<T> q = xsimd::fma(batch<T>(on), batch<T>::load_unaligned(t + i), batch<T>(off));
        return w ? q * batch<T>::load_unaligned(w + i) : q;
    }
    T one(std::int64_t i) const { return (w ? w[i] : T(1)) * (on * t[i] + off); }
};

// ---- row kernels -----------------------------------------------------------------------------

/// The row max, or 0 when every entry is −inf (so that z − m stays −inf, not NaN).
template <class T>
T row_max(const T* x, std::int64_t n)
{
    constexpr std::int64_t W = batch<T>::size;
    const T ninf = -std::numeric_limits<T>::infinity();
    batch<T> m0(ninf), m1(ninf), m2(ninf), m3(ninf);
    std::int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        m0 = xsimd::max(m0, batch<T>::load_unaligned(x + i));
        m1 = xsimd::max(m1, batch<T>::load_unaligned(x + i + W));
        m2 = xsimd::max(m2, batch<T>::load_unaligned(x + i + 2 * W));
        m3 = xsimd::max(m3, batch<T>::load_unaligned(x + i + 3 * W));
    }
    for (; i + W <= n; i += W) m0 = xsimd::max(m0, batch<T>::load_unaligned(x + i));
    alignas(64) T lanes[W];
    xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)).store_aligned(lanes);
    T m = ninf;
    for (T v : lanes) m = v > m ? v : m;
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;
    return m == ninf ? T(0) : m;
}

template <class T>
struct ExpSums {
    T s = 0;  ///< Σ exp(z_c − m)
    T a = 0;  ///< Σ u_c (z_c − m)
    T u = 0;  ///< Σ u_c
};

/// The second pass over a row (from cache): exp sums with the max subtracted, and the
/// u-weighted sums when U is a factor; with e non-null the exps are also stored there (a
/// per-thread row that stays in cache). A class with u_c = 0 adds 0 to a even when its logit
/// is −inf (a masked class with no target mass), where 0 · −inf would be NaN; with u_c = 1
/// everywhere (Ones) a −inf logit rightly makes the loss +inf.
template <class T, class U>
ExpSums<T> exp_sums(const T* z, std::int64_t n, T m, const U& u, T* e = nullptr)
{
    constexpr bool with_u = !std::is_same_v<U, NoFactor>;
    constexpr bool may_be_zero = with_u && !std::is_same_v<U, Ones<T>>;
    constexpr std::int64_t W = batch<T>::size;
    const batch<T> bm(m);
    batch<T> s0(T(0)), s1(T(0)), a0(T(0)), a1(T(0)), u0(T(0)), u1(T(0));
    auto step = [&](std::int64_t j, batch<T>& s, batch<T>& a, batch<T>& us) {
        const batch<T> d = batch<T>::load_unaligned(z + j) - bm;
        const batch<T> ex = xsimd::exp(d);
        s += ex;
        if (e) ex.store_unaligned(e + j);
        if constexpr (may_be_zero) {
            const batch<T> uj = u.vec(j);
            a += xsimd::select(uj != batch<T>(T(0)), uj * d, batch<T>(T(0)));
            us += uj;
        } else if constexpr (with_u) {
            const batch<T> uj = u.vec(j);
            a = xsimd::fma(uj, d, a);
            us += uj;
        }
    };
    std::int64_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {  // two chains: exp's latency overlaps
        step(i, s0, a0, u0);
        step(i + W, s1, a1, u1);
    }
    for (; i + W <= n; i += W) step(i, s0, a0, u0);
    ExpSums<T> r{xsimd::hadd(s0 + s1), xsimd::hadd(a0 + a1), xsimd::hadd(u0 + u1)};
    for (; i < n; ++i) {
        const T d = z[i] - m;
        const T ex = std::exp(d);
        r.s += ex;
        if (e) e[i] = ex;
        if constexpr (with_u) {
            const T uj = u.one(i);
            r.a += uj != T(0) ? uj * d : T(0);
            r.u += uj;
        }
    }
    return r;
}

/// One row of a gradient: dz_c = a · e_c − b · u_c, and dz_y −= fix. With Exp, e_c =
/// exp((z_c − m) − ls) is computed from the logits z ((z − m) − ls, not z − lse: m + ls would
/// round away ls's low digits); without, src holds the row's exps.
template <class T, class U, bool Exp>
struct GradRow {
    const T* src;
    T m, ls, a, b;
    U u;
    std::int64_t y = -1;  ///< class-index target of the row, −1 for none
    T fix = 0;

    batch<T> vec(std::int64_t i) const
    {
        constexpr std::int64_t W = batch<T>::size;
        batch<T> e = batch<T>::load_unaligned(src + i);
        if constexpr (Exp) e = xsimd::exp((e - batch<T>(m)) - batch<T>(ls));
        batch<T> v = batch<T>(a) * e;
        if constexpr (!std::is_same_v<U, NoFactor>) v = xsimd::fnma(batch<T>(b), u.vec(i), v);
        if (static_cast<std::uint64_t>(y - i) < static_cast<std::uint64_t>(W)) {
            alignas(64) T lanes[W];
            v.store_aligned(lanes);
            lanes[y - i] -= fix;
            v = batch<T>::load_aligned(lanes);
        }
        return v;
    }
    T one(std::int64_t i) const
    {
        const T e = Exp ? std::exp((src[i] - m) - ls) : src[i];
        T v = a * e;
        if constexpr (!std::is_same_v<U, NoFactor>) v -= b * u.one(i);
        return i == y ? v - fix : v;
    }
};

template <class T, class U, bool Exp>
void write_grad_row(T* out, std::int64_t n, bool stream, const GradRow<T, U, Exp>& f)
{
    if (stream) write_row<T, true>(out, n, f);
    else write_row<T, false>(out, n, f);
}

template <class T>
T scale_at(const Value& g, std::int64_t i)
{
    return g.numel() == 1 ? g.data<T>()[0] : g.data<T>()[i];
}

/// A row of exps per thread, reused across rows and calls: it stays in cache.
template <class T>
T* scratch_row(std::int64_t n)
{
    thread_local std::vector<T> row;
    if (static_cast<std::int64_t>(row.size()) < n) row.resize(static_cast<std::size_t>(n));
    return row.data();
}

}  // namespace

// ---- cross-entropy ---------------------------------------------------------------------------

// forward, per row i (class index y, or probabilities t), with m = max_c z_c, s = Σ exp(z_c − m):
//   index: loss = on·w_y·(log s + m − z_y) + off·(W·log s − Σ w_c (z_c − m))      W = Σ_c w_c
//   prob : loss = U·log s − Σ u_c (z_c − m)               u_c = w_c (on t_c + off), U = Σ_c u_c
// both are Σ_c q_c (lse − z_c); mass = on·w_y + off·W, resp. U.
// gradient, written from the cached row of exps: dz_c = g (mass e_c / s − q_c)
CrossEntropyRows cross_entropy_forward(const Value& logits, const Value& target, const Value& weight,
                                       const CrossEntropySpec& spec, Value* grad, bool grad_of_mean)
{
    const std::int64_t N = logits.shape()[0], C = logits.shape()[1];
    const bool prob = is_floating(target.dtype());
    return dispatch_float(logits.dtype(), "cross_entropy", [&]<class T>() {
        CrossEntropyRows r;
        r.loss = Value::empty(Shape{N}, logits.dtype());
        r.max = Value::empty(Shape{N}, logits.dtype());
        r.log_sum = Value::empty(Shape{N}, logits.dtype());
        const T* z = logits.data<T>();
        const T* w = weight.defined() ? weight.data<T>() : nullptr;
        const std::int64_t* y = prob ? nullptr : target.data<std::int64_t>();
        T *loss = r.loss.data<T>(), *mx = r.max.data<T>(), *lsum = r.log_sum.data<T>();
        const T on = static_cast<T>(spec.on), off = static_cast<T>(spec.off);
        double wsum = static_cast<double>(C);
        if (w) {
            wsum = 0;
            for (std::int64_t c = 0; c < C; ++c) wsum += w[c];
        }
        r.total_weight = static_cast<double>(N);
        if (!prob) {
            r.total_weight = 0;
            for (std::int64_t i = 0; i < N; ++i)
                if (y[i] != spec.ignore_index) r.total_weight += w ? w[y[i]] : 1.0;
        }
        if (grad) *grad = Value::empty(logits.shape(), logits.dtype());
        T* d = grad ? grad->data<T>() : nullptr;
        const bool stream = grad && grad->nbytes() >= stream_min_bytes;
        const T g = static_cast<T>(!grad_of_mean ? 1.0 : r.total_weight > 0 ? 1.0 / r.total_weight : 0.0);

        // one row with factor u: the sums, the loss, and the gradient row from the cached exps
        auto row = [&](std::int64_t i, const auto& u, double on_y, std::int64_t yi) {
            const T* zi = z + i * C;
            const T m = row_max(zi, C);
            T* e = d ? scratch_row<T>(C) : nullptr;
            const auto es = exp_sums(zi, C, m, u, e);
            const double ls = std::log(static_cast<double>(es.s));
            double mass = 0, l = 0;
            if (prob) {
                mass = es.u;
                l = es.u * ls - es.a;
            } else {
                mass = on_y + spec.off * wsum;
                l = on_y * (ls + (static_cast<double>(m) - zi[yi])) + (spec.off == 0 ? 0.0 : spec.off * (wsum * ls - es.a));
            }
            mx[i] = m;
            lsum[i] = static_cast<T>(ls);
            loss[i] = static_cast<T>(l + spec.row_offset);
            if (!d) return;
            using U = std::decay_t<decltype(u)>;
            const T a = static_cast<T>(static_cast<double>(g) * mass / static_cast<double>(es.s));
            const T b = prob ? g : g * off, fix = static_cast<T>(static_cast<double>(g) * on_y);
            write_grad_row(d + i * C, C, stream, GradRow<T, U, false>{e, 0, 0, a, b, u, yi, fix});
        };
        for_rows(N, N * C, stream, [&](std::int64_t i) {
            if (prob) return row(i, SmoothedProbs<T>{target.data<T>() + i * C, w, on, off}, 0.0, -1);
            if (y[i] == spec.ignore_index) {
                loss[i] = mx[i] = lsum[i] = 0;
                if (d) std::memset(d + i * C, 0, static_cast<std::size_t>(C) * sizeof(T));
                return;
            }
            const double on_y = spec.on * (w ? w[y[i]] : 1.0);
            if (off == 0) row(i, NoFactor{}, on_y, y[i]);
            else if (w) row(i, Weights<T>{w}, on_y, y[i]);
            else row(i, Ones<T>{}, on_y, y[i]);
        });
        return r;
    });
}

void scale_rows_(Value& x, const Value& g)
{
    const std::int64_t N = x.shape()[0], C = x.numel() / std::max<std::int64_t>(N, 1);
    x.bump_version();
    dispatch_float(x.dtype(), "cross_entropy_backward", [&]<class T>() {
        T* p = x.data<T>();
        if (g.numel() == 1) {
            const batch<T> s(g.data<T>()[0]);
            map1(p, p, x.numel(), [s](auto v) { return v * s; });
            return;
        }
        for_rows(N, N * C, false, [&](std::int64_t i) {
            constexpr std::int64_t W = batch<T>::size;
            const T s = g.data<T>()[i];
            T* r = p + i * C;
            std::int64_t c = 0;
            for (; c + W <= C; c += W) (batch<T>::load_unaligned(r + c) * batch<T>(s)).store_unaligned(r + c);
            for (; c < C; ++c) r[c] *= s;
        });
    });
}

// dt_c = g_i · on · w_c · (lse_i − z_c)         (probability targets: ∂loss/∂t = −on · w ⊙ log_softmax(z))
Value cross_entropy_target_backward(const Value& g, const Value& logits, const Value& weight,
                                    const CrossEntropyRows& rows, const CrossEntropySpec& spec)
{
    const std::int64_t N = logits.shape()[0], C = logits.shape()[1];
    return dispatch_float(logits.dtype(), "cross_entropy_backward", [&]<class T>() {
        Value dt = Value::empty(logits.shape(), logits.dtype());
        const T* z = logits.data<T>();
        const T* w = weight.defined() ? weight.data<T>() : nullptr;
        T* d = dt.data<T>();
        for_rows(N, N * C, false, [&](std::int64_t i) {
            const T s = scale_at<T>(g, i) * static_cast<T>(spec.on);
            const T m = rows.max.data<T>()[i], ls = rows.log_sum.data<T>()[i];
            const T* zi = z + i * C;
            for (std::int64_t c = 0; c < C; ++c) d[i * C + c] = s * (w ? w[c] : T(1)) * (ls - (zi[c] - m));
        });
        return dt;
    });
}

// ---- logsumexp ---------------------------------------------------------------------------------

Value logsumexp_rows(const Value& x)
{
    const std::int64_t N = x.shape()[0], C = x.shape()[1];
    return dispatch_float(x.dtype(), "logsumexp", [&]<class T>() {
        Value out = Value::empty(Shape{N}, x.dtype());
        const T* z = x.data<T>();
        T* o = out.data<T>();
        for_rows(N, N * C, false, [&](std::int64_t i) {
            const T m = row_max(z + i * C, C);
            if (std::isinf(m)) {  // +inf dominates: z − m would be NaN
                o[i] = m;
                return;
            }
            o[i] = m + std::log(exp_sums(z + i * C, C, m, NoFactor{}).s);
        });
        return out;
    });
}

Value logsumexp_rows_backward(const Value& g, const Value& x, const Value& lse)
{
    const std::int64_t N = x.shape()[0], C = x.shape()[1];
    return dispatch_float(x.dtype(), "logsumexp_backward", [&]<class T>() {
        Value dx = Value::empty(x.shape(), x.dtype());
        const bool stream = dx.nbytes() >= stream_min_bytes;
        const T* z = x.data<T>();
        T* d = dx.data<T>();
        for_rows(N, N * C, stream, [&](std::int64_t i) {
            const GradRow<T, NoFactor, true> row{z + i * C, lse.data<T>()[i], T(0), scale_at<T>(g, i), T(0), {}};
            write_grad_row(d + i * C, C, stream, row);
        });
        return dx;
    });
}

// ---- log-sigmoid -------------------------------------------------------------------------------

Value log_sigmoid(const Value& x)
{
    return dispatch_float(x.dtype(), "logsigmoid", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        // min(x, 0) − log1p(exp(−|x|)): exp never overflows, and log1p keeps the tiny tail exact
        map1(x.data<T>(), y.data<T>(), x.numel(), [](auto v) {
            using B = decltype(v);
            return xsimd::min(v, B(T(0))) - xsimd::log1p(xsimd::exp(-xsimd::abs(v)));
        });
        return y;
    });
}

Value log_sigmoid_backward(const Value& dy, const Value& x)
{
    return dispatch_float(x.dtype(), "logsigmoid_backward", [&]<class T>() {
        Value dx = Value::empty(x.shape(), x.dtype());
        // σ(−x) = 1 / (1 + exp(x)); exp(x) = inf for large x gives 0, as it should
        map2(dy.data<T>(), x.data<T>(), dx.data<T>(), x.numel(),
             [](auto g, auto v) { return g / (decltype(v)(T(1)) + xsimd::exp(v)); });
        return dx;
    });
}

}  // namespace spool::kernels
