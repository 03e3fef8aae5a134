// spool's GEMM: C = alpha * op(A) * op(B) + beta * C, float and double, row-major (see gemm.hpp).
// BLIS-style: op(B) is packed into L2-sized blocks and op(A) into L1-sized row panels (packing
// applies the transposes), and a register-blocked xsimd FMA micro-kernel computes MR x NR tiles of
// C; spool's thread pool (tensor/parallel.hpp) splits C between threads. Small products skip packing and threads (a direct path).
//
// This file is compiled once per instruction set: SPOOL_ARCH names the namespace its code lives
// in (native: the build machine's, -march=native; x86_64, avx2, avx512: the portable build's three,
// chosen at run time by tensor/gemm.cpp). xsimd's default arch follows the compile flags, so the
// tile sizes and the kernel adapt. Everything here, helpers included, sits in that namespace, so no
// two compilations share a symbol (scripts/check_arch_symbols.py checks the objects).
// Not here: complex or mixed types.

#include "tensor/gemm_arch.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "tensor/errors.hpp"
#include "tensor/parallel.hpp"
#include "tensor/threads.hpp"
#include "tensor/xsimd_include.hpp"

#ifndef SPOOL_ARCH
#error "compile gemm_arch.cpp with -DSPOOL_ARCH=<namespace> (tensor/meson.build does)"
#endif

namespace spool::kernels::SPOOL_ARCH {

namespace {

// ---- tile and blocking parameters --------------------------------------------------------------

template <class T>
using Vec = xsimd::batch<T>;

// The register tile: MR rows of C by NR = NV vectors. Per k step the kernel loads NV vectors of
// packed B, broadcasts MR values of packed A, and issues MR*NV FMAs into accumulators that live
// in registers for the whole K loop.
//   AVX-512 (32 zmm): 14 x 2 = 28 accumulators + 2 B vectors + 1 broadcast (float 14x32).
//   AVX2    (16 ymm):  6 x 2 = 12 accumulators + 2 B + 1 broadcast              (float 6x16).
//   SSE2    (16 xmm):  4 x 2 =  8 accumulators; no FMA, so mul and add need temporaries.
template <class T>
struct Tile {
    static constexpr int L = int(Vec<T>::size);
    static constexpr int NV = 2;
    static constexpr int NR = NV * L;
    static constexpr int MR = sizeof(Vec<T>) == 64 ? 14 : sizeof(Vec<T>) == 32 ? 6 : 4;
};

// Cache blocking. The packed A micro-panel (MR x KC) stays in L1 while the kernel sweeps it across
// the NR-wide panels of the packed B block (KC x NC), which stays in L2; C is then walked along
// its rows, a stream the hardware prefetcher follows (the other loop order, down C's columns,
// ran ~5% slower at 2048^3 here).
//   KC = 256: the A micro-panel (14 x 256 floats = 14 KiB with AVX-512) and the B micro-panel
//             streaming past it (32 KiB) fit the 48 KiB L1d; each C tile is loaded and stored
//             K/KC times (KC 192 or 384 measured no better).
//   NC: the B block takes half of L2 (sysconf; 2 MiB here -> 1024 floats, 512 doubles). With the
//       block in L3 (NC 2048 here) the kernel ran ~8% slower: L3 cannot feed the B stream.
template <class T>
struct Blocking {
    static constexpr int64_t KC = 256;
    static int64_t nc()
    {
        static const int64_t value = [] {
            const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);  // 0 or -1 when unknown: assume 1 MiB
            const int64_t bytes = l2 > 0 ? int64_t(l2) : int64_t(1) << 20;
            const int64_t n = bytes / 2 / (KC * int64_t(sizeof(T))) / Tile<T>::NR * Tile<T>::NR;
            return std::clamp<int64_t>(n, 8 * Tile<T>::NR, 8192);
        }();
        return value;
    }
};

// Below this many multiply-adds (M*N*K) a product takes the direct path (operands read in place,
// no blocking): everything fits in L2, and packing A would cost more than it saves (measured: the
// direct path is ahead up to ~200^3 and level at 256^3).
constexpr int64_t kDirectFlops = int64_t(192) * 192 * 192;
// Each thread gets at least this many multiply-adds (~30 us): waking a pool thread costs
// about a microsecond while it spins and tens of microseconds once it sleeps.
constexpr int64_t kFlopsPerThread = int64_t(128) * 128 * 128;

template <class T>
constexpr T round_up(T x, T m) { return (x + m - 1) / m * m; }

// ---- thread-local packing buffers --------------------------------------------------------------

// Grow-only 64-byte aligned scratch, one pair per thread and element type, so a steady stream of
// GEMM calls never allocates. Sizes are bounded by the blocking (a B block, ~1 MiB, and an A
// panel); a failed allocation inside a parallel region is rethrown to the caller by the pool.
template <class T>
class Scratch {
public:
    T* get(std::size_t n)
    {
        if (n > cap_) {
            void* p = std::aligned_alloc(64, round_up<std::size_t>(n * sizeof(T), 64));
            if (!p) throw std::bad_alloc();
            data_.reset(static_cast<T*>(p));
            cap_ = n;
        }
        return data_.get();
    }

private:
    struct Free { void operator()(T* p) const { std::free(p); } };
    std::unique_ptr<T, Free> data_;
    std::size_t cap_ = 0;
};

template <class T>
struct PackBuffers {
    Scratch<T> a, b, c;  // c: the transposed result of gemm_swapped
};

template <class T>
PackBuffers<T>& pack_buffers()
{
    thread_local PackBuffers<T> buffers;
    return buffers;
}

// ---- operand views -----------------------------------------------------------------------------

// op(X) as a logical row-major matrix: element (r, c) is p[r*ld + c], or p[c*ld + r] when trans.
template <class T>
struct View {
    const T* p;
    int64_t ld;
    bool trans;
    const T* at(int64_t r, int64_t c) const { return trans ? p + c * ld + r : p + r * ld + c; }
};

// ---- micro-kernel ------------------------------------------------------------------------------

// xsimd 8.1 spells the AVX-512 fma as the generic x*y+z, which ISO C++ mode does not contract
// into one instruction; call the intrinsic there.
template <class T>
inline Vec<T> fmadd(const Vec<T>& x, const Vec<T>& y, const Vec<T>& z)
{
#if defined(__AVX512F__)
    if constexpr (sizeof(Vec<T>) == 64) {
        if constexpr (std::is_same_v<T, float>) return Vec<T>(_mm512_fmadd_ps(x, y, z));
        else return Vec<T>(_mm512_fmadd_pd(x, y, z));
    }
#endif
    return xsimd::fma(x, y, z);
}

// C[R, NR] = alpha * sum_k a(:, k) b(k, :) + beta * C (+ bias, NR values, when not null), with the
// sum held in R x NV registers. A element (i, k) is a[i + k*as] (packed panel, or A stored [K, M])
// or, with ARows, a[i*as + k] (A stored [M, K], read in place). Row k of B is the NR values at
// b + k*bs. beta == 0: C not read.
template <class T, int R, bool ARows>
void micro_kernel(int64_t kc, const T* __restrict a, int64_t as, const T* __restrict b, int64_t bs,
                  T* __restrict c, int64_t ldc, T alpha, T beta, const T* __restrict bias)
{
    using V = Vec<T>;
    constexpr int L = Tile<T>::L, NV = Tile<T>::NV;
    V acc[R][NV];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = V(T(0));
    // C's rows are far apart (ldc); fetch the tile now so it is in L1 when the K loop ends
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
        __builtin_prefetch(c + i * ldc, 1);
        __builtin_prefetch(c + i * ldc + NV * L - 1, 1);
    }

    for (int64_t k = 0; k < kc; ++k) {
        // B's rows stream from L2 (packed) or memory (read in place); fetching 4 rows ahead
        // measured 5-10% faster on T-small's shapes (Xeon, AVX-512), distances 8 and 16 less
        __builtin_prefetch(b + 4 * bs);
        __builtin_prefetch(b + 4 * bs + NV * L - 1);
        V bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = V::load_unaligned(b + v * L);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
            const V ai(ARows ? a[i * as] : a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) acc[i][v] = fmadd<T>(ai, bv[v], acc[i][v]);
        }
        a += ARows ? 1 : as;
        b += bs;
    }

    const V va(alpha);
    if (bias != nullptr) {  // the linear layer's epilogue: (alpha * sum + beta * C) + bias
        V bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) bv[v] = V::load_unaligned(bias + v * L);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                T* p = c + i * ldc + v * L;
                const V y = beta == T(0) ? acc[i][v] * va : fmadd<T>(V(beta), V::load_unaligned(p), acc[i][v] * va);
                (y + bv[v]).store_unaligned(p);
            }
    } else if (beta == T(0)) {
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) (acc[i][v] * va).store_unaligned(c + i * ldc + v * L);
    } else {
        const V vb(beta);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) {
                T* p = c + i * ldc + v * L;
                fmadd<T>(vb, V::load_unaligned(p), acc[i][v] * va).store_unaligned(p);
            }
    }
}

template <class T>
using KernelFn = void (*)(int64_t, const T*, int64_t, const T*, int64_t, T*, int64_t, T, T, const T*);

// One kernel per row count 1..MR, so edge tiles of fewer rows compute only their rows.
template <class T, bool ARows, std::size_t... R>
constexpr std::array<KernelFn<T>, sizeof...(R)> make_kernels(std::index_sequence<R...>)
{
    return {&micro_kernel<T, int(R) + 1, ARows>...};
}

template <class T, bool ARows>
constexpr auto kKernels = make_kernels<T, ARows>(std::make_index_sequence<Tile<T>::MR>{});

// One mr x nr tile of C (mr <= MR, nr <= NR). B rows always hold NR readable values (packed panels
// are zero-padded); a tile narrower than NR goes through a register-sized buffer, as xsimd 8.1
// has no masked stores. bias (nr values, or null) is added to every row.
template <class T, bool ARows>
inline void tile(int64_t mr, int64_t nr, int64_t kc, const T* a, int64_t as, const T* b, int64_t bs, T* c,
                 int64_t ldc, T alpha, T beta, const T* bias)
{
    constexpr int MR = Tile<T>::MR, NR = Tile<T>::NR;
    const KernelFn<T> kernel = kKernels<T, ARows>[mr - 1];
    if (nr == NR) {
        kernel(kc, a, as, b, bs, c, ldc, alpha, beta, bias);
        return;
    }
    alignas(64) T buf[MR * NR];
    kernel(kc, a, as, b, bs, buf, NR, alpha, T(0), nullptr);
    for (int64_t i = 0; i < mr; ++i) {
        T* ci = c + i * ldc;
        const T* bi = buf + i * NR;
        if (beta == T(0))
            for (int64_t j = 0; j < nr; ++j) ci[j] = bi[j];
        else
            for (int64_t j = 0; j < nr; ++j) ci[j] = bi[j] + beta * ci[j];
        if (bias != nullptr)
            for (int64_t j = 0; j < nr; ++j) ci[j] += bias[j];
    }
}

// ---- packing -----------------------------------------------------------------------------------

#if defined(__AVX512F__)
// In-register transposes of a 16 x 16 float / 8 x 8 double block: pair rows within 128-bit lanes
// (unpack, shuffle), then move 128-bit lanes between rows (shuffle_f32x4 / f64x2). xsimd 8.1 has
// no transpose, and its AVX-512 zip_lo/zip_hi stay within lanes, so this uses intrinsics.
inline void transpose16(__m512 (&r)[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2)
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    for (int i = 0; i < 16; i += 4) {
        r[i + 0] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44), r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44), r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
        for (int j = 0; j < 4; ++j)
            t[h + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0x88),
                  t[h + 4 + j] = _mm512_shuffle_f32x4(r[h + j], r[h + 4 + j], 0xDD);
    for (int j = 0; j < 8; ++j)
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88), r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
}

inline void transpose8(__m512d (&r)[8])
{
    __m512d t[8];
    for (int i = 0; i < 8; i += 2)
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]), t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    for (int h = 0; h < 8; h += 4)
        for (int j = 0; j < 2; ++j)
            r[h + j] = _mm512_shuffle_f64x2(t[h + j], t[h + 2 + j], 0x88),
                  r[h + 2 + j] = _mm512_shuffle_f64x2(t[h + j], t[h + 2 + j], 0xDD);
    for (int j = 0; j < 4; ++j)
        t[j] = _mm512_shuffle_f64x2(r[j], r[4 + j], 0x88), t[4 + j] = _mm512_shuffle_f64x2(r[j], r[4 + j], 0xDD);
    for (int j = 0; j < 8; ++j) r[j] = t[j];
}

// dst[c*ldd + r] = src[r*lds + c] for r < rows <= L, c < L (L = lanes), through registers.
template <class T>
inline void transpose_block(const T* src, int64_t lds, int64_t rows, T* dst, int64_t ldd)
{
    if constexpr (std::is_same_v<T, float>) {
        __m512 r[16];
        for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_loadu_ps(src + i * lds) : _mm512_setzero_ps();
        transpose16(r);
        const auto mask = __mmask16((1u << rows) - 1);
        for (int c = 0; c < 16; ++c) _mm512_mask_storeu_ps(dst + c * ldd, mask, r[c]);
    } else {
        __m512d r[8];
        for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm512_loadu_pd(src + i * lds) : _mm512_setzero_pd();
        transpose8(r);
        const auto mask = __mmask8((1u << rows) - 1);
        for (int c = 0; c < 8; ++c) _mm512_mask_storeu_pd(dst + c * ldd, mask, r[c]);
    }
}
#endif

// dst[c*ldd + r] = src[r*lds + c] for r < rows, c < kc: `rows` runs of kc contiguous values become
// kc runs of `rows` values (the transposing half of packing). AVX-512 moves L x L blocks through
// registers; the rest goes element by element.
template <class T>
void transpose_runs(const T* src, int64_t lds, int64_t rows, int64_t kc, T* __restrict dst, int64_t ldd)
{
    constexpr int64_t L = Tile<T>::L;
    for (int64_t r0 = 0; r0 < rows; r0 += L) {
        const int64_t rn = std::min(L, rows - r0);
        const T* s = src + r0 * lds;
        T* d = dst + r0;
        int64_t c = 0;
#if defined(__AVX512F__)
        if constexpr (sizeof(Vec<T>) == 64)
            for (; c + L <= kc; c += L) transpose_block(s + c, lds, rn, d + c * ldd, ldd);
#endif
        for (; c < kc; ++c)
            for (int64_t r = 0; r < rn; ++r) d[c * ldd + r] = s[r * lds + c];
    }
}

// op(B)[k0:k0+kc, j0:j0+nc] -> panels of NR columns, each kc x NR row-major (row k = NR values),
// the last panel zero-padded to NR columns.
template <class T>
void pack_b(const View<T>& B, int64_t k0, int64_t j0, int64_t kc, int64_t nc, T* __restrict dst)
{
    constexpr int NR = Tile<T>::NR, L = Tile<T>::L;
    for (int64_t jp = 0; jp < nc; jp += NR, dst += kc * NR) {
        const int64_t nr = std::min<int64_t>(NR, nc - jp);
        if (nr < NR)
            for (int64_t k = 0; k < kc; ++k) std::fill(dst + k * NR + nr, dst + (k + 1) * NR, T(0));
        if (B.trans) {
            // B stored [N, K]: column j of op(B) is a contiguous row of B
            transpose_runs(B.at(k0, j0 + jp), B.ld, nr, kc, dst, NR);
        } else if (nr == NR) {
            const T* src = B.at(k0, j0 + jp);
            for (int64_t k = 0; k < kc; ++k, src += B.ld)
#pragma GCC unroll 4
                for (int v = 0; v < NR / L; ++v)
                    Vec<T>::load_unaligned(src + v * L).store_aligned(dst + k * NR + v * L);
        } else {
            const T* src = B.at(k0, j0 + jp);
            for (int64_t k = 0; k < kc; ++k, src += B.ld) std::copy(src, src + nr, dst + k * NR);
        }
    }
}

// op(A)[i0:i0+mr, k0:k0+kc] (mr <= MR) -> one panel kc x MR (column k = MR values). A short panel
// is not padded: its kernel reads only its rows.
template <class T>
void pack_a(const View<T>& A, int64_t i0, int64_t k0, int64_t mr, int64_t kc, T* __restrict dst)
{
    constexpr int MR = Tile<T>::MR;
    if (!A.trans) return transpose_runs(A.at(i0, k0), A.ld, mr, kc, dst, MR);
    // A stored [K, M]: column k of op(A) is a contiguous run of row k of A. A full panel's runs
    // are copied with a memcpy of constant size, which the compiler turns into a few vector moves
    // (std::copy of a run-time length called memmove for every MR values: 2% of a training step;
    // an element loop was vectorised across k into scalar inserts, worse still).
    const T* src = A.at(i0, k0);
    if (mr == MR) {
        for (int64_t k = 0; k < kc; ++k, src += A.ld) {
            __builtin_prefetch(src + 16 * A.ld);  // rows a page apart: the hardware prefetcher does not follow
            std::memcpy(dst + k * MR, src, sizeof(T) * MR);
        }
        return;
    }
    for (int64_t k = 0; k < kc; ++k, src += A.ld) std::copy(src, src + mr, dst + k * MR);
}

// op(A)[i0:i0+m, k0:k0+kc] of a transposed A (stored [K, M]) -> ceil(m / MR) panels laid out
// as pack_a lays out one (MR * kc values each), one after another. Each row of A is visited
// once for all of them and read as one run of m values; packing panel by panel visited every
// row once per panel, a page apart each time (the weight gradient's dYᵀ, K = 2,048 rows).
template <class T>
void pack_a_trans_panels(const View<T>& A, int64_t i0, int64_t k0, int64_t m, int64_t kc, T* __restrict dst)
{
    constexpr int MR = Tile<T>::MR;
    const int64_t np = (m + MR - 1) / MR;
    const T* src = A.at(i0, k0);
    for (int64_t k = 0; k < kc; ++k, src += A.ld) {
        for (int64_t b = 0; b < m * int64_t(sizeof(T)); b += 64)
            __builtin_prefetch(reinterpret_cast<const char*>(src + 16 * A.ld) + b);
        for (int64_t r = 0; r < np; ++r) {
            T* d = dst + r * MR * kc + k * MR;
            const T* run = src + r * MR;
            if (m - r * MR >= MR)
                std::memcpy(d, run, sizeof(T) * MR);
            else
                std::copy(run, src + m, d);
        }
    }
}

// A transposed A is packed this many panels at a time (pack_a_trans_panels).
constexpr int64_t kPanelGroup = 4;

// ---- serial drivers ----------------------------------------------------------------------------

// The blocked algorithm on one thread: for each KC x NC block of op(B) (packed once, kept in L2),
// for each MR-row panel of op(A) (packed just before use, kept in L1), sweep the NR-wide B panels.
template <class T>
void gemm_packed(int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T beta, T* C,
                 int64_t ldc, const T* bias)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
    constexpr int64_t KC = Blocking<T>::KC;
    const int64_t NC = Blocking<T>::nc();
    PackBuffers<T>& buffers = pack_buffers<T>();
    T* bp = buffers.b.get(std::size_t(std::min(K, KC) * round_up(std::min(N, NC), NR)));
    T* ap = buffers.a.get(std::size_t(kPanelGroup * MR * KC));
    const int64_t group = A.trans ? kPanelGroup : 1;
    for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = std::min(NC, N - jc);
        for (int64_t pc = 0; pc < K; pc += KC) {
            const int64_t kc = std::min(KC, K - pc);
            const T beta_k = pc == 0 ? beta : T(1);  // later K blocks accumulate onto C
            const T* bias_k = pc == 0 && bias != nullptr ? bias + jc : nullptr;  // and the bias is in
            pack_b(B, pc, jc, kc, nc, bp);
            for (int64_t ig = 0; ig < M; ig += group * MR) {
                const int64_t mg = std::min(group * MR, M - ig);
                if (A.trans)
                    pack_a_trans_panels(A, ig, pc, mg, kc, ap);
                else
                    pack_a(A, ig, pc, mg, kc, ap);
                for (int64_t ir = ig; ir < ig + mg; ir += MR) {
                    const int64_t mr = std::min(MR, M - ir);
                    const T* a = ap + (ir - ig) * kc;
                    for (int64_t jr = 0; jr < nc; jr += NR)
                        tile<T, false>(mr, std::min(NR, nc - jr), kc, a, MR, bp + jr * kc, NR, C + ir * ldc + jc + jr,
                                       ldc, alpha, beta_k, bias_k ? bias_k + jr : nullptr);
                }
            }
        }
    }
}

// Small products: the kernel reads A where it lies (either layout) and B rows in place when B is
// not transposed; only a transposed B, or the last NR-narrow panel, is packed (one KC x NR panel).
template <class T>
void gemm_direct(int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T beta, T* C,
                 int64_t ldc, const T* bias = nullptr)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR, KC = Blocking<T>::KC;
    T* panel = pack_buffers<T>().b.get(std::size_t(KC * NR));
    for (int64_t pc = 0; pc < K; pc += KC) {
        const int64_t kc = std::min(KC, K - pc);
        const T beta_k = pc == 0 ? beta : T(1);
        const T* bias_k = pc == 0 ? bias : nullptr;
        for (int64_t jr = 0; jr < N; jr += NR) {
            const int64_t nr = std::min(NR, N - jr);
            const T* b = B.at(pc, jr);
            int64_t bs = B.ld;
            if (B.trans || nr < NR) {
                pack_b(B, pc, jr, kc, nr, panel);
                b = panel;
                bs = NR;
            }
            for (int64_t ir = 0; ir < M; ir += MR) {
                const int64_t mr = std::min(MR, M - ir);
                T* c = C + ir * ldc + jr;
                const T* bj = bias_k ? bias_k + jr : nullptr;
                if (A.trans)
                    tile<T, false>(mr, nr, kc, A.at(ir, pc), A.ld, b, bs, c, ldc, alpha, beta_k, bj);
                else
                    tile<T, true>(mr, nr, kc, A.at(ir, pc), A.ld, b, bs, c, ldc, alpha, beta_k, bj);
            }
        }
    }
}

// C = beta * C (K == 0 or alpha == 0); beta == 0 writes zeros without reading C.
template <class T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t ldc)
{
    for (int64_t i = 0; i < M; ++i) {
        T* c = C + i * ldc;
        if (beta == T(0))
            std::fill(c, c + N, T(0));
        else if (beta != T(1))
            for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
}

// C += bias on every row (the paths whose kernels do not add it: K == 0, the swapped product)
template <class T>
void add_bias_rows(int64_t M, int64_t N, const T* bias, T* C, int64_t ldc)
{
    for (int64_t i = 0; i < M; ++i) {
        T* c = C + i * ldc;
        for (int64_t j = 0; j < N; ++j) c[j] += bias[j];
    }
}

// A few rows times a transposed B (a linear layer on a decoding step: x[M, K] Wᵀ with M = 32 and W
// [N, K]): every path above packs all of W, N*K values, for only M uses of each. Computed as
// Cᵀ = op(B)ᵀ op(A)ᵀ instead, W is the in-place "A" operand and only x (M*K values) is packed;
// the [N, M] result is then transposed into C. Taken when B is transposed, beta is 0 and M is at
// most two register panels wide but N several times M (measured on decode's 32-row layers).
template <class T>
bool swapped_pays(int64_t M, int64_t N, const View<T>& B, T beta)
{
    return B.trans && beta == T(0) && M <= 2 * Tile<T>::NR && N >= 4 * M;
}

template <class T>
void gemm_swapped(int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T* C, int64_t ldc)
{
    T* ct = pack_buffers<T>().c.get(std::size_t(N * M));
    gemm_direct(N, M, K, alpha, View<T>{B.p, B.ld, false}, View<T>{A.p, A.ld, !A.trans}, T(0), ct, M);
    transpose_runs(ct, M, N, M, C, ldc);
}

// Products with a long K and a small C — the weight gradients, K = the batch's tokens — are
// summed as two halves of K added at the end, C = (op(A) op(B) over K's first half, with beta
// and the bias) + (the same over the second half), at every thread count: at 2 threads each
// thread then packs only its half of B and walks half of A's rows, where splitting C's rows
// had both pack all of B (in a T-small step at 2 threads, packing B and a transposed A took
// ~75% more time than at 1 thread). The halves are cut at a KC boundary. Taken only when C fits
// one column block (N <= NC); the add costs a pass over C (~1% of such a product at 1 thread).
template <class T>
bool ksplit_pays(int64_t M, int64_t N, int64_t K)
{
    constexpr int64_t KC = Blocking<T>::KC;
    return K >= 4 * KC && K >= 2 * std::max(M, N) && N <= Blocking<T>::nc() && M * N * K >= kDirectFlops;
}

template <class T>
int64_t ksplit_at(int64_t K)
{
    return round_up(K / 2, Blocking<T>::KC);
}

// C[i0:i1, :N] += part[i0:i1, :N] (part's rows N apart): the halves of a split K meeting
template <class T>
void add_part_rows(int64_t i0, int64_t i1, int64_t N, const T* part, T* C, int64_t ldc)
{
    for (int64_t i = i0; i < i1; ++i) {
        T* c = C + i * ldc;
        const T* q = part + i * N;
        for (int64_t j = 0; j < N; ++j) c[j] += q[j];
    }
}

template <class T>
void gemm_serial(int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T beta, T* C,
                 int64_t ldc, const T* bias)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == T(0) || swapped_pays(M, N, B, beta)) {
        if (K <= 0 || alpha == T(0))
            scale_c(M, N, beta, C, ldc);
        else
            gemm_swapped(M, N, K, alpha, A, B, C, ldc);
        if (bias != nullptr) add_bias_rows(M, N, bias, C, ldc);
        return;
    }
    if (M * N * K < kDirectFlops) return gemm_direct(M, N, K, alpha, A, B, beta, C, ldc, bias);
    if (ksplit_pays<T>(M, N, K)) {
        const int64_t K0 = ksplit_at<T>(K);
        T* part = pack_buffers<T>().c.get(std::size_t(M * N));
        gemm_packed(M, N, K0, alpha, A, B, beta, C, ldc, bias);
        gemm_packed(M, N, K - K0, alpha, View<T>{A.at(0, K0), A.ld, A.trans}, View<T>{B.at(K0, 0), B.ld, B.trans}, T(0),
                    part, N, static_cast<const T*>(nullptr));
        return add_part_rows(int64_t(0), M, N, part, C, ldc);
    }
    gemm_packed(M, N, K, alpha, A, B, beta, C, ldc, bias);
}

// ---- threading ---------------------------------------------------------------------------------

// How C is cut between threads: a tm x tn grid of rectangles, each computed independently (each
// thread packs what it reads). The grid minimises a thread's work: its tile area (rounded up to
// register tiles) plus its packing, weighted as a packed element costs ~16 multiply-adds.
struct Split {
    int tm, tn;
};

template <class T>
Split choose_split(int64_t M, int64_t N, int nt)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
    Split best{nt, 1};
    int64_t best_cost = -1;
    for (int tm = 1; tm <= nt; ++tm) {
        if (nt % tm) continue;
        const int tn = nt / tm;
        const int64_t mb = round_up((M + tm - 1) / tm, MR), nb = round_up((N + tn - 1) / tn, NR);
        const int64_t cost = mb * nb + 16 * (mb + nb);
        if (best_cost < 0 || cost < best_cost) best = {tm, tn}, best_cost = cost;
    }
    return best;
}

// Boundary p of `parts` near-equal pieces of n, aligned to multiples of `align`.
inline int64_t cut(int64_t n, int parts, int p, int64_t align)
{
    return p == parts ? n : std::min(n, (n * p / parts + align / 2) / align * align);
}

// Products with many row panels run on a team that shares out C's MR-row panels, in groups of
// one or a few: per NC-wide column block of C, each thread packs all of op(B)'s rows for that
// block (every KC block, as when C was cut into one tile per thread), then takes groups from its
// own contiguous range of them (RangeClaims, tensor/parallel.hpp) and, when that is empty, from the back of another
// thread's range, running each group through the K blocks in order. Groups shrink to one panel
// as a range runs out, so the last thread to finish holds the others up for one panel at most.
// With more than one column block, thread t starts at block t: each packs its own block of B
// (the weight gradient of a 1024 -> 256 layer, 256x1024x2048, packed 8 MiB of B per thread
// when both started at block 0). A thread slowed down by
// another process on its core (or by a busy neighbour on the host) holds up the others only for
// the group it is working on; with one tile per thread the region waited for that thread's whole
// tile. No waits inside the region; each element of C is summed as by gemm_packed (the same
// tiles, K blocks in the same order). A group has up to 4 panels, so that a KC x NC block of B
// read from L3 serves several panels. Measured on Zen 5 at 2 threads, idle, against one tile per
// thread: the weight gradient 256x256x2048 +7-13%, the others of T-small level (taking groups
// round-robin from one counter instead cost 5-12% on 2048-row products: their rows of A and C
// were no longer walked in order). (Sharing one packed B between the threads needs a wait per
// block: slower under contention than the one-tile split.)
// A thread done with its own column blocks packs another thread's block of B only while at
// least this many of its row panels are untaken. Packing a KC x NC block costs about as much as
// three panels' multiply-adds (both scale with K * NC; the ratio is the kernel's speed over the
// copy's, ~2.8 here), so with fewer left the owner finishes them sooner than a helper could
// start. A block some thread has taken from is drained by it (its take loop runs until the block
// is empty), so a skipped block is never left undone. Measured in a T-small step at 2 threads:
// the weight gradient of the 1024 -> 256 layer (256x1024x2048, two 4 MiB blocks of B) packed
// 0.3-0.7 blocks a second time per call; with this rule none, 4.40 -> 4.17 ms per call (mean of
// 3 interleaved runs x 80 calls); products with 2,048 rows still share blocks as before.
constexpr int64_t kStealPanels = 4;

template <class T>
bool team_fits(int nt, int64_t M, int64_t N, int64_t K)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR;
    const int64_t nc = std::min(N, Blocking<T>::nc());
    // each thread holds op(B)'s K rows of one column block: at most 8 MiB
    return M >= 4 * nt * MR && N >= NR && K * round_up(nc, NR) * int64_t(sizeof(T)) <= (int64_t(8) << 20);
}

// C's rows [i0, i0 + m) (at most kPanelGroup panels) from op(A)'s columns [k0, k0 + kk) and that
// K range of op(B), packed in KC blocks of ncp columns at bp; nc columns of C. The tiles and K
// blocks of gemm_packed, in its order, so each element is summed as there.
template <class T>
void run_panels(const View<T>& A, int64_t k0, int64_t kk, int64_t i0, int64_t m, const T* bp, int64_t ncp,
                int64_t nc, T alpha, T beta, const T* bias, T* C, int64_t ldc, T* ap)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR, KC = Blocking<T>::KC;
    for (int64_t pc = 0; pc < kk; pc += KC) {
        const int64_t kc = std::min(KC, kk - pc);
        const T beta_k = pc == 0 ? beta : T(1);  // later K blocks accumulate onto C
        const T* bias_k = pc == 0 ? bias : nullptr;
        const T* bk = bp + pc * ncp;
        if (A.trans) pack_a_trans_panels(A, i0, k0 + pc, m, kc, ap);  // the run's panels at once
        for (int64_t ir = i0; ir < i0 + m; ir += MR) {
            const int64_t mr = std::min(MR, i0 + m - ir);
            if (!A.trans) pack_a(A, ir, k0 + pc, mr, kc, ap);
            const T* a = A.trans ? ap + (ir - i0) * kc : ap;
            for (int64_t jr = 0; jr < nc; jr += NR)
                tile<T, false>(mr, std::min(NR, nc - jr), kc, a, MR, bk + jr * kc, NR, C + ir * ldc + jr, ldc, alpha,
                               beta_k, bias_k ? bias_k + jr : nullptr);
        }
    }
}

template <class T>
void gemm_team(int nt, int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T beta, T* C,
               int64_t ldc, const T* bias)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR, KC = Blocking<T>::KC;
    const int64_t NC = Blocking<T>::nc();
    const int64_t n_ir = (M + MR - 1) / MR;
    // one panel per run when there is one K block (B stays in L2) and A needs no grouped
    // packing; else up to 4, keeping >= 4 runs per thread
    const int64_t group = K <= KC && !A.trans ? 1 : std::clamp<int64_t>(n_ir / (4 * nt), 1, kPanelGroup);
    const int64_t n_jc = (N + NC - 1) / NC;
    std::vector<spool::detail::RangeClaims> items;
    items.reserve(static_cast<std::size_t>(n_jc));
    for (int64_t jb = 0; jb < n_jc; ++jb) items.emplace_back(n_ir, nt);
    spool::detail::parallel_team(nt, [&](int t, int) {
        PackBuffers<T>& buffers = pack_buffers<T>();
        T* bp = buffers.b.get(std::size_t(K * round_up(std::min(N, NC), NR)));
        T* ap = buffers.a.get(std::size_t(kPanelGroup * MR * std::min(K, KC)));
        for (int64_t i = 0; i < n_jc; ++i) {
            const int64_t jb = (i + t) % n_jc;  // thread t starts at block t: each packs its own block of B
            spool::detail::RangeClaims& claim = items[std::size_t(jb)];
            if (i > 0) {  // another thread's block: worth packing its B only with enough panels left
                const int64_t left = claim.left();
                if (left < n_ir && left < kStealPanels) continue;  // begun, so its taker drains it
            }
            spool::detail::RangeClaims::Run run = claim.take(t, 1, group);
            if (run.count == 0) continue;  // all taken already: skip packing this block of B
            const int64_t jc = jb * NC, nc = std::min(NC, N - jc), ncp = round_up(nc, NR);
            for (int64_t pc = 0; pc < K; pc += KC) pack_b(B, pc, jc, std::min(KC, K - pc), nc, bp + pc * ncp);
            for (; run.count > 0; run = claim.take(t, 1, group)) {
                const int64_t i0 = run.first * MR, m = std::min(run.count * MR, M - i0);
                run_panels(A, 0, K, i0, m, bp, ncp, nc, alpha, beta, bias ? bias + jc : nullptr, C + jc, ldc, ap);
            }
        }
    });
}

// The K-split product (ksplit_pays) on a team: items are (half of K, row panel), half-major, in
// RangeClaims — at 2 threads each thread's own range is one half, whose part of B it packs once;
// a thread that takes items of the other half packs that half too. Half 0 goes to C, half 1 to a
// scratch the size of C; whichever thread finishes a panel's second half adds the two. Each half
// is summed as gemm_packed sums it, so the bits equal the serial path's.
template <class T>
void gemm_ksplit_team(int nt, int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T beta,
                      T* C, int64_t ldc, const T* bias)
{
    constexpr int64_t MR = Tile<T>::MR, NR = Tile<T>::NR, KC = Blocking<T>::KC;
    const int64_t K0 = ksplit_at<T>(K), n_ir = (M + MR - 1) / MR, ncp = round_up(N, NR);
    const int64_t group = std::clamp<int64_t>(n_ir / (4 * ((nt + 1) / 2)), 1, kPanelGroup);
    T* part = pack_buffers<T>().c.get(std::size_t(M * N));
    std::vector<std::atomic<int>> halves_done(static_cast<std::size_t>(n_ir));
    for (auto& d : halves_done) d.store(0, std::memory_order_relaxed);
    spool::detail::RangeClaims claims(2 * n_ir, nt);
    spool::detail::parallel_team(nt, [&](int t, int) {
        PackBuffers<T>& buffers = pack_buffers<T>();
        T* bp = buffers.b.get(std::size_t(K * ncp));
        T* ap = buffers.a.get(std::size_t(kPanelGroup * MR * KC));
        bool packed[2] = {false, false};
        for (auto run = claims.take(t, 1, group); run.count > 0; run = claims.take(t, 1, group)) {
            for (int64_t first = run.first, end = run.first + run.count; first < end;) {  // a run may span both halves
                const int h = first >= n_ir ? 1 : 0;
                const int64_t stop = std::min(end, (h + 1) * n_ir);
                const int64_t k0 = h ? K0 : 0, kk = h ? K - K0 : K0;
                T* bh = bp + k0 * ncp;
                if (!packed[h]) {
                    for (int64_t pc = 0; pc < kk; pc += KC) pack_b(B, k0 + pc, 0, std::min(KC, kk - pc), N, bh + pc * ncp);
                    packed[h] = true;
                }
                const int64_t p0 = first - h * n_ir, p1 = stop - h * n_ir;
                const int64_t i0 = p0 * MR, m = std::min(p1 * MR, M) - i0;
                if (h == 0)
                    run_panels(A, k0, kk, i0, m, bh, ncp, N, alpha, beta, bias, C, ldc, ap);
                else
                    run_panels(A, k0, kk, i0, m, bh, ncp, N, alpha, T(0), static_cast<const T*>(nullptr), part, N, ap);
                for (int64_t p = p0; p < p1; ++p)
                    if (halves_done[std::size_t(p)].fetch_add(1, std::memory_order_acq_rel) == 1)
                        add_part_rows(p * MR, std::min(M, (p + 1) * MR), N, part, C, ldc);
                first = stop;
            }
        }
    });
}

template <class T>
void gemm_threaded(int64_t M, int64_t N, int64_t K, T alpha, const View<T>& A, const View<T>& B, T beta, T* C,
                   int64_t ldc, const T* bias)
{
    const int64_t work = M * N * K;
    int nt = get_num_threads();
    // inside a parallel region (e.g. attention over heads) run serially: a nested team would get
    // one thread anyway, after the cost of opening a region
    if (work < kDirectFlops || M <= 0 || N <= 0 || K <= 0 || alpha == T(0) || spool::detail::in_parallel()) nt = 1;
    nt = int(std::min<int64_t>(nt, std::max<int64_t>(1, work / kFlopsPerThread)));
    if (nt == 1) return gemm_serial(M, N, K, alpha, A, B, beta, C, ldc, bias);
    const bool swapped = swapped_pays(M, N, B, beta);
    if (!swapped && ksplit_pays<T>(M, N, K)) return gemm_ksplit_team(nt, M, N, K, alpha, A, B, beta, C, ldc, bias);
    // enough row panels to share out: claimed as threads come for them
    if (!swapped && team_fits<T>(nt, M, N, K))
        return gemm_team(nt, M, N, K, alpha, A, B, beta, C, ldc, bias);

    // One tile per thread, claimed rather than assigned: a worker that has not woken up when
    // the caller is done with its tile leaves its tile to the caller. (Cutting 4 tiles per
    // thread balanced better under contention but repacked more: 512^3 at 2 threads lost
    // ~25% on an idle machine.)
    const int parts = nt;
    const Split s = choose_split<T>(M, N, parts);
    std::atomic<int> next{0};
    spool::detail::parallel_team(nt, [&](int, int) {
        for (int p; (p = next.fetch_add(1, std::memory_order_relaxed)) < parts;) {
            const int ti = p / s.tn, tj = p % s.tn;
            const int64_t m0 = cut(M, s.tm, ti, Tile<T>::MR), m1 = cut(M, s.tm, ti + 1, Tile<T>::MR);
            const int64_t n0 = cut(N, s.tn, tj, Tile<T>::NR), n1 = cut(N, s.tn, tj + 1, Tile<T>::NR);
            if (m1 > m0 && n1 > n0) {
                const View<T> a{A.at(m0, 0), A.ld, A.trans}, b{B.at(0, n0), B.ld, B.trans};
                gemm_serial(m1 - m0, n1 - n0, K, alpha, a, b, beta, C + m0 * ldc + n0, ldc, bias ? bias + n0 : nullptr);
            }
        }
    });
}

// ---- this arch's entry points (tensor/gemm.cpp dispatches to them) ------------------------------

template <class T>
void gemm_entry(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                const T* B, int64_t ldb, T beta, T* C, int64_t ldc, const T* bias)
{
    SPOOL_ASSERT(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N);
    gemm_threaded(M, N, K, alpha, View<T>{A, lda, trans_a}, View<T>{B, ldb, trans_b}, beta, C, ldc, bias);
}

template <class T>
void gemm_batched_entry(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                        const T* A, int64_t lda, int64_t stride_a, const T* B, int64_t ldb, int64_t stride_b, T beta,
                        T* C, int64_t ldc, int64_t stride_c)
{
    if (batch <= 0 || M <= 0 || N <= 0) return;
    SPOOL_ASSERT(batch == 1 || stride_c != 0);
    const int nt = get_num_threads();
    const int64_t work = M * N * std::max<int64_t>(K, 1);
    // One gemm per thread when each is too small to split well, or the batch divides evenly; a
    // batch too small to be worth a second thread (decoding one token) stays on this thread.
    const bool per_item = nt > 1 && batch > 1 && !spool::detail::in_parallel() && batch * work >= 2 * kFlopsPerThread &&
                          (work < 4 * nt * kFlopsPerThread || batch % nt == 0 || batch >= 4 * nt);
    if (!per_item) {
        for (int64_t b = 0; b < batch; ++b)
            gemm_entry(trans_a, trans_b, M, N, K, alpha, A + b * stride_a, lda, B + b * stride_b, ldb, beta,
                       C + b * stride_c, ldc, static_cast<const T*>(nullptr));
        return;
    }
    spool::detail::parallel_for(batch, int(std::min<int64_t>(nt, batch)), [&](int64_t b) {
        gemm_serial(M, N, K, alpha, View<T>{A + b * stride_a, lda, trans_a}, View<T>{B + b * stride_b, ldb, trans_b},
                    beta, C + b * stride_c, ldc, static_cast<const T*>(nullptr));
    });
}

// named by the instruction set xsimd compiled this file for
const GemmTable kTable{xsimd::default_arch::name(),
                       gemm_entry<float>,
                       gemm_entry<double>,
                       gemm_batched_entry<float>,
                       gemm_batched_entry<double>};

}  // namespace

const GemmTable& gemm_table() { return kTable; }

}  // namespace spool::kernels::SPOOL_ARCH
