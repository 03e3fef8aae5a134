// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Block b of a draw is philox(counter = offset + b, key = seed): independent of thread
// count, so a draw splits across threads and gives the same numbers on any machine. This file
// holds the generator's state and the Values; the blocks (in explicit SIMD) and the loops that
// turn them into numbers run in the chosen instruction set's compilation of
// tensor/kernels_arch.cpp.
#include "tensor/random.hpp"

#include <algorithm>
#include <mutex>

#include "tensor/kernels.hpp"
#include "tensor/kernels_arch.hpp"
#include "tensor/simd.hpp"

namespace spool {

namespace {
std::mutex g_mu;
RngState g_state{0x5eed, 0};
}  // namespace

void manual_seed(std::uint64_t seed)
{
    std::lock_guard<std::mutex> lock(g_mu);
    g_state = {seed, 0};
}

RngState get_rng_state()
{
    std::lock_guard<std::mutex> lock(g_mu);
    return g_state;
}

void set_rng_state(const RngState& s)
{
    std::lock_guard<std::mutex> lock(g_mu);
    g_state = s;
}

namespace rng {

RngState reserve(std::uint64_t n_blocks)
{
    std::lock_guard<std::mutex> lock(g_mu);
    RngState s = g_state;
    g_state.offset += n_blocks;
    return s;
}

void philox4x32(std::uint32_t ctr[4], const std::uint32_t key[2]) { kernels::kernel_table().philox4x32(ctr, key); }

void words(const RngState& s, std::uint64_t first, std::uint32_t* out, std::int64_t n)
{
    constexpr std::int64_t chunk_blocks = 64;
    alignas(64) std::uint32_t buf[4 * chunk_blocks];
    const auto blocks = kernels::kernel_table().philox_blocks;
    for (std::int64_t done = 0; done < n;) {
        const std::uint64_t w = first + static_cast<std::uint64_t>(done);
        const std::int64_t lane = static_cast<std::int64_t>(w % 4);
        const std::int64_t nb = std::min(chunk_blocks, (lane + (n - done) + 3) / 4);
        blocks(s, w / 4, nb, buf);
        const std::int64_t take = std::min(nb * 4 - lane, n - done);
        std::copy(buf + lane, buf + lane + take, out + done);
        done += take;
    }
}

std::uint32_t keep_threshold(double p)
{
    return static_cast<std::uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
}

void uniform(const RngState& s, float* out, std::int64_t n) { kernels::typed_kernels<float>().uniform(s, out, n); }
void uniform(const RngState& s, double* out, std::int64_t n) { kernels::typed_kernels<double>().uniform(s, out, n); }
void normal(const RngState& s, float* out, std::int64_t n) { kernels::typed_kernels<float>().normal(s, out, n); }
void normal(const RngState& s, double* out, std::int64_t n) { kernels::typed_kernels<double>().normal(s, out, n); }

}  // namespace rng

namespace {
// dropout's keep-multiplier (0 when everything is dropped)
template <class T>
T keep_scale(double p) { return p == 1 ? T(0) : static_cast<T>(1.0 / (1.0 - p)); }
}  // namespace

Value kernels::dropout_mask(const Shape& shape, DType dt, double p)
{
    SPOOL_CHECK(p >= 0 && p <= 1, ValueError, "dropout: probability has to be between 0 and 1; got ", p);
    return kernels::detail::dispatch_float(dt, "dropout", [&]<class T>() {
        Value m = Value::empty(shape, dt);
        std::int64_t n = m.numel();
        T* d = m.data<T>();
        if (p == 1) {
            std::fill_n(d, n, T(0));
            return m;
        }
        RngState s = dropout_reserve(n);
        kernels::typed_kernels<T>().dropout_mask(s, d, n, rng::keep_threshold(p), keep_scale<T>(p));
        return m;
    });
}

RngState kernels::dropout_reserve(std::int64_t n) { return rng::reserve(static_cast<std::uint64_t>((n + 3) / 4)); }

Value kernels::dropout_apply(const Value& x, double p, const RngState& s, Value* keep)
{
    SPOOL_CHECK(p >= 0 && p <= 1, ValueError, "dropout: probability has to be between 0 and 1; got ", p);
    return kernels::detail::dispatch_float(x.dtype(), "dropout", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        const std::uint32_t threshold = p == 1 ? 0 : rng::keep_threshold(p);
        std::uint64_t* bits = nullptr;
        if (keep != nullptr) {
            *keep = Value::empty(Shape{(x.numel() + 63) / 64}, i64);
            bits = reinterpret_cast<std::uint64_t*>(keep->data<std::int64_t>());
        }
        kernels::typed_kernels<T>().dropout_apply(s, x.data<T>(), y.data<T>(), x.numel(), threshold, keep_scale<T>(p),
                                                  p == 1, bits);
        return y;
    });
}

Value kernels::dropout_apply_bits(const Value& keep, const Value& x, double p)
{
    SPOOL_CHECK(keep.dtype() == i64 && keep.numel() == (x.numel() + 63) / 64, ValueError,
                "dropout: a mask of ", keep.numel(), " words does not fit ", x.numel(), " elements");
    return kernels::detail::dispatch_float(x.dtype(), "dropout", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        kernels::typed_kernels<T>().dropout_apply_bits(reinterpret_cast<const std::uint64_t*>(keep.data<std::int64_t>()),
                                                       x.data<T>(), y.data<T>(), x.numel(), keep_scale<T>(p));
        return y;
    });
}

Value kernels::relu_dropout(const Value& x, double p, const RngState& s, Value* pos)
{
    SPOOL_CHECK(p >= 0 && p < 1, ValueError, "relu_dropout: probability has to be in [0, 1); got ", p);
    return kernels::detail::dispatch_float(x.dtype(), "relu_dropout", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        *pos = Value::empty(Shape{(x.numel() + 63) / 64}, i64);
        kernels::typed_kernels<T>().relu_dropout(s, x.data<T>(), y.data<T>(), x.numel(), rng::keep_threshold(p),
                                                 keep_scale<T>(p),
                                                 reinterpret_cast<std::uint64_t*>(pos->data<std::int64_t>()));
        return y;
    });
}

Value kernels::relu_dropout_backward(const Value& pos, const Value& y, const Value& dy, double p)
{
    SPOOL_CHECK(pos.dtype() == i64 && pos.numel() == (y.numel() + 63) / 64 && dy.numel() == y.numel(), ValueError,
                "relu_dropout: backward got ", pos.numel(), " mask words, ", y.numel(), " outputs and ", dy.numel(),
                " gradients");
    return kernels::detail::dispatch_float(y.dtype(), "relu_dropout", [&]<class T>() {
        Value dx = Value::empty(y.shape(), y.dtype());
        kernels::typed_kernels<T>().relu_dropout_backward(reinterpret_cast<const std::uint64_t*>(pos.data<std::int64_t>()),
                                                          y.data<T>(), dy.data<T>(), dx.data<T>(), y.numel(),
                                                          keep_scale<T>(p));
        return dx;
    });
}

}  // namespace spool
