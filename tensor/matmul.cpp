// matmul on Values: batch dims broadcast NumPy-style, the last two dims multiplied by
// spool's GEMM (tensor/gemm.cpp) with transpose flags instead of transposed copies.
#include <vector>

#include "tensor/gemm.hpp"
#include "tensor/kernels.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

Value matmul(const Value& a, const Value& b, bool ta, bool tb)
{
    check_same_float(a, b, "matmul");
    const Shape& as = a.shape();
    const Shape& bs = b.shape();
    SPOOL_CHECK(as.rank() >= 2 && bs.rank() >= 2, ShapeError, "matmul: kernel needs rank >= 2; got ", to_string(as),
                " and ", to_string(bs));
    int ra = as.rank(), rb = bs.rank();
    std::int64_t M = ta ? as[ra - 1] : as[ra - 2];
    std::int64_t K = ta ? as[ra - 2] : as[ra - 1];
    std::int64_t Kb = tb ? bs[rb - 1] : bs[rb - 2];
    std::int64_t N = tb ? bs[rb - 2] : bs[rb - 1];
    SPOOL_CHECK(K == Kb, ShapeError, "matmul: inner dimensions must match; got ", to_string(as), " and ", to_string(bs),
                ta || tb ? " (with transposes)" : "", " (", K, " vs ", Kb, ")");
    Shape abatch, bbatch;
    for (int i = 0; i < ra - 2; ++i) abatch.push_back(as[i]);
    for (int i = 0; i < rb - 2; ++i) bbatch.push_back(bs[i]);
    Shape batch = broadcast_shapes(abatch, bbatch, "matmul");
    Shape out = batch;
    out.push_back(M);
    out.push_back(N);
    std::int64_t nb = batch.numel();

    // offsets of each operand's matrix for every output batch index (broadcast dims repeat)
    std::vector<std::int64_t> offa(nb), offb(nb);
    {
        auto sa = abatch.strides(), sb = bbatch.strides();
        int r = batch.rank();
        std::int64_t idx[Shape::max_rank] = {};
        for (std::int64_t t = 0; t < nb; ++t) {
            std::int64_t oa = 0, ob = 0;
            for (int i = 0; i < r; ++i) {
                int ia = i - (r - abatch.rank()), ib = i - (r - bbatch.rank());
                if (ia >= 0 && abatch[ia] != 1) oa += idx[i] * sa[ia];
                if (ib >= 0 && bbatch[ib] != 1) ob += idx[i] * sb[ib];
            }
            offa[t] = oa * M * K;
            offb[t] = ob * K * N;
            for (int i = r - 1; i >= 0; --i) {
                if (++idx[i] < batch[i]) break;
                idx[i] = 0;
            }
        }
    }
    auto arithmetic = [&](const std::vector<std::int64_t>& off, std::int64_t& stride) {
        stride = nb > 1 ? off[1] - off[0] : 0;
        for (std::int64_t t = 1; t < nb; ++t)
            if (off[t] - off[t - 1] != stride) return false;
        return true;
    };
    std::int64_t stride_a = 0, stride_b = 0;
    bool simple = arithmetic(offa, stride_a) && arithmetic(offb, stride_b);

    return dispatch_float(a.dtype(), "matmul", [&]<class T>() {
        Value c = Value::empty(out, a.dtype());
        std::int64_t lda = ta ? M : K, ldb = tb ? K : N;
        if (simple) {
            gemm_batched<T>(nb, ta, tb, M, N, K, T(1), a.data<T>(), lda, stride_a, b.data<T>(), ldb, stride_b, T(0),
                            c.data<T>(), N, M * N);
        } else {
            for (std::int64_t t = 0; t < nb; ++t)
                gemm<T>(ta, tb, M, N, K, T(1), a.data<T>() + offa[t], lda, b.data<T>() + offb[t], ldb, T(0),
                        c.data<T>() + t * M * N, N);
        }
        return c;
    });
}

Value linear(const Value& x, const Value& w, const Value& bias)
{
    check_same_float(x, w, "linear");
    SPOOL_CHECK(x.rank() == 2 && w.rank() == 2 && x.shape()[1] == w.shape()[1], ShapeError,
                "linear: kernel needs x [N, in] and w [out, in]; got ", to_string(x.shape()), " and ",
                to_string(w.shape()));
    const std::int64_t N = x.shape()[0], in = x.shape()[1], out = w.shape()[0];
    SPOOL_CHECK(!bias.defined() || (bias.numel() == out && bias.dtype() == x.dtype()), ShapeError,
                "linear: kernel needs a bias of ", out, " values; got ", to_string(bias.shape()));
    return dispatch_float(x.dtype(), "linear", [&]<class T>() {
        Value y = Value::empty(Shape{N, out}, x.dtype());
        gemm<T>(false, true, N, out, in, T(1), x.data<T>(), in, w.data<T>(), in, T(0), y.data<T>(), out,
                bias.defined() ? bias.data<T>() : nullptr);
        return y;
    });
}

}  // namespace spool::kernels
