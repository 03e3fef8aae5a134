// Layer norm over contiguous rows: one pass for the moments (mean, then centred sum of
// squares, for accuracy), one for the output; backward in two passes per row. The row loops
// run in the chosen instruction set's compilation (tensor/kernels_arch.cpp).
#include <cmath>

#include "tensor/kernels_arch.hpp"
#include "tensor/nn_kernels.hpp"
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
        typed_kernels<T>().layer_norm(xs, w, b, ys, ms, rs, N, D, eps);
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
        // dweight / dbias are summed over rows in fixed blocks (their number depends on N
        // only), then the blocks are added in order: the same bits for every thread count
        const std::int64_t nb = std::min<std::int64_t>(N, 64);
        std::vector<T> part_w(dweight ? nb * D : 0, T(0)), part_b(dbias ? nb * D : 0, T(0));
        typed_kernels<T>().layer_norm_backward(g, xs, w, ms, rs, d, dweight ? part_w.data() : nullptr,
                                               dbias ? part_b.data() : nullptr, N, D, nb);
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
