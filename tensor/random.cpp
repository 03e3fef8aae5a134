// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Block b of a draw is philox(counter = offset + b, key = seed): independent of thread
// count, so a draw splits across threads and gives the same numbers on any machine. Blocks
// are computed 16 (AVX-512) or 8 (AVX2) at a time in explicit SIMD, the rest one by one.
#include "tensor/random.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <mutex>

#include "tensor/kernels.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool {

namespace {
std::mutex g_mu;
RngState g_state{0x5eed, 0};

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

/// Blocks [first, first + count) of (seed, offset): out[4 * b + lane].
void blocks(const RngState& s, std::uint64_t first, std::int64_t count, std::uint32_t* out)
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

/// Fill n outputs, each from `per` consecutive uint32 words, chunked over threads.
/// out[i] = conv(words of output i, i). per is a template parameter: a runtime divisor in w / per cost an integer division per
/// output and kept the loop scalar.
template <int per, class T, class Conv>
void fill(const RngState& s, T* out, std::int64_t n, Conv conv)
{
    constexpr std::int64_t chunk_blocks = 256;
    std::int64_t words = n * per, nblocks = (words + 3) / 4;
    std::int64_t nchunks = (nblocks + chunk_blocks - 1) / chunk_blocks;
    int nt = kernels::detail::threads_for(n);
    spool::detail::parallel_for(nchunks, nt, [&](std::int64_t c) {
        alignas(64) std::uint32_t buf[4 * chunk_blocks];
        std::int64_t b0 = c * chunk_blocks, nbk = std::min(chunk_blocks, nblocks - b0);
        blocks(s, b0, nbk, buf);
        std::int64_t w0 = b0 * 4, w1 = std::min(words, w0 + nbk * 4);
        // outputs fully inside this chunk (per divides 4, so none straddles chunks)
        T* o = out + w0 / per;
        const std::int64_t count = (w1 - w0) / per;
        const Conv f = conv;  // a local copy: stores to o cannot alias its captures, so this vectorises
        const std::int64_t first = w0 / per;
        for (std::int64_t k = 0; k < count; ++k) o[k] = f(buf + k * per, first + k);
    });
}

constexpr double two_pi = 6.283185307179586476925;

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

void philox4x32(std::uint32_t ctr[4], const std::uint32_t key[2])
{
    std::uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; ++r) {
        round(ctr[0], ctr[1], ctr[2], ctr[3], k0, k1);
        k0 += W0, k1 += W1;
    }
}

void words(const RngState& s, std::uint64_t first, std::uint32_t* out, std::int64_t n)
{
    constexpr std::int64_t chunk_blocks = 64;
    alignas(64) std::uint32_t buf[4 * chunk_blocks];
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

// uniform float: top 24 bits -> [0, 1); double: 53 bits from two words
void uniform(const RngState& s, float* out, std::int64_t n)
{
    fill<1>(s, out, n, [](const std::uint32_t* w, std::int64_t) { return static_cast<float>(w[0] >> 8) * 0x1.0p-24f; });
}

void uniform(const RngState& s, double* out, std::int64_t n)
{
    fill<2>(s, out, n, [](const std::uint32_t* w, std::int64_t) {
        std::uint64_t v = (std::uint64_t{w[0]} << 21) ^ (w[1] >> 11);
        return static_cast<double>(v) * 0x1.0p-53;
    });
}

// Box-Muller on (u1, u2) with u1 in (0, 1] so log is finite; one normal per pair keeps
// every output a function of its own counter words.
void normal(const RngState& s, float* out, std::int64_t n)
{
    fill<2>(s, out, n, [](const std::uint32_t* w, std::int64_t) {
        float u1 = (static_cast<float>(w[0] >> 8) + 1.0f) * 0x1.0p-24f;
        float u2 = static_cast<float>(w[1] >> 8) * 0x1.0p-24f;
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(static_cast<float>(two_pi) * u2);
    });
}

void normal(const RngState& s, double* out, std::int64_t n)
{
    fill<4>(s, out, n, [](const std::uint32_t* w, std::int64_t) {
        std::uint64_t a = (std::uint64_t{w[0]} << 21) ^ (w[1] >> 11), b = (std::uint64_t{w[2]} << 21) ^ (w[3] >> 11);
        double u1 = (static_cast<double>(a) + 1.0) * 0x1.0p-53, u2 = static_cast<double>(b) * 0x1.0p-53;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);
    });
}

}  // namespace rng

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
        const T scale = static_cast<T>(1.0 / (1.0 - p));
        const std::uint32_t threshold = rng::keep_threshold(p);
        // keep when the 32-bit word >= p * 2^32: exact probability up to 2^-32
        fill<1>(s, d, n, [=](const std::uint32_t* w, std::int64_t) { return w[0] >= threshold ? scale : T(0); });
        return m;
    });
}

RngState kernels::dropout_reserve(std::int64_t n) { return rng::reserve(static_cast<std::uint64_t>((n + 3) / 4)); }

Value kernels::dropout_apply(const Value& x, double p, const RngState& s)
{
    SPOOL_CHECK(p >= 0 && p <= 1, ValueError, "dropout: probability has to be between 0 and 1; got ", p);
    return kernels::detail::dispatch_float(x.dtype(), "dropout", [&]<class T>() {
        Value y = Value::empty(x.shape(), x.dtype());
        const T* xs = x.data<T>();
        // x times the multiplier, so NaN and inf in x propagate as x * 0 does (PyTorch's x * mask)
        const T scale = p == 1 ? T(0) : static_cast<T>(1.0 / (1.0 - p));
        const std::uint32_t threshold = p == 1 ? 0 : rng::keep_threshold(p);
        const bool all = p == 1;
        fill<1>(s, y.data<T>(), x.numel(), [=](const std::uint32_t* w, std::int64_t i) {
            return xs[i] * (all || w[0] < threshold ? T(0) : scale);
        });
        return y;
    });
}

}  // namespace spool
