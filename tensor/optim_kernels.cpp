// Fused optimizer updates and gradient utilities (see optim_kernels.hpp). Each update is
// one pass: a SIMD body over full batches, and the last partial batch run through padded
// buffers by the same code, so every element gets the same arithmetic wherever a thread
// boundary falls — results are bit-identical for any thread count. Reductions sum fixed
// blocks in a fixed order for the same reason. Scalars are computed in double and cast
// to the tensor's dtype, as ATen does for Python-float arguments.
#include "tensor/optim_kernels.hpp"
#include "tensor/parallel.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {

// ---- multi-tensor split ----------------------------------------------------------------

constexpr std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }

/// Calls body(k, begin, end) so that [0, sizes[k]) is covered for every k, the total
/// length split evenly across threads in one parallel region. Each tensor starts on a
/// multiple of `align` elements of the virtual concatenation and chunks are multiples of
/// it, so a range starts on a multiple of align within its tensor (no shared cache line
/// between threads when align covers 64 bytes).
template <class F>
void for_slices(const std::vector<std::int64_t>& sizes, std::int64_t align, F&& body)
{
    std::int64_t total = 0;
    for (auto n : sizes) total += round_up(n, align);
    spool::detail::parallel_blocks(total, threads_for(total), align, [&](std::int64_t gb, std::int64_t ge) {
        std::int64_t off = 0;
        for (std::size_t k = 0; k < sizes.size() && off < ge; ++k) {
            const std::int64_t padded = round_up(sizes[k], align);
            const std::int64_t b = std::max(gb, off) - off, e = std::min(std::min(ge, off + padded) - off, sizes[k]);
            if (b < e) body(k, b, e);
            off += padded;
        }
    });
}

/// 64 bytes of float32: a multiple of every batch width, and a cache line.
constexpr std::int64_t slice_align = 16;

/// Up to five arrays of one tensor, shifted to a range start.
template <class T>
struct Ptrs {
    T* p[5];
    Ptrs at(std::int64_t i) const
    {
        Ptrs r;
        for (int k = 0; k < 5; ++k) r.p[k] = p[k] ? p[k] + i : nullptr;
        return r;
    }
};

/// kernel(ptrs, n) handles full batches only; the partial last batch goes through padded
/// aligned buffers with the same kernel. `writes` marks the arrays copied back.
template <class T, class K>
void with_tail(const Ptrs<T>& a, std::int64_t n, const bool (&writes)[5], K kernel)
{
    constexpr std::int64_t W = batch<T>::size;
    const std::int64_t nb = n / W * W;
    if (nb > 0) kernel(a, nb);
    if (nb == n) return;
    alignas(64) T buf[5][W];
    Ptrs<T> t;
    for (int k = 0; k < 5; ++k) {
        t.p[k] = nullptr;
        if (!a.p[k]) continue;
        std::fill(buf[k], buf[k] + W, T(0));
        std::copy(a.p[k] + nb, a.p[k] + n, buf[k]);
        t.p[k] = buf[k];
    }
    kernel(t, W);
    for (int k = 0; k < 5; ++k)
        if (a.p[k] && writes[k]) std::copy(buf[k], buf[k] + (n - nb), a.p[k] + nb);
}

void check_float(const Value* v, const char* op, const char* what)
{
    SPOOL_CHECK(v && v->defined(), ValueError, op, ": ", what, " is undefined");
    SPOOL_CHECK(is_floating(v->dtype()), TypeError, op, ": ", what, " must be float32 or float64; got ",
                dtype_name(v->dtype()));
}

/// other must be defined with param's shape and dtype (moment buffers, gradients).
void check_like(const Value& param, const Value* other, const char* op, const char* what)
{
    SPOOL_CHECK(other && other->defined(), ValueError, op, ": ", what, " is undefined");
    SPOOL_CHECK(other->shape() == param.shape(), ShapeError, op, ": ", what, " has shape ", to_string(other->shape()),
                " but the parameter has shape ", to_string(param.shape()));
    SPOOL_CHECK(other->dtype() == param.dtype(), TypeError, op, ": ", what, " is ", dtype_name(other->dtype()),
                " but the parameter is ", dtype_name(param.dtype()));
}

// ---- SGD -----------------------------------------------------------------------------------

// p = param, g = grad, b = momentum buffer (array 2; nullptr without momentum)
template <class T>
void sgd_kernel(const Ptrs<T>& a, std::int64_t n, const SgdSlot& s)
{
    using B = batch<T>;
    constexpr std::int64_t W = B::size;
    const B sign(T(s.maximize ? -1 : 1)), wd(static_cast<T>(s.weight_decay)), mom(static_cast<T>(s.momentum)),
        damp1(static_cast<T>(1 - s.dampening)), neg_lr(static_cast<T>(-s.lr));
    const bool decay = s.weight_decay != 0, nesterov = s.nesterov, init = s.init_buffer;
    T* p = a.p[0];
    const T* g = a.p[1];
    T* buf = a.p[2];
    for (std::int64_t i = 0; i < n; i += W) {
        B pv = B::load_unaligned(p + i);
        B d = B::load_unaligned(g + i) * sign;
        if (decay) d = xsimd::fma(pv, wd, d);  // d_p.add(param, alpha=weight_decay)
        if (buf) {
            B bv = init ? d : xsimd::fma(d, damp1, B::load_unaligned(buf + i) * mom);
            bv.store_unaligned(buf + i);
            d = nesterov ? xsimd::fma(bv, mom, d) : bv;
        }
        xsimd::fma(d, neg_lr, pv).store_unaligned(p + i);  // param.add_(d_p, alpha=-lr)
    }
}

// ---- Adam / AdamW --------------------------------------------------------------------------

// p = param, g = grad, m = exp_avg, v = exp_avg_sq, x = max_exp_avg_sq (arrays 0..4).
// Scalars as torch.optim computes them (Python floats), then cast to T.
struct AdamScalars {
    double sign, decay, wd, beta1, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
};

AdamScalars adam_scalars(const AdamSlot& s)
{
    const double t = static_cast<double>(s.step);
    const double bc1 = 1 - std::pow(s.beta1, t), bc2 = 1 - std::pow(s.beta2, t);
    return {.sign = s.maximize ? -1.0 : 1.0,
            .decay = s.decoupled ? 1 - s.lr * s.weight_decay : 1.0,
            .wd = s.decoupled ? 0.0 : s.weight_decay,
            .beta1 = s.beta1,
            .one_minus_beta1 = 1 - s.beta1,
            .beta2 = s.beta2,
            .one_minus_beta2 = 1 - s.beta2,
            .bc2_sqrt = std::sqrt(bc2),
            .eps = s.eps,
            .neg_step_size = -(s.lr / bc1)};
}

template <class T, bool Coupled, bool Amsgrad>
void adam_kernel(const Ptrs<T>& a, std::int64_t n, const AdamScalars& s)
{
    using B = batch<T>;
    constexpr std::int64_t W = B::size;
    auto c = [](double x) { return B(static_cast<T>(x)); };
    const B sign = c(s.sign), decay = c(s.decay), wd = c(s.wd), b1 = c(s.beta1), omb1 = c(s.one_minus_beta1),
            b2 = c(s.beta2), omb2 = c(s.one_minus_beta2), bc2 = c(s.bc2_sqrt), eps = c(s.eps),
            nss = c(s.neg_step_size);
    T *p = a.p[0], *m = a.p[2], *v = a.p[3], *x = a.p[4];
    const T* g = a.p[1];
    for (std::int64_t i = 0; i < n; i += W) {
        B pv = B::load_unaligned(p + i) * decay;  // AdamW: param.mul_(1 - lr * weight_decay); Adam: * 1
        B gv = B::load_unaligned(g + i) * sign;
        if constexpr (Coupled) gv = xsimd::fma(pv, wd, gv);                // grad.add(param, alpha=wd)
        B mv = xsimd::fma(gv, omb1, B::load_unaligned(m + i) * b1);       // m.mul_(β1).add_(g, alpha=1-β1)
        B vv = B::load_unaligned(v + i) * b2 + (omb2 * gv) * gv;          // v.mul_(β2).addcmul_(g, g, value=1-β2)
        mv.store_unaligned(m + i);
        vv.store_unaligned(v + i);
        if constexpr (Amsgrad) {
            vv = xsimd::max(B::load_unaligned(x + i), vv);
            vv.store_unaligned(x + i);
        }
        B denom = xsimd::sqrt(vv) / bc2 + eps;                             // (v.sqrt() / sqrt(bc2)).add_(eps)
        (pv + (nss * mv) / denom).store_unaligned(p + i);                  // param.addcdiv_(m, denom, value=-step_size)
    }
}

template <class T>
void adam_range(const Ptrs<T>& a, std::int64_t n, const AdamScalars& s, bool amsgrad)
{
    static constexpr bool writes[5] = {true, false, true, true, true};
    auto run = [&]<bool Coupled, bool Amsgrad>() {
        with_tail<T>(a, n, writes, [&](const Ptrs<T>& q, std::int64_t k) { adam_kernel<T, Coupled, Amsgrad>(q, k, s); });
    };
    const bool coupled = s.wd != 0;
    if (coupled && amsgrad) run.template operator()<true, true>();
    else if (coupled) run.template operator()<true, false>();
    else if (amsgrad) run.template operator()<false, true>();
    else run.template operator()<false, false>();
}

// ---- reductions over fixed blocks ----------------------------------------------------------

/// Elements per reduction block: partial results are per block, combined in block order,
/// so the result does not depend on the thread count.
constexpr std::int64_t reduce_block = 4096;

/// f(x, begin, end) -> double for every block of every defined x, in parallel.
template <class F>
std::vector<double> block_partials(std::span<const Value* const> xs, const char* op, F f)
{
    struct Block {
        const Value* x;
        std::int64_t b, e;
    };
    std::vector<Block> blocks;
    std::int64_t total = 0;
    for (const Value* x : xs) {
        if (!x || !x->defined()) continue;
        check_float(x, op, "tensor");
        for (std::int64_t b = 0; b < x->numel(); b += reduce_block)
            blocks.push_back({x, b, std::min(x->numel(), b + reduce_block)});
        total += x->numel();
    }
    std::vector<double> part(blocks.size());
    const int nt = threads_for(total);
    const auto nblocks = static_cast<std::int64_t>(blocks.size());
    spool::detail::parallel_for(nblocks, nt, [&](std::int64_t i) { part[i] = f(*blocks[i].x, blocks[i].b, blocks[i].e); });
    return part;
}

template <class T>
double block_sum_sq(const T* x, std::int64_t n)
{
    using B = batch<T>;
    constexpr std::int64_t W = B::size;
    B a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));  // four chains: latency and accuracy
    std::int64_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        B v0 = B::load_unaligned(x + i), v1 = B::load_unaligned(x + i + W), v2 = B::load_unaligned(x + i + 2 * W),
          v3 = B::load_unaligned(x + i + 3 * W);
        a0 = xsimd::fma(v0, v0, a0);
        a1 = xsimd::fma(v1, v1, a1);
        a2 = xsimd::fma(v2, v2, a2);
        a3 = xsimd::fma(v3, v3, a3);
    }
    for (; i + W <= n; i += W) {
        B v = B::load_unaligned(x + i);
        a0 = xsimd::fma(v, v, a0);
    }
    double s = static_cast<double>(xsimd::hadd((a0 + a1) + (a2 + a3)));
    for (; i < n; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    return s;
}

/// max |x| of a block; NaN when the block holds a NaN.
template <class T>
double block_max_abs(const T* x, std::int64_t n)
{
    using B = batch<T>;
    constexpr std::int64_t W = B::size;
    B acc(T(0)), nan(T(0));
    std::int64_t i = 0;
    for (; i + W <= n; i += W) {
        B a = xsimd::abs(B::load_unaligned(x + i));
        acc = xsimd::max(acc, a);
        nan += xsimd::select(xsimd::isnan(a), B(T(1)), B(T(0)));  // max() drops NaN on x86
    }
    double m = 0, bad = static_cast<double>(xsimd::hadd(nan));
    alignas(64) T lanes[W];
    acc.store_aligned(lanes);
    for (std::int64_t k = 0; k < W; ++k) m = std::max(m, static_cast<double>(lanes[k]));
    for (; i < n; ++i) {
        double a = std::abs(static_cast<double>(x[i]));
        if (std::isnan(a)) bad += 1;
        else m = std::max(m, a);
    }
    return bad > 0 ? std::numeric_limits<double>::quiet_NaN() : m;
}

/// 0 when every element is finite, NaN otherwise (x - x is NaN for NaN and ±Inf).
template <class T>
double block_nonfinite(const T* x, std::int64_t n)
{
    using B = batch<T>;
    constexpr std::int64_t W = B::size;
    B acc(T(0));
    std::int64_t i = 0;
    for (; i + W <= n; i += W) {
        B v = B::load_unaligned(x + i);
        acc += v - v;
    }
    T s = xsimd::hadd(acc);
    for (; i < n; ++i) s += x[i] - x[i];
    return static_cast<double>(s);
}

/// x = f(x) in place over all xs (f gets a batch<T>).
template <class F>
void map_inplace(std::span<Value* const> xs, const char* op, F f)
{
    std::vector<std::int64_t> sizes;
    std::vector<Value*> live;
    for (Value* x : xs) {
        if (!x || !x->defined()) continue;
        check_float(x, op, "tensor");
        live.push_back(x);
        sizes.push_back(x->numel());
    }
    for (Value* x : live) x->bump_version();
    static constexpr bool writes[5] = {true, false, false, false, false};
    for_slices(sizes, slice_align, [&](std::size_t k, std::int64_t b, std::int64_t e) {
        dispatch_float(live[k]->dtype(), op, [&]<class T>() {
            Ptrs<T> a{{live[k]->data<T>() + b, nullptr, nullptr, nullptr, nullptr}};
            with_tail<T>(a, e - b, writes, [&](const Ptrs<T>& q, std::int64_t n) {
                constexpr std::int64_t W = batch<T>::size;
                for (std::int64_t i = 0; i < n; i += W) f(batch<T>::load_unaligned(q.p[0] + i)).store_unaligned(q.p[0] + i);
            });
        });
    });
}

}  // namespace

// ---- public entry points -------------------------------------------------------------------

void sgd_step(std::span<const SgdSlot> slots)
{
    std::vector<std::int64_t> sizes;
    sizes.reserve(slots.size());
    for (const SgdSlot& s : slots) {
        check_float(s.param, "sgd_step", "parameter");
        check_like(*s.param, s.grad, "sgd_step", "gradient");
        if (s.momentum_buffer) check_like(*s.param, s.momentum_buffer, "sgd_step", "momentum buffer");
        sizes.push_back(s.param->numel());
    }
    for (const SgdSlot& s : slots) s.param->bump_version();  // backward then sees the step (version counter)
    static constexpr bool writes[5] = {true, false, true, false, false};
    for_slices(sizes, slice_align, [&](std::size_t k, std::int64_t b, std::int64_t e) {
        const SgdSlot& s = slots[k];
        dispatch_float(s.param->dtype(), "sgd_step", [&]<class T>() {
            Ptrs<T> a{{s.param->data<T>(), s.grad->data<T>(), s.momentum_buffer ? s.momentum_buffer->data<T>() : nullptr,
                       nullptr, nullptr}};
            with_tail<T>(a.at(b), e - b, writes, [&](const Ptrs<T>& q, std::int64_t n) { sgd_kernel<T>(q, n, s); });
        });
    });
}

void adam_step(std::span<const AdamSlot> slots)
{
    std::vector<std::int64_t> sizes;
    std::vector<AdamScalars> scalars;
    sizes.reserve(slots.size());
    scalars.reserve(slots.size());
    for (const AdamSlot& s : slots) {
        check_float(s.param, "adam_step", "parameter");
        check_like(*s.param, s.grad, "adam_step", "gradient");
        check_like(*s.param, s.exp_avg, "adam_step", "exp_avg");
        check_like(*s.param, s.exp_avg_sq, "adam_step", "exp_avg_sq");
        if (s.max_exp_avg_sq) check_like(*s.param, s.max_exp_avg_sq, "adam_step", "max_exp_avg_sq");
        SPOOL_CHECK(s.step >= 1, ValueError, "adam_step: step must be >= 1 (incremented before the update); got ", s.step);
        sizes.push_back(s.param->numel());
        scalars.push_back(adam_scalars(s));
    }
    for (const AdamSlot& s : slots) s.param->bump_version();  // backward then sees the step (version counter)
    for_slices(sizes, slice_align, [&](std::size_t k, std::int64_t b, std::int64_t e) {
        const AdamSlot& s = slots[k];
        dispatch_float(s.param->dtype(), "adam_step", [&]<class T>() {
            Ptrs<T> a{{s.param->data<T>(), s.grad->data<T>(), s.exp_avg->data<T>(), s.exp_avg_sq->data<T>(),
                       s.max_exp_avg_sq ? s.max_exp_avg_sq->data<T>() : nullptr}};
            adam_range<T>(a.at(b), e - b, scalars[k], s.max_exp_avg_sq != nullptr);
        });
    });
}

double sum_squares(std::span<const Value* const> xs)
{
    double s = 0;
    for (double p : block_partials(xs, "sum_squares", [](const Value& x, std::int64_t b, std::int64_t e) {
             return dispatch_float(x.dtype(), "sum_squares", [&]<class T>() { return block_sum_sq(x.data<T>() + b, e - b); });
         }))
        s += p;
    return s;
}

double sum_abs_pow(std::span<const Value* const> xs, double p)
{
    SPOOL_CHECK(p > 0 && std::isfinite(p), ValueError, "sum_abs_pow: p must be positive and finite; got ", p);
    double s = 0;
    for (double part : block_partials(xs, "sum_abs_pow", [p](const Value& x, std::int64_t b, std::int64_t e) {
             return dispatch_float(x.dtype(), "sum_abs_pow", [&]<class T>() {
                 const T* d = x.data<T>();
                 double acc = 0;
                 for (std::int64_t i = b; i < e; ++i) acc += std::pow(std::abs(static_cast<double>(d[i])), p);
                 return acc;
             });
         }))
        s += part;
    return s;
}

double max_abs(std::span<const Value* const> xs)
{
    double m = 0;
    for (double p : block_partials(xs, "max_abs", [](const Value& x, std::int64_t b, std::int64_t e) {
             return dispatch_float(x.dtype(), "max_abs", [&]<class T>() { return block_max_abs(x.data<T>() + b, e - b); });
         })) {
        if (std::isnan(p)) return p;
        m = std::max(m, p);
    }
    return m;
}

bool all_finite(std::span<const Value* const> xs)
{
    for (double p : block_partials(xs, "all_finite", [](const Value& x, std::int64_t b, std::int64_t e) {
             return dispatch_float(x.dtype(), "all_finite", [&]<class T>() { return block_nonfinite(x.data<T>() + b, e - b); });
         }))
        if (p != 0) return false;
    return true;
}

void scale_(std::span<Value* const> xs, double s)
{
    map_inplace(xs, "scale_", [s](auto v) {
        using B = decltype(v);
        return v * B(static_cast<typename B::value_type>(s));
    });
}

void clamp_(std::span<Value* const> xs, double lo, double hi)
{
    SPOOL_CHECK(!(lo > hi), ValueError, "clamp_: min must be <= max; got min ", lo, " and max ", hi);
    map_inplace(xs, "clamp_", [lo, hi](auto v) {
        using B = decltype(v);
        using T = typename B::value_type;
        const B l(static_cast<T>(lo)), h(static_cast<T>(hi));
        return xsimd::select(v < l, l, xsimd::select(v > h, h, v));  // comparisons are false for NaN: NaN stays
    });
}

}  // namespace spool::kernels
