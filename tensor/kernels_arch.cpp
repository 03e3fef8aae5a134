// The hot loops outside the GEMM (tensor/kernels_arch.hpp's table): elementwise maps, sums and
// softmax rows (attention's too), attention's few-row (decoding) loops, layer norm's rows, Philox blocks and the draws and dropouts made from them. Compiled once per
// instruction set, like tensor/gemm_arch.cpp: SPOOL_ARCH names the namespace everything here
// lives in, xsimd's default arch follows the compile flags, and no two compilations share a
// symbol (scripts/check_arch_symbols.py). Not here: shape checks, allocation, broadcasting
// plans — the callers in tensor/*.cpp do those once, at the baseline.

#include "tensor/kernels_arch.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <limits>

#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

#ifndef SPOOL_ARCH
#error "compile kernels_arch.cpp with -DSPOOL_ARCH=<namespace> (tensor/meson.build does)"
#endif

namespace spool::kernels::SPOOL_ARCH {

namespace {

using detail::batch;
using detail::map1;
using detail::map2;

// ---- elementwise ----------------------------------------------------------------------------

template <class B>
B sigmoid_b(B x)
{
    return B(1) / (B(1) + xsimd::exp(-x));
}

constexpr double k_sqrt1_2 = 0.70710678118654752440;     // 1/sqrt(2)
constexpr double k_inv_sqrt_2pi = 0.39894228040143267794;  // 1/sqrt(2 pi)
constexpr double k_sqrt_2_pi = 0.79788456080286535588;     // sqrt(2/pi)
constexpr double k_gelu_c = 0.044715;

template <class B>
B gelu_tanh_inner(B x)
{
    using T = typename B::value_type;
    return B(T(k_sqrt_2_pi)) * (x + B(T(k_gelu_c)) * x * x * x);
}

template <class T>
void unary(Unary op, const T* x, T* y, std::int64_t n)
{
    using B = batch<T>;
    switch (op) {
    case Unary::neg: return map1(x, y, n, [](B v) { return -v; });
    case Unary::exp: return map1(x, y, n, [](B v) { return xsimd::exp(v); });
    case Unary::log: return map1(x, y, n, [](B v) { return xsimd::log(v); });
    case Unary::sqrt: return map1(x, y, n, [](B v) { return xsimd::sqrt(v); });
    case Unary::abs: return map1(x, y, n, [](B v) { return xsimd::abs(v); });
    case Unary::tanh: return map1(x, y, n, [](B v) { return xsimd::tanh(v); });
    case Unary::sigmoid: return map1(x, y, n, [](B v) { return sigmoid_b(v); });
    case Unary::square: return map1(x, y, n, [](B v) { return v * v; });
    // select keeps NaN: NaN < 0 is false, so NaN passes through (never silently 0)
    case Unary::relu: return map1(x, y, n, [](B v) { return xsimd::select(v < B(0), B(0), v); });
    case Unary::sign:
        return map1(x, y, n, [](B v) {
            return xsimd::select(v > B(0), B(1), xsimd::select(v < B(0), B(-1), v));  // 0 and NaN stay
        });
    case Unary::gelu_erf:
        return map1(x, y, n, [](B v) { return B(T(0.5)) * v * (B(1) + xsimd::erf(v * B(T(k_sqrt1_2)))); });
    case Unary::gelu_tanh:
        return map1(x, y, n, [](B v) { return B(T(0.5)) * v * (B(1) + xsimd::tanh(gelu_tanh_inner(v))); });
    }
}

template <class T>
void unary_backward(UnaryBackward op, const T* dy, const T* s, T* dx, std::int64_t n)
{
    using B = batch<T>;
    switch (op) {
    case UnaryBackward::relu: return map2(dy, s, dx, n, [](B g, B v) { return xsimd::select(v > B(0), g, B(0)); });
    case UnaryBackward::tanh: return map2(dy, s, dx, n, [](B g, B v) { return g * (B(1) - v * v); });
    case UnaryBackward::sigmoid: return map2(dy, s, dx, n, [](B g, B v) { return g * v * (B(1) - v); });
    case UnaryBackward::gelu_erf:
        // d/dx [x Φ(x)] = Φ(x) + x φ(x)
        return map2(dy, s, dx, n, [](B g, B v) {
            B cdf = B(T(0.5)) * (B(1) + xsimd::erf(v * B(T(k_sqrt1_2))));
            B pdf = B(T(k_inv_sqrt_2pi)) * xsimd::exp(B(T(-0.5)) * v * v);
            return g * (cdf + v * pdf);
        });
    case UnaryBackward::gelu_tanh:
        // y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi)(x + c x^3)
        // dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 c x^2)
        return map2(dy, s, dx, n, [](B g, B v) {
            B t = xsimd::tanh(gelu_tanh_inner(v));
            B du = B(T(k_sqrt_2_pi)) * (B(1) + B(T(3 * k_gelu_c)) * v * v);
            return g * (B(T(0.5)) * (B(1) + t) + B(T(0.5)) * v * (B(1) - t * t) * du);
        });
    case UnaryBackward::abs:
        return map2(dy, s, dx, n,
                    [](B g, B v) { return g * xsimd::select(v > B(0), B(1), xsimd::select(v < B(0), B(-1), B(0))); });
    }
}

/// One row of a broadcasting binary op; f is called with batches.
template <class T, class F>
void row2(const T* x, std::int64_t sx, const T* y, std::int64_t sy, T* z, std::int64_t n, F f)
{
    constexpr std::int64_t W = batch<T>::size;
    if (sx == 1 && sy == 1) {
        if (n >= detail::parallel_grain) return map2(x, y, z, n, f);
        std::int64_t i = 0;
        for (; i + W <= n; i += W) f(batch<T>::load_unaligned(x + i), batch<T>::load_unaligned(y + i)).store_unaligned(z + i);
        if (i < n) {
            alignas(64) T bx[W] = {}, by[W] = {};
            std::copy(x + i, x + n, bx);
            std::copy(y + i, y + n, by);
            f(batch<T>::load_aligned(bx), batch<T>::load_aligned(by)).store_aligned(bx);
            std::copy(bx, bx + (n - i), z + i);
        }
        return;
    }
    std::int64_t i = 0;
    if (sx == 0 && sy == 1) {
        batch<T> bx(*x);
        for (; i + W <= n; i += W) f(bx, batch<T>::load_unaligned(y + i)).store_unaligned(z + i);
    } else if (sx == 1 && sy == 0) {
        batch<T> by(*y);
        for (; i + W <= n; i += W) f(batch<T>::load_unaligned(x + i), by).store_unaligned(z + i);
    }
    // tail (and the general strided case) through lane 0 of a batch
    for (; i < n; ++i) z[i] = f(batch<T>(x[i * sx]), batch<T>(y[i * sy])).get(0);
}

template <class T>
void binary_row(Binary op, const T* x, std::int64_t sx, const T* y, std::int64_t sy, T* z, std::int64_t n)
{
    using B = batch<T>;
    switch (op) {
    case Binary::add: return row2(x, sx, y, sy, z, n, [](B u, B v) { return u + v; });
    case Binary::sub: return row2(x, sx, y, sy, z, n, [](B u, B v) { return u - v; });
    case Binary::mul: return row2(x, sx, y, sy, z, n, [](B u, B v) { return u * v; });
    case Binary::div: return row2(x, sx, y, sy, z, n, [](B u, B v) { return u / v; });
    }
}

// ---- reductions and softmax ----------------------------------------------------------------------

template <class T>
T row_sum(const T* x, std::int64_t n)
{
    constexpr std::int64_t W = batch<T>::size;
    batch<T> a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));  // four chains: latency and accuracy
    std::int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        a0 += batch<T>::load_unaligned(x + i);
        a1 += batch<T>::load_unaligned(x + i + W);
        a2 += batch<T>::load_unaligned(x + i + 2 * W);
        a3 += batch<T>::load_unaligned(x + i + 3 * W);
    }
    for (; i + W <= n; i += W) a0 += batch<T>::load_unaligned(x + i);
    T s = xsimd::hadd((a0 + a1) + (a2 + a3));
    for (; i < n; ++i) s += x[i];
    return s;
}

/// out[k] = sum over j = 0, 1, ... of weight(j) * x[j * ld + k], for k < m: each chunk of up to
/// four vectors of columns stays in registers while the rows stream past.
template <class T, class Weight>
void weighted_col_sums(const T* x, std::int64_t ld, std::int64_t n, std::int64_t m, T* out, Weight weight)
{
    constexpr std::int64_t W = batch<T>::size;
    std::int64_t k = 0;
    for (; k + 4 * W <= m; k += 4 * W) {
        batch<T> a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));
        for (std::int64_t j = 0; j < n; ++j) {
            const batch<T> w(weight(j));
            const T* r = x + j * ld + k;
            a0 = xsimd::fma(w, batch<T>::load_unaligned(r), a0);
            a1 = xsimd::fma(w, batch<T>::load_unaligned(r + W), a1);
            a2 = xsimd::fma(w, batch<T>::load_unaligned(r + 2 * W), a2);
            a3 = xsimd::fma(w, batch<T>::load_unaligned(r + 3 * W), a3);
        }
        a0.store_unaligned(out + k);
        a1.store_unaligned(out + k + W);
        a2.store_unaligned(out + k + 2 * W);
        a3.store_unaligned(out + k + 3 * W);
    }
    for (; k + W <= m; k += W) {
        batch<T> a(T(0));
        for (std::int64_t j = 0; j < n; ++j) a = xsimd::fma(batch<T>(weight(j)), batch<T>::load_unaligned(x + j * ld + k), a);
        a.store_unaligned(out + k);
    }
    for (; k < m; ++k) {
        T a = T(0);
        for (std::int64_t j = 0; j < n; ++j) a += weight(j) * x[j * ld + k];
        out[k] = a;
    }
}

/// out[k] = sum_j x[j * ld + k] for k < m, summed row after row from 0 (the order of a loop that
/// adds each row into out; a multiply-add by 1 rounds as the add does).
template <class T>
void col_sum(const T* x, T* out, std::int64_t n, std::int64_t m, std::int64_t ld)
{
    weighted_col_sums(x, ld, n, m, out, [](std::int64_t) { return T(1); });
}

template <class T>
T row_max(const T* x, std::int64_t n)
{
    T m = -std::numeric_limits<T>::infinity();
    for (std::int64_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) return x[i];
        if (x[i] > m) m = x[i];
    }
    return m;
}

/// y = softmax(x) (log form: y = x - max - log sum exp(x - max)) over a contiguous row.
template <class T, bool Log>
void softmax_row(const T* x, T* y, std::int64_t n)
{
    T m = row_max(x, n);
    if (std::isinf(m) && m < 0) m = 0;  // all -inf: keep exp(-inf - 0) = 0 instead of NaN from inf - inf
    constexpr std::int64_t W = batch<T>::size;
    batch<T> bm(m);
    // exp(x - m) into y, summed
    map1(x, y, n, [bm](auto v) { return xsimd::exp(v - bm); });
    T s = row_sum(y, n);
    if constexpr (Log) {
        // (x - m) - log s, not x - (m + log s): m + log s would round away log s's digits
        batch<T> ls(std::log(s));
        map1(x, y, n, [bm, ls](auto v) { return (v - bm) - ls; });
    } else {
        batch<T> inv(T(1) / s);
        std::int64_t i = 0;
        for (; i + W <= n; i += W) (batch<T>::load_unaligned(y + i) * inv).store_unaligned(y + i);
        for (; i < n; ++i) y[i] *= T(1) / s;
    }
}

/// Strided version (inner > 1): rows are x[j * inner] for j < n.
template <class T, bool Log>
void softmax_strided(const T* x, T* y, std::int64_t n, std::int64_t inner)
{
    for (std::int64_t k = 0; k < inner; ++k) {
        T m = -std::numeric_limits<T>::infinity();
        bool nan = false;
        for (std::int64_t j = 0; j < n; ++j) {
            T v = x[j * inner + k];
            nan |= std::isnan(v);
            m = v > m ? v : m;
        }
        if (std::isinf(m) && m < 0) m = 0;
        T s = 0;
        for (std::int64_t j = 0; j < n; ++j) s += std::exp(x[j * inner + k] - m);
        T ls = std::log(s);
        for (std::int64_t j = 0; j < n; ++j) {
            T v = x[j * inner + k];
            y[j * inner + k] = nan ? std::numeric_limits<T>::quiet_NaN() : (Log ? (v - m) - ls : std::exp(v - m) / s);
        }
    }
}

/// sum over n of x viewed as [outer, n, inner] into y [outer, inner].
template <class T>
void sum(const T* xs, T* ys, std::int64_t outer, std::int64_t n, std::int64_t inner)
{
    const int nt = detail::threads_for(outer * n * inner);
    if (inner == 1) {
        spool::detail::parallel_for(outer, nt, [&](std::int64_t o) { ys[o] = row_sum(xs + o * n, n); });
    } else {
        // items of 4 vectors of columns, so that a [rows, features] gradient summed over its rows
        // (a bias gradient: outer 1) is shared between threads too
        constexpr std::int64_t C = 4 * batch<T>::size;
        const std::int64_t per = (inner + C - 1) / C;
        spool::detail::parallel_for(outer * per, nt, [&](std::int64_t item) {
            const std::int64_t o = item / per, k0 = item % per * C;
            col_sum(xs + o * n * inner + k0, ys + o * inner + k0, n, std::min(C, inner - k0), inner);
        });
    }
}

template <class T, bool Log>
void softmax_rows(const T* xs, T* ys, std::int64_t outer, std::int64_t n, std::int64_t inner)
{
    spool::detail::parallel_for(outer, detail::threads_for(outer * n * inner), [&](std::int64_t o) {
        if (inner == 1)
            softmax_row<T, Log>(xs + o * n, ys + o * n, n);
        else
            softmax_strided<T, Log>(xs + o * n * inner, ys + o * n * inner, n, inner);
    });
}

template <class T>
void softmax(bool log, const T* xs, T* ys, std::int64_t outer, std::int64_t n, std::int64_t inner)
{
    if (log) softmax_rows<T, true>(xs, ys, outer, n, inner);
    else softmax_rows<T, false>(xs, ys, outer, n, inner);
}

/// dx = dy - exp(y) * sum(dy) (Log) or y * (dy - sum(dy * y)); d may be g (in place).
template <class T, bool Log>
void softmax_backward_rows(const T* g, const T* ys, T* d, std::int64_t outer, std::int64_t n, std::int64_t inner)
{
    constexpr std::int64_t W = batch<T>::size;
    spool::detail::parallel_for(outer, detail::threads_for(outer * n * inner), [&](std::int64_t o) {
        if (inner == 1 && !Log) {  // contiguous rows (attention's): SIMD dot product, then the map
            const T* gr = g + o * n;
            const T* yr = ys + o * n;
            T* dr = d + o * n;
            batch<T> a(T(0));
            std::int64_t j = 0;
            for (; j + W <= n; j += W) a = xsimd::fma(batch<T>::load_unaligned(gr + j), batch<T>::load_unaligned(yr + j), a);
            T acc = xsimd::hadd(a);
            for (; j < n; ++j) acc += gr[j] * yr[j];
            const batch<T> bacc(acc);
            j = 0;
            for (; j + W <= n; j += W) {
                const batch<T> yv = batch<T>::load_unaligned(yr + j);
                (yv * (batch<T>::load_unaligned(gr + j) - bacc)).store_unaligned(dr + j);
            }
            for (; j < n; ++j) dr[j] = yr[j] * (gr[j] - acc);
            return;
        }
        for (std::int64_t k = 0; k < inner; ++k) {
            std::int64_t base = o * n * inner + k;
            T acc = 0;
            for (std::int64_t j = 0; j < n; ++j) {
                std::int64_t i = base + j * inner;
                acc += Log ? g[i] : g[i] * ys[i];
            }
            for (std::int64_t j = 0; j < n; ++j) {
                std::int64_t i = base + j * inner;
                d[i] = Log ? g[i] - std::exp(ys[i]) * acc : ys[i] * (g[i] - acc);
            }
        }
    });
}

template <class T>
void softmax_backward(bool log, const T* g, const T* ys, T* d, std::int64_t outer, std::int64_t n, std::int64_t inner)
{
    if (log) softmax_backward_rows<T, true>(g, ys, d, outer, n, inner);
    else softmax_backward_rows<T, false>(g, ys, d, outer, n, inner);
}

// ---- attention's softmax rows ---------------------------------------------------------------------

/// Largest entry of a row; NaN if any entry is NaN (so NaN scores give NaN rows, not zeros).
template <class T>
T row_max_nan(const T* row, std::int64_t n)
{
    constexpr std::int64_t W = batch<T>::size;
    const T ninf = -std::numeric_limits<T>::infinity();
    batch<T> bm(ninf);
    xsimd::batch_bool<T> nan(false);
    std::int64_t j = 0;
    for (; j + W <= n; j += W) {
        const batch<T> v = batch<T>::load_unaligned(row + j);
        bm = xsimd::max(bm, v);
        nan = nan | xsimd::isnan(v);
    }
    if (xsimd::any(nan)) return std::numeric_limits<T>::quiet_NaN();
    alignas(64) T lanes[W];
    bm.store_aligned(lanes);
    T mx = ninf;
    for (std::int64_t l = 0; l < W; ++l) mx = std::max(mx, lanes[l]);
    for (; j < n; ++j) mx = row[j] > mx || std::isnan(row[j]) ? row[j] : mx;
    return mx;
}

/// row[j] = exp(row[j] - m); returns the sum. exp(-inf) is 0: masked entries drop out.
template <class T>
T exp_shift_sum(T* row, std::int64_t n, T m)
{
    constexpr std::int64_t W = batch<T>::size;
    const batch<T> bm(m);
    batch<T> acc(T(0));
    std::int64_t j = 0;
    for (; j + W <= n; j += W) {
        batch<T> e = xsimd::exp(batch<T>::load_unaligned(row + j) - bm);
        e.store_unaligned(row + j);
        acc += e;
    }
    T s = xsimd::hadd(acc);
    for (; j < n; ++j) s += row[j] = std::exp(row[j] - m);
    return s;
}

template <class T>
void scale_row(T* row, std::int64_t n, T a)
{
    constexpr std::int64_t W = batch<T>::size;
    const batch<T> ba(a);
    std::int64_t j = 0;
    for (; j + W <= n; j += W) (batch<T>::load_unaligned(row + j) * ba).store_unaligned(row + j);
    for (; j < n; ++j) row[j] *= a;
}

/// P[L, S] = scale * Q[L, E] Kᵀ for L <= kFewRows (K: S rows of E values).
template <class T>
void scores_few_rows(std::int64_t L, std::int64_t S, std::int64_t E, T scale, const T* Q, const T* K, T* P)
{
    constexpr std::int64_t W = batch<T>::size;
    for (std::int64_t j = 0; j < S; ++j) {
        const T* kr = K + j * E;
        for (std::int64_t i = 0; i < L; ++i) {
            const T* qr = Q + i * E;
            batch<T> a0(T(0)), a1(T(0));
            std::int64_t e = 0;
            for (; e + 2 * W <= E; e += 2 * W) {
                a0 = xsimd::fma(batch<T>::load_unaligned(qr + e), batch<T>::load_unaligned(kr + e), a0);
                a1 = xsimd::fma(batch<T>::load_unaligned(qr + e + W), batch<T>::load_unaligned(kr + e + W), a1);
            }
            for (; e + W <= E; e += W)
                a0 = xsimd::fma(batch<T>::load_unaligned(qr + e), batch<T>::load_unaligned(kr + e), a0);
            T s = xsimd::hadd(a0 + a1);
            for (; e < E; ++e) s += qr[e] * kr[e];
            P[i * S + j] = scale * s;
        }
    }
}

/// O[L, Ev] = A[L, S] V for L <= kFewRows (V: S rows of Ev values); each output chunk of up to
/// four vectors stays in registers while the keys stream past.
template <class T>
void weighted_sum_few_rows(std::int64_t L, std::int64_t S, std::int64_t Ev, const T* A, const T* V, T* O)
{
    for (std::int64_t i = 0; i < L; ++i) {
        const T* a = A + i * S;
        weighted_col_sums(V, Ev, S, Ev, O + i * Ev, [a](std::int64_t j) { return a[j]; });
    }
}

// ---- layer norm -------------------------------------------------------------------------------

template <class T>
void layer_norm(const T* xs, const T* w, const T* b, T* ys, T* ms, T* rs, std::int64_t N, std::int64_t D, double eps)
{
    constexpr std::int64_t W = batch<T>::size;
    spool::detail::parallel_for(N, detail::threads_for(N * D), [&](std::int64_t n) {
        const T* r = xs + n * D;
        T* o = ys + n * D;
        batch<T> acc(T(0));
        std::int64_t i = 0;
        for (; i + W <= D; i += W) acc += batch<T>::load_unaligned(r + i);
        T s = xsimd::hadd(acc);
        for (; i < D; ++i) s += r[i];
        const T m = s / T(D);
        batch<T> bm(m), acc2(T(0));
        i = 0;
        for (; i + W <= D; i += W) {
            auto d = batch<T>::load_unaligned(r + i) - bm;
            acc2 = xsimd::fma(d, d, acc2);
        }
        T ss = xsimd::hadd(acc2);
        for (; i < D; ++i) ss += (r[i] - m) * (r[i] - m);
        const T rsd = T(1) / std::sqrt(ss / T(D) + T(eps));
        ms[n] = m;
        rs[n] = rsd;
        batch<T> br(rsd);
        i = 0;
        for (; i + W <= D; i += W) {
            auto h = (batch<T>::load_unaligned(r + i) - bm) * br;
            if (w) h = h * batch<T>::load_unaligned(w + i);
            if (b) h = h + batch<T>::load_unaligned(b + i);
            h.store_unaligned(o + i);
        }
        for (; i < D; ++i) {
            T h = (r[i] - m) * rsd;
            if (w) h *= w[i];
            if (b) h += b[i];
            o[i] = h;
        }
    });
}

// xhat = (x - mean) rstd, g = dy * weight
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight = Σ_rows dy xhat; dbias = Σ_rows dy
template <class T>
void layer_norm_backward(const T* g, const T* xs, const T* w, const T* ms, const T* rs, T* d, T* part_w, T* part_b,
                         std::int64_t N, std::int64_t D, std::int64_t nb)
{
    spool::detail::parallel_for(nb, detail::threads_for(N * D), [&](std::int64_t blk) {
        T* pw = part_w ? part_w + blk * D : nullptr;
        T* pb = part_b ? part_b + blk * D : nullptr;
        for (std::int64_t n = blk * N / nb; n < (blk + 1) * N / nb; ++n) {
            const T* gr = g + n * D;
            const T* xr = xs + n * D;
            T* dr = d + n * D;
            const T m = ms[n], r = rs[n];
            // the row sums in vectors (a scalar float sum does not vectorise: it was most of the time)
            using B = batch<T>;
            constexpr std::int64_t W = B::size;
            const B bm(m), br(r);
            B vsg(T(0)), vsgx(T(0));
            std::int64_t i = 0;
            for (; i + W <= D; i += W) {
                const B gg = B::load_unaligned(gr + i), xh = (B::load_unaligned(xr + i) - bm) * br;
                const B gi = w ? gg * B::load_unaligned(w + i) : gg;
                vsg += gi;
                vsgx = xsimd::fma(gi, xh, vsgx);
                if (pw) xsimd::fma(gg, xh, B::load_unaligned(pw + i)).store_unaligned(pw + i);
                if (pb) (B::load_unaligned(pb + i) + gg).store_unaligned(pb + i);
            }
            T sg = xsimd::hadd(vsg), sgx = xsimd::hadd(vsgx);
            for (; i < D; ++i) {
                T xh = (xr[i] - m) * r;
                T gi = w ? gr[i] * w[i] : gr[i];
                sg += gi;
                sgx += gi * xh;
                if (pw) pw[i] += gr[i] * xh;
                if (pb) pb[i] += gr[i];
            }
            const T a = sg / T(D), c = sgx / T(D);
            const B ba(a), bc(c);
            i = 0;
            for (; i + W <= D; i += W) {
                const B xh = (B::load_unaligned(xr + i) - bm) * br, gg = B::load_unaligned(gr + i);
                const B gi = w ? gg * B::load_unaligned(w + i) : gg;
                (br * (gi - ba - xh * bc)).store_unaligned(dr + i);
            }
            for (; i < D; ++i) {
                T xh = (xr[i] - m) * r;
                T gi = w ? gr[i] * w[i] : gr[i];
                dr[i] = r * (gi - a - xh * c);
            }
        }
    });
}

// ---- Philox-4x32-10 ---------------------------------------------------------------------------
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11.) Blocks are computed 16
// (AVX-512) or 8 (AVX2) at a time in explicit SIMD, the rest one by one.

constexpr std::uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

inline void round(std::uint32_t& c0, std::uint32_t& c1, std::uint32_t& c2, std::uint32_t& c3, std::uint32_t k0,
                  std::uint32_t k1)
{
    std::uint64_t p0 = std::uint64_t{M0} * c0, p1 = std::uint64_t{M1} * c2;
    std::uint32_t hi0 = p0 >> 32, lo0 = static_cast<std::uint32_t>(p0);
    std::uint32_t hi1 = p1 >> 32, lo1 = static_cast<std::uint32_t>(p1);
    std::uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
}

// Explicit SIMD: the compiler's own vectorisation of the scalar loop below reached only
// ~2.9 ns per 32-bit word (it cannot see the 32x32 -> 64 multiply as a mul_epu32 pair).
// Lane i of the vectors holds block (first + i); the 4 x W result is transposed to the
// scalar order out[4 b + lane] with unpacks. Same bits as the scalar loop (tested).
#if defined(__AVX512F__)
constexpr std::int64_t simd_blocks = 16;
using V = __m512i;
inline V set1(std::uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
inline V vxor(V a, V b) { return _mm512_xor_si512(a, b); }
/// hi and lo 32 bits of a * m per lane (m a broadcast constant).
inline void mulhilo(V a, V m, V& hi, V& lo)
{
    const V even = _mm512_mul_epu32(a, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
inline V first_counters(std::uint32_t base) { return _mm512_add_epi32(set1(base), _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)); }
inline V carried(V lo, std::uint32_t base_lo, std::uint32_t base_hi)
{
    const __mmask16 wrapped = _mm512_cmplt_epu32_mask(lo, set1(base_lo));
    return _mm512_mask_add_epi32(set1(base_hi), wrapped, set1(base_hi), set1(1));
}
inline void store_interleaved(V c0, V c1, V c2, V c3, std::uint32_t* out)
{
    const V t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpackhi_epi32(c0, c1);
    const V t2 = _mm512_unpacklo_epi32(c2, c3), t3 = _mm512_unpackhi_epi32(c2, c3);
    const V u[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2), _mm512_unpacklo_epi64(t1, t3),
                    _mm512_unpackhi_epi64(t1, t3)};
    // u[j]'s 128-bit lane k is block 4 k + j
    alignas(64) std::uint32_t lanes[4][16];
    for (int j = 0; j < 4; ++j) _mm512_store_si512(lanes[j], u[j]);
    for (int k = 0; k < 4; ++k)
        for (int j = 0; j < 4; ++j) std::memcpy(out + 4 * (4 * k + j), lanes[j] + 4 * k, 16);
}
#elif defined(__AVX2__)
constexpr std::int64_t simd_blocks = 8;
using V = __m256i;
inline V set1(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
inline V vxor(V a, V b) { return _mm256_xor_si256(a, b); }
inline void mulhilo(V a, V m, V& hi, V& lo)
{
    const V even = _mm256_mul_epu32(a, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
inline V first_counters(std::uint32_t base) { return _mm256_add_epi32(set1(base), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
inline V carried(V lo, std::uint32_t base_lo, std::uint32_t base_hi)
{
    // lo < base_lo unsigned: flip the sign bits and compare signed
    const V flip = set1(0x80000000u);
    const V wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(set1(base_lo), flip), _mm256_xor_si256(lo, flip));
    return _mm256_sub_epi32(set1(base_hi), wrapped);  // wrapped lanes are -1
}
inline void store_interleaved(V c0, V c1, V c2, V c3, std::uint32_t* out)
{
    const V t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    const V t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    const V u[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3),
                    _mm256_unpackhi_epi64(t1, t3)};
    alignas(32) std::uint32_t lanes[4][8];
    for (int j = 0; j < 4; ++j) _mm256_store_si256(reinterpret_cast<V*>(lanes[j]), u[j]);
    for (int k = 0; k < 2; ++k)
        for (int j = 0; j < 4; ++j) std::memcpy(out + 4 * (4 * k + j), lanes[j] + 4 * k, 16);
}
#else
constexpr std::int64_t simd_blocks = 0;
#endif

void philox_blocks(const RngState& s, std::uint64_t first, std::int64_t count, std::uint32_t* out)
{
    const std::uint32_t k0s = static_cast<std::uint32_t>(s.seed), k1s = static_cast<std::uint32_t>(s.seed >> 32);
    std::int64_t b = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
    for (; b + simd_blocks <= count; b += simd_blocks) {
        const std::uint64_t base = s.offset + first + static_cast<std::uint64_t>(b);
        const auto base_lo = static_cast<std::uint32_t>(base), base_hi = static_cast<std::uint32_t>(base >> 32);
        V c0 = first_counters(base_lo);
        V c1 = carried(c0, base_lo, base_hi), c2 = set1(0), c3 = set1(0);
        const V m0 = set1(M0), m1 = set1(M1);
        std::uint32_t k0 = k0s, k1 = k1s;
        for (int r = 0; r < 10; ++r) {
            V hi0, lo0, hi1, lo1;
            mulhilo(c0, m0, hi0, lo0);
            mulhilo(c2, m1, hi1, lo1);
            c0 = vxor(vxor(hi1, c1), set1(k0));
            c2 = vxor(vxor(hi0, c3), set1(k1));
            c1 = lo1;
            c3 = lo0;
            k0 += W0, k1 += W1;
        }
        store_interleaved(c0, c1, c2, c3, out + 4 * b);
    }
#endif
    for (; b < count; ++b) {
        std::uint64_t ctr = s.offset + first + b;
        std::uint32_t c0 = static_cast<std::uint32_t>(ctr), c1 = static_cast<std::uint32_t>(ctr >> 32), c2 = 0, c3 = 0;
        std::uint32_t k0 = k0s, k1 = k1s;
        for (int r = 0; r < 10; ++r) {
            round(c0, c1, c2, c3, k0, k1);
            k0 += W0, k1 += W1;
        }
        out[4 * b] = c0, out[4 * b + 1] = c1, out[4 * b + 2] = c2, out[4 * b + 3] = c3;
    }
}

void philox4x32(std::uint32_t ctr[4], const std::uint32_t key[2])
{
    std::uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; ++r) {
        round(ctr[0], ctr[1], ctr[2], ctr[3], k0, k1);
        k0 += W0, k1 += W1;
    }
}

/// Philox words for outputs [0, n), `per` words each, in chunks of 1024 words over threads:
/// chunk(words, first, count) gets the words of outputs [first, first + count); first is a
/// multiple of 1024 / per (so of 64 for one word per output).
template <int per, class Chunk>
void for_word_chunks(const RngState& s, std::int64_t n, Chunk chunk)
{
    constexpr std::int64_t chunk_blocks = 256;
    std::int64_t words = n * per, nblocks = (words + 3) / 4;
    std::int64_t nchunks = (nblocks + chunk_blocks - 1) / chunk_blocks;
    spool::detail::parallel_for(nchunks, detail::threads_for(n), [&](std::int64_t c) {
        alignas(64) std::uint32_t buf[4 * chunk_blocks];
        std::int64_t b0 = c * chunk_blocks, nbk = std::min(chunk_blocks, nblocks - b0);
        philox_blocks(s, b0, nbk, buf);
        std::int64_t w0 = b0 * 4, w1 = std::min(words, w0 + nbk * 4);
        // outputs fully inside this chunk (per divides 4, so none straddles chunks)
        chunk(static_cast<const std::uint32_t*>(buf), w0 / per, (w1 - w0) / per);
    });
}

/// Fill n outputs, each from `per` consecutive uint32 words, chunked over threads.
/// out[i] = conv(words of output i, i). per is a template parameter: a runtime divisor in w / per cost an integer division per
/// output and kept the loop scalar.
template <int per, class T, class Conv>
void fill(const RngState& s, T* out, std::int64_t n, Conv conv)
{
    for_word_chunks<per>(s, n, [&](const std::uint32_t* buf, std::int64_t first, std::int64_t count) {
        T* o = out + first;
        const Conv f = conv;  // a local copy: stores to o cannot alias its captures, so this vectorises
        for (std::int64_t k = 0; k < count; ++k) o[k] = f(buf + k * per, first + k);
    });
}

constexpr double two_pi = 6.283185307179586476925;

// uniform float: top 24 bits -> [0, 1); double: 53 bits from two words
void uniform_f(const RngState& s, float* out, std::int64_t n)
{
    fill<1>(s, out, n, [](const std::uint32_t* w, std::int64_t) { return static_cast<float>(w[0] >> 8) * 0x1.0p-24f; });
}

void uniform_d(const RngState& s, double* out, std::int64_t n)
{
    fill<2>(s, out, n, [](const std::uint32_t* w, std::int64_t) {
        std::uint64_t v = (std::uint64_t{w[0]} << 21) ^ (w[1] >> 11);
        return static_cast<double>(v) * 0x1.0p-53;
    });
}

// Box-Muller on (u1, u2) with u1 in (0, 1] so log is finite; one normal per pair keeps
// every output a function of its own counter words.
void normal_f(const RngState& s, float* out, std::int64_t n)
{
    fill<2>(s, out, n, [](const std::uint32_t* w, std::int64_t) {
        float u1 = (static_cast<float>(w[0] >> 8) + 1.0f) * 0x1.0p-24f;
        float u2 = static_cast<float>(w[1] >> 8) * 0x1.0p-24f;
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(static_cast<float>(two_pi) * u2);
    });
}

void normal_d(const RngState& s, double* out, std::int64_t n)
{
    fill<4>(s, out, n, [](const std::uint32_t* w, std::int64_t) {
        std::uint64_t a = (std::uint64_t{w[0]} << 21) ^ (w[1] >> 11), b = (std::uint64_t{w[2]} << 21) ^ (w[3] >> 11);
        double u1 = (static_cast<double>(a) + 1.0) * 0x1.0p-53, u2 = static_cast<double>(b) * 0x1.0p-53;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
    });
}

// keep when the 32-bit word >= p * 2^32: exact probability up to 2^-32
template <class T>
void dropout_mask(const RngState& s, T* d, std::int64_t n, std::uint32_t threshold, T scale)
{
    fill<1>(s, d, n, [=](const std::uint32_t* w, std::int64_t) { return w[0] >= threshold ? scale : T(0); });
}

// Bits w[j] >= threshold of count words (count <= 1024) into keep[j / 64], bit j % 64.
inline void keep_bits(const std::uint32_t* w, std::int64_t count, std::uint32_t threshold, std::uint64_t* keep)
{
    std::int64_t j = 0;
#if defined(__AVX512F__)
    const __m512i t = _mm512_set1_epi32(static_cast<int>(threshold));
    for (; j + 64 <= count; j += 64) {
        std::uint64_t bits = 0;
        for (int q = 0; q < 4; ++q) {
            const __m512i v = _mm512_load_si512(w + j + 16 * q);
            bits |= std::uint64_t(_mm512_cmpge_epu32_mask(v, t)) << (16 * q);
        }
        keep[j / 64] = bits;
    }
#elif defined(__AVX2__)
    // unsigned >= as signed > after flipping the sign bits: w >= t  <=>  (w ^ s) > ((t - 1) ^ s), t > 0
    const __m256i sign = _mm256_set1_epi32(std::numeric_limits<std::int32_t>::min());
    const __m256i t1 = _mm256_xor_si256(_mm256_set1_epi32(static_cast<int>(threshold - 1)), sign);
    if (threshold > 0)
        for (; j + 64 <= count; j += 64) {
            std::uint64_t bits = 0;
            for (int q = 0; q < 8; ++q) {
                const __m256i v = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(w + j + 8 * q)), sign);
                const int m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, t1)));
                bits |= std::uint64_t(static_cast<unsigned>(m)) << (8 * q);
            }
            keep[j / 64] = bits;
        }
#endif
    for (; j < count; j += 64) {
        std::uint64_t bits = 0;
        const std::int64_t m = std::min<std::int64_t>(64, count - j);
        for (std::int64_t b = 0; b < m; ++b) bits |= std::uint64_t(w[j + b] >= threshold) << b;
        keep[j / 64] = bits;
    }
}

// x times the multiplier, so NaN and inf in x propagate as x * 0 does (PyTorch's x * mask)
template <class T>
void dropout_apply(const RngState& s, const T* xs, T* y, std::int64_t n, std::uint32_t threshold, T scale, bool all,
                   std::uint64_t* keep)
{
    for_word_chunks<1>(s, n, [&](const std::uint32_t* w, std::int64_t first, std::int64_t count) {
        const T* x = xs + first;
        T* o = y + first;
        // locals, not the captured references: stores to o cannot alias them, so this vectorises
        const T sc = all ? T(0) : scale;
        const std::uint32_t th = threshold;
        for (std::int64_t k = 0; k < count; ++k) o[k] = x[k] * (w[k] < th ? T(0) : sc);
        if (keep == nullptr) return;
        if (all)
            std::fill_n(keep + first / 64, (count + 63) / 64, std::uint64_t(0));
        else
            keep_bits(w, count, threshold, keep + first / 64);
    });
}

/// body(bits, i0, m) for each 64-element group of n elements (m < 64 in the last), threaded:
/// the groups of a saved bit mask (keep_bits, positive_bits).
template <class F>
void for_bit_words(const std::uint64_t* words_of, std::int64_t n, F body)
{
    const std::int64_t words = (n + 63) / 64;
    spool::detail::parallel_blocks(words, detail::threads_for(n), 1, [&](std::int64_t w0, std::int64_t w1) {
        for (std::int64_t wi = w0; wi < w1; ++wi) body(words_of[wi], wi * 64, std::min<std::int64_t>(64, n - wi * 64));
    });
}

// y = x * (kept ? scale : 0) from the bits dropout_apply stored
template <class T>
void dropout_apply_bits(const std::uint64_t* keep, const T* xs, T* y, std::int64_t n, T scale)
{
    for_bit_words(keep, n, [&](std::uint64_t bits, std::int64_t i0, std::int64_t m) {
        const T* x = xs + i0;
        T* o = y + i0;
#if defined(__AVX512F__)
        if (m == 64) {
            if constexpr (std::is_same_v<T, float>) {
                const __m512 sc = _mm512_set1_ps(scale);
                for (int q = 0; q < 4; ++q) {
                    const __m512 mult = _mm512_maskz_mov_ps(__mmask16(bits >> (16 * q)), sc);
                    _mm512_storeu_ps(o + 16 * q, _mm512_mul_ps(_mm512_loadu_ps(x + 16 * q), mult));
                }
            } else {
                const __m512d sc = _mm512_set1_pd(scale);
                for (int q = 0; q < 8; ++q) {
                    const __m512d mult = _mm512_maskz_mov_pd(__mmask8(bits >> (8 * q)), sc);
                    _mm512_storeu_pd(o + 8 * q, _mm512_mul_pd(_mm512_loadu_pd(x + 8 * q), mult));
                }
            }
            return;
        }
#endif
        for (std::int64_t b = 0; b < m; ++b) o[b] = x[b] * ((bits >> b) & 1 ? scale : T(0));
    });
}

// Bits x[j] > 0 of count values (count <= 1024, from a multiple of 64) into pos[j / 64], bit j % 64.
template <class T>
void positive_bits(const T* x, std::int64_t count, std::uint64_t* pos)
{
    std::int64_t j = 0;
#if defined(__AVX512F__)
    for (; j + 64 <= count; j += 64) {
        std::uint64_t bits = 0;
        if constexpr (std::is_same_v<T, float>)
            for (int q = 0; q < 4; ++q)
                bits |= std::uint64_t(_mm512_cmp_ps_mask(_mm512_loadu_ps(x + j + 16 * q), _mm512_setzero_ps(), _CMP_GT_OQ))
                        << (16 * q);
        else
            for (int q = 0; q < 8; ++q)
                bits |= std::uint64_t(_mm512_cmp_pd_mask(_mm512_loadu_pd(x + j + 8 * q), _mm512_setzero_pd(), _CMP_GT_OQ))
                        << (8 * q);
        pos[j / 64] = bits;
    }
#endif
    for (; j < count; j += 64) {
        std::uint64_t bits = 0;
        const std::int64_t m = std::min<std::int64_t>(64, count - j);
        for (std::int64_t b = 0; b < m; ++b) bits |= std::uint64_t(x[j + b] > T(0)) << b;
        pos[j / 64] = bits;
    }
}

// relu(x) * multiplier: max keeps NaN (x < 0 is false for NaN), as relu then dropout does
template <class T>
void relu_dropout(const RngState& s, const T* xs, T* y, std::int64_t n, std::uint32_t threshold, T scale,
                  std::uint64_t* pos)
{
    for_word_chunks<1>(s, n, [&](const std::uint32_t* w, std::int64_t first, std::int64_t count) {
        const T* x = xs + first;
        T* o = y + first;
        const T sc = scale;  // locals: stores to o cannot alias them, so this vectorises
        const std::uint32_t th = threshold;
        for (std::int64_t k = 0; k < count; ++k) o[k] = (x[k] < T(0) ? T(0) : x[k]) * (w[k] < th ? T(0) : sc);
        positive_bits(x, count, pos + first / 64);
    });
}

// dx = x > 0 ? dy * (kept ? scale : 0) : 0, kept read from y > 0 (x > 0 and kept <=> y > 0)
template <class T>
void relu_dropout_backward(const std::uint64_t* pos, const T* ys, const T* dys, T* dxs, std::int64_t n, T scale)
{
    for_bit_words(pos, n, [&](std::uint64_t bits, std::int64_t i0, std::int64_t m) {
        const T* y = ys + i0;
        const T* dy = dys + i0;
        T* dx = dxs + i0;
        const T sc = scale;
        for (std::int64_t b = 0; b < m; ++b) {
            const T g = dy[b] * (y[b] > T(0) ? sc : T(0));
            dx[b] = (bits >> b) & 1 ? g : T(0);
        }
    });
}

// named by the instruction set xsimd compiled this file for, as the GEMM's table
const KernelTable kTable{
    xsimd::default_arch::name(),
    {unary<float>, unary_backward<float>, binary_row<float>, layer_norm<float>, layer_norm_backward<float>,
     dropout_mask<float>, dropout_apply<float>, dropout_apply_bits<float>, relu_dropout<float>, relu_dropout_backward<float>, uniform_f, normal_f, row_max_nan<float>, exp_shift_sum<float>,
     scale_row<float>, scores_few_rows<float>, weighted_sum_few_rows<float>, sum<float>, softmax<float>,
     softmax_backward<float>},
    {unary<double>, unary_backward<double>, binary_row<double>, layer_norm<double>, layer_norm_backward<double>,
     dropout_mask<double>, dropout_apply<double>, dropout_apply_bits<double>, relu_dropout<double>, relu_dropout_backward<double>, uniform_d, normal_d, row_max_nan<double>, exp_shift_sum<double>,
     scale_row<double>, scores_few_rows<double>, weighted_sum_few_rows<double>, sum<double>, softmax<double>,
     softmax_backward<double>},
    philox_blocks,
    philox4x32,
};

}  // namespace

const KernelTable& kernel_table() { return kTable; }

}  // namespace spool::kernels::SPOOL_ARCH
