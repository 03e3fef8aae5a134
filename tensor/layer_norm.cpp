// Layer norm over contiguous rows: one pass for the moments (mean, then centred sum of
// squares, for accuracy), one for the output; backward in two passes per row.
#include <cmath>

#include "tensor/nn_kernels.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

Value layer_norm(const Value& x, std::int64_t D, const Value& weight, const Value& bias, double eps,
                 LayerNormSaved* saved)
{
    SPOOL_CHECK(D > 0 && x.numel() % D == 0, ShapeError, "layer_norm: input ", to_string(x.shape()),
                " does not end in a normalized size of ", D);
    return dispatch_float(x.dtype(), "layer_norm", [&]<class T>() {
        const std::int64_t N = x.numel() / D;
        Value y = Value::empty(x.shape(), x.dtype());
        Value mean = Value::empty(Shape{N}, x.dtype()), rstd = Value::empty(Shape{N}, x.dtype());
        const T* xs = x.data<T>();
        const T* w = weight.defined() ? weight.data<T>() : nullptr;
        const T* b = bias.defined() ? bias.data<T>() : nullptr;
        T* ys = y.data<T>();
        T* ms = mean.data<T>();
        T* rs = rstd.data<T>();
        constexpr std::int64_t W = batch<T>::size;
        int nt = threads_for(N * D);
        spool::detail::parallel_for(N, nt, [&](std::int64_t n) {
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
        if (saved) *saved = {mean, rstd};
        return y;
    });
}

// xhat = (x - mean) rstd, g = dy * weight
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)); dweight = Σ_rows dy xhat; dbias = Σ_rows dy
Value layer_norm_backward(const Value& dy, const Value& x, std::int64_t D, const Value& weight,
                          const LayerNormSaved& saved, Value* dweight, Value* dbias)
{
    return dispatch_float(x.dtype(), "layer_norm_backward", [&]<class T>() {
        const std::int64_t N = x.numel() / D;
        Value dx = Value::empty(x.shape(), x.dtype());
        const T* g = dy.data<T>();
        const T* xs = x.data<T>();
        const T* w = weight.defined() ? weight.data<T>() : nullptr;
        const T* ms = saved.mean.data<T>();
        const T* rs = saved.rstd.data<T>();
        T* d = dx.data<T>();
        int nt = threads_for(N * D);
        // dweight / dbias are summed over rows in fixed blocks (their number depends on N
        // only), then the blocks are added in order: the same bits for every thread count
        const std::int64_t nb = std::min<std::int64_t>(N, 64);
        std::vector<T> part_w(dweight ? nb * D : 0, T(0)), part_b(dbias ? nb * D : 0, T(0));
        spool::detail::parallel_for(nb, nt, [&](std::int64_t blk) {
            T* pw = dweight ? part_w.data() + blk * D : nullptr;
            T* pb = dbias ? part_b.data() + blk * D : nullptr;
            for (std::int64_t n = blk * N / nb; n < (blk + 1) * N / nb; ++n) {
                const T* gr = g + n * D;
                const T* xr = xs + n * D;
                T* dr = d + n * D;
                const T m = ms[n], r = rs[n];
                T sg = 0, sgx = 0;
                for (std::int64_t i = 0; i < D; ++i) {
                    T xh = (xr[i] - m) * r;
                    T gi = w ? gr[i] * w[i] : gr[i];
                    sg += gi;
                    sgx += gi * xh;
                    if (pw) pw[i] += gr[i] * xh;
                    if (pb) pb[i] += gr[i];
                }
                const T a = sg / T(D), c = sgx / T(D);
                for (std::int64_t i = 0; i < D; ++i) {
                    T xh = (xr[i] - m) * r;
                    T gi = w ? gr[i] * w[i] : gr[i];
                    dr[i] = r * (gi - a - xh * c);
                }
            }
        });
        auto reduce = [&](std::vector<T>& part, Value* out) {
            if (!out) return;
            *out = Value::zeros(Shape{D}, x.dtype());
            T* o = out->data<T>();
            for (std::int64_t blk = 0; blk < nb; ++blk)
                for (std::int64_t i = 0; i < D; ++i) o[i] += part[blk * D + i];
        };
        reduce(part_w, dweight);
        reduce(part_b, dbias);
        return dx;
    });
}

}  // namespace spool::kernels
