// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// Block b of a draw is philox(counter = offset + b, key = seed): independent of thread
// count, so a draw splits across threads and gives the same numbers on any machine. The
// inner loop is written over independent blocks so the compiler vectorises it.
#include "tensor/parallel.hpp"
#include "tensor/random.hpp"

#include <cmath>
#include <mutex>

#include "tensor/kernels.hpp"
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

/// Blocks [first, first + count) of (seed, offset): out[4 * b + lane].
void blocks(const RngState& s, std::uint64_t first, std::int64_t count, std::uint32_t* out)
{
    const std::uint32_t k0s = static_cast<std::uint32_t>(s.seed), k1s = static_cast<std::uint32_t>(s.seed >> 32);
    for (std::int64_t b = 0; b < count; ++b) {
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
template <class T, class Conv>
void fill(const RngState& s, T* out, std::int64_t n, int per, Conv conv)
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
        for (std::int64_t w = w0; w + per <= w1; w += per) out[w / per] = conv(buf + (w - w0));
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
    fill(s, out, n, 1, [](const std::uint32_t* w) { return static_cast<float>(w[0] >> 8) * 0x1.0p-24f; });
}

void uniform(const RngState& s, double* out, std::int64_t n)
{
    fill(s, out, n, 2, [](const std::uint32_t* w) {
        std::uint64_t v = (std::uint64_t{w[0]} << 21) ^ (w[1] >> 11);
        return static_cast<double>(v) * 0x1.0p-53;
    });
}

// Box-Muller on (u1, u2) with u1 in (0, 1] so log is finite; one normal per pair keeps
// every output a function of its own counter words.
void normal(const RngState& s, float* out, std::int64_t n)
{
    fill(s, out, n, 2, [](const std::uint32_t* w) {
        float u1 = (static_cast<float>(w[0] >> 8) + 1.0f) * 0x1.0p-24f;
        float u2 = static_cast<float>(w[1] >> 8) * 0x1.0p-24f;
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(static_cast<float>(two_pi) * u2);
    });
}

void normal(const RngState& s, double* out, std::int64_t n)
{
    fill(s, out, n, 4, [](const std::uint32_t* w) {
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
        RngState s = rng::reserve(static_cast<std::uint64_t>((n + 3) / 4));
        const T scale = static_cast<T>(1.0 / (1.0 - p));
        const std::uint32_t threshold = rng::keep_threshold(p);
        // keep when the 32-bit word >= p * 2^32: exact probability up to 2^-32
        fill(s, d, n, 1, [=](const std::uint32_t* w) { return w[0] >= threshold ? scale : T(0); });
        return m;
    });
}

}  // namespace spool
