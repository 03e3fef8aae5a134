// GEMM (tensor/gemm.hpp) against its naive reference: float and double, the four transpose
// combinations, tail sizes {1, 7, 8, 9, 31, 33} and shapes past the cache blocks, padded leading
// dimensions, alpha != 1, beta in {0, 1, 0.5} (beta 0 over NaN-filled C), K == 0, alpha == 0,
// gemm_batched with broadcast (stride 0) operands, at 1 and 2 threads. Timing lives in bench/gemm.cpp.

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "messages.hpp"
#include "tensor/errors.hpp"
#include "tensor/gemm.hpp"
#include "tensor/kernels_arch.hpp"
#include "tensor/parallel.hpp"
#include "tensor/threads.hpp"

namespace {

using spool::kernels::gemm;
using spool::kernels::gemm_batched;
using spool::kernels::gemm_reference;

// Operands are uniform in [-1, 1], so |a*b| <= 1; an error bound for a K-term sum in T is
// ~K * eps. Tolerance: 4 * eps * (K + 2) * (|alpha| + |beta|) (the reference sums in double).
template <class T>
double tolerance(int64_t K, T alpha, T beta)
{
    const double eps = std::numeric_limits<T>::epsilon();
    return 4.0 * eps * double(K + 2) * (std::abs(double(alpha)) + std::abs(double(beta)));
}

template <class T>
std::vector<T> random_vector(std::size_t n, std::mt19937& gen)
{
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<T> v(n);
    for (T& x : v) x = T(dist(gen));
    return v;
}

// Sets the thread count for a scope and restores the previous one.
struct ThreadScope {
    int saved = spool::get_num_threads();
    explicit ThreadScope(int n) { spool::set_num_threads(n); }
    ~ThreadScope() { spool::set_num_threads(saved); }
};

// Compares the M x N block of `got` (row stride ldc) with `want`; the padding columns of each row
// must still hold `want`'s values (both started equal). Reports the worst element.
template <class T>
void expect_close(const std::vector<T>& got, const std::vector<T>& want, int64_t M, int64_t N, int64_t ldc,
                  double tol)
{
    double worst = 0;
    int64_t wi = -1, wj = -1;
    bool pad_ok = true;
    for (int64_t i = 0; i < M; ++i) {
        for (int64_t j = 0; j < ldc; ++j) {
            const T g = got[std::size_t(i * ldc + j)], w = want[std::size_t(i * ldc + j)];
            if (j >= N) {
                pad_ok = pad_ok && (g == w || (std::isnan(g) && std::isnan(w)));
                continue;
            }
            const double err = std::abs(double(g) - double(w));
            if (!(err <= worst)) {  // also catches NaN
                worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
                wi = i, wj = j;
            }
        }
    }
    if (wi >= 0) {
        const std::size_t at = std::size_t(wi * ldc + wj);
        INFO("worst element (" << wi << ", " << wj << "): got " << got[at] << ", expected " << want[at] << ", |diff| "
                               << worst << ", tolerance " << tol);
        CHECK(worst <= tol);
    }
    CHECK_MESSAGE(pad_ok, "gemm wrote into C's padding columns (between N and ldc)");
}

struct Case {
    bool ta, tb;
    int64_t M, N, K;
    int64_t pad;  // added to every leading dimension
};

// Runs gemm at 1 and 2 threads against one reference result; C starts random, or NaN when beta == 0.
// with_bias: a random bias row is added to every row of C (the reference adds it afterwards).
template <class T>
void check_gemm(const Case& c, T alpha, T beta, std::mt19937& gen, bool with_bias = false)
{
    const int64_t lda = (c.ta ? c.M : c.K) + c.pad, ldb = (c.tb ? c.K : c.N) + c.pad, ldc = c.N + c.pad;
    const auto A = random_vector<T>(std::size_t((c.ta ? c.K : c.M) * lda), gen);
    const auto B = random_vector<T>(std::size_t((c.tb ? c.N : c.K) * ldb), gen);
    auto C0 = random_vector<T>(std::size_t(c.M * ldc), gen);
    if (beta == T(0)) std::fill(C0.begin(), C0.end(), std::numeric_limits<T>::quiet_NaN());
    auto want = C0;
    gemm_reference(c.ta, c.tb, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
    const auto bias = random_vector<T>(std::size_t(c.N), gen);
    if (with_bias)
        for (int64_t i = 0; i < c.M; ++i)
            for (int64_t j = 0; j < c.N; ++j) want[std::size_t(i * ldc + j)] += bias[std::size_t(j)];

    std::vector<T> first;
    for (int threads : {1, 2}) {
        INFO("trans_a " << c.ta << ", trans_b " << c.tb << ", M " << c.M << ", N " << c.N << ", K " << c.K
                        << ", pad " << c.pad << ", alpha " << alpha << ", beta " << beta << ", bias " << with_bias
                        << ", threads " << threads);
        ThreadScope scope(threads);
        auto C = C0;
        gemm(c.ta, c.tb, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc,
             with_bias ? bias.data() : nullptr);
        expect_close(C, want, c.M, c.N, ldc, tolerance(c.K, alpha, beta) + (with_bias ? 4 * std::numeric_limits<T>::epsilon() : 0));
        // each element is summed in the same order whatever the split between threads
        const auto same = [](T x, T y) { return x == y || (std::isnan(x) && std::isnan(y)); };
        if (first.empty())
            first = C;
        else
            CHECK_MESSAGE(std::equal(C.begin(), C.end(), first.begin(), same),
                          "result differs between 1 and 2 threads");
    }
}

}  // namespace

TEST_CASE_TEMPLATE("gemm: tail sizes, all transposes, beta 0 / 1 / 0.5", T, float, double)
{
    std::mt19937 gen(42);
    const int64_t sizes[] = {1, 7, 8, 9, 31, 33};
    for (bool ta : {false, true})
        for (bool tb : {false, true})
            for (int64_t M : sizes)
                for (int64_t N : sizes)
                    for (int64_t K : {1, 8, 33})
                        for (T beta : {T(0), T(1), T(0.5)})
                            check_gemm<T>({ta, tb, M, N, K, (M + N) % 3}, T(0.75), beta, gen);
}

TEST_CASE_TEMPLATE("gemm: shapes past the cache blocks and the threading threshold", T, float, double)
{
    std::mt19937 gen(7);
    // Packed path: 300x257x513 crosses KC twice with tails in M, N and K; 450x70x300 splits rows
    // between threads; 30x5000x100 splits columns between threads and crosses NC. Direct path
    // (small products): 64^3, 97x130x65, 1x700x300. A few rows times a transposed B (computed as
    // the transposed product): 32x1000x256 (a decoding step's output layer, split between
    // threads), 64x300x513 (two panels of rows, K past KC), 65x300x70 (one row too many). One
    // block of B shared out by row panels at 2 threads: 150x100x200, 301x130x250 (tails in every
    // dimension); several blocks shared out by groups of row panels: 200x2100x300 (2 x 3+ blocks),
    // 1000x70x600 (groups of 4 panels, a short last group, K past KC twice).
    const Case shapes[] = {{false, false, 300, 257, 513, 3}, {false, false, 450, 70, 300, 0},
                           {false, false, 30, 5000, 100, 1}, {false, false, 64, 64, 64, 0},
                           {false, false, 97, 130, 65, 5},   {false, false, 1, 700, 300, 0},
                           {false, false, 32, 1000, 256, 0}, {false, false, 64, 300, 513, 2},
                           {false, false, 65, 300, 70, 1},   {false, false, 200, 2100, 300, 1},
                           {false, false, 150, 100, 200, 0}, {false, false, 301, 130, 250, 2},
                           {false, false, 1000, 70, 600, 1}, {false, false, 100, 70, 1100, 1},
                           {false, false, 300, 200, 1300, 2}};
    for (Case c : shapes)
        for (bool ta : {false, true})
            for (bool tb : {false, true}) {
                c.ta = ta, c.tb = tb;
                check_gemm<T>(c, T(-1.25), T(0), gen);
                check_gemm<T>(c, T(1), T(0.5), gen);
            }
}

TEST_CASE_TEMPLATE("gemm with a bias row: every path (direct, packed past KC and NC, threaded, transposed product, K == 0)", T,
                   float, double)
{
    // the bias is added once, at the first K block, by the kernel's store; partial tiles add it
    // in their copy-out; the transposed product and K == 0 add it afterwards
    std::mt19937 gen(9);
    const int64_t sizes[] = {1, 9, 33};
    for (bool ta : {false, true})
        for (bool tb : {false, true}) {
            for (int64_t M : sizes)
                for (int64_t N : sizes)
                    for (T beta : {T(0), T(0.5)}) check_gemm<T>({ta, tb, M, N, 17, 1}, T(1), beta, gen, true);
            const Case shapes[] = {{ta, tb, 300, 257, 513, 3}, {ta, tb, 450, 70, 300, 0}, {ta, tb, 30, 5000, 100, 1},
                                   {ta, tb, 32, 1000, 256, 0}, {ta, tb, 64, 64, 64, 2},   {ta, tb, 5, 7, 0, 0},
                                   {ta, tb, 120, 90, 1030, 1}};
            for (const Case& c : shapes) {
                check_gemm<T>(c, T(1), T(0), gen, true);
                check_gemm<T>(c, T(-1.25), T(0.5), gen, true);
            }
        }
}

TEST_CASE_TEMPLATE("gemm: a long K over a small C is summed as two halves of K, at 1 and 2 threads", T, float, double)
{
    // K >= 4 KC (1024) and >= 2 max(M, N), N within one column block: the halves are cut at a
    // KC boundary (K = 1100: 768 + 332), each summed as a product of its own, then added
    std::mt19937 gen(11);
    const int64_t M = 100, N = 70, K = 1100, K0 = 768;
    for (bool ta : {false, true})
        for (bool tb : {false, true}) {
            const int64_t lda = ta ? M : K, ldb = tb ? K : N;
            const auto A = random_vector<T>(std::size_t(ta ? K * M : M * K), gen);
            const auto B = random_vector<T>(std::size_t(tb ? N * K : K * N), gen);
            const auto C0 = random_vector<T>(std::size_t(M * N), gen);
            const auto bias = random_vector<T>(std::size_t(N), gen);
            // the two halves through gemm itself (each too short to be split again)
            auto want = C0;
            std::vector<T> second(std::size_t(M * N));
            ThreadScope one(1);
            gemm(ta, tb, M, N, K0, T(0.75), A.data(), lda, B.data(), ldb, T(0.5), want.data(), N, bias.data());
            gemm(ta, tb, M, N, K - K0, T(0.75), ta ? A.data() + K0 * M : A.data() + K0, lda,
                 tb ? B.data() + K0 : B.data() + K0 * N, ldb, T(0), second.data(), N);
            for (std::size_t i = 0; i < want.size(); ++i) want[i] += second[i];
            for (int threads : {1, 2}) {
                INFO("trans_a " << ta << ", trans_b " << tb << ", threads " << threads);
                ThreadScope scope(threads);
                auto C = C0;
                gemm(ta, tb, M, N, K, T(0.75), A.data(), lda, B.data(), ldb, T(0.5), C.data(), N, bias.data());
                CHECK(C == want);
            }
        }
}

TEST_CASE_TEMPLATE("gemm: K == 0 and alpha == 0 give beta * C", T, float, double)
{
    for (int threads : {1, 2}) {
        ThreadScope scope(threads);
        const int64_t M = 9, N = 33, ldc = 35;
        std::vector<T> C(std::size_t(M * ldc), std::numeric_limits<T>::quiet_NaN());
        const T a[1] = {T(1)}, b[1] = {T(1)};
        gemm<T>(false, false, M, N, 0, T(2), a, 1, b, N, T(0), C.data(), ldc);  // NaN C, beta 0 -> zeros
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) REQUIRE(C[std::size_t(i * ldc + j)] == T(0));
        for (T& x : C) x = T(3);
        gemm<T>(true, true, M, N, 0, T(2), a, M, b, 1, T(0.5), C.data(), ldc);
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) REQUIRE(C[std::size_t(i * ldc + j)] == T(1.5));
        std::mt19937 gen(3);
        const auto A = random_vector<T>(std::size_t(M * 40), gen), B = random_vector<T>(std::size_t(40 * N), gen);
        gemm<T>(false, false, M, N, 40, T(0), A.data(), 40, B.data(), N, T(2), C.data(), ldc);
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) REQUIRE(C[std::size_t(i * ldc + j)] == T(3));
        gemm<T>(false, false, 0, N, 40, T(1), A.data(), 40, B.data(), N, T(0), C.data(), ldc);  // M == 0: no-op
        gemm<T>(false, false, M, 0, 40, T(1), A.data(), 40, B.data(), N, T(0), C.data(), ldc);  // N == 0: no-op
        CHECK(C[0] == T(3));
    }
}

TEST_CASE_TEMPLATE("gemm_batched: per-item results, broadcast operands (stride 0)", T, float, double)
{
    std::mt19937 gen(11);
    struct BatchCase {
        int64_t batch, M, N, K;
        bool broadcast_a, broadcast_b;
    };
    // tiny batches stay on one thread; 20 small items run one per thread; 3 large items (odd batch)
    // thread inside each gemm
    const BatchCase cases[] = {{8, 33, 31, 17, true, false}, {20, 64, 48, 80, false, true},
                               {6, 9, 7, 8, false, false},   {3, 300, 256, 240, true, false}};
    for (const BatchCase& bc : cases)
        for (bool ta : {false, true})
            for (bool tb : {false, true}) {
                const int64_t lda = (ta ? bc.M : bc.K) + 1, ldb = (tb ? bc.K : bc.N) + 2, ldc = bc.N + 3;
                const int64_t size_a = (ta ? bc.K : bc.M) * lda, size_b = (tb ? bc.N : bc.K) * ldb;
                const int64_t stride_a = bc.broadcast_a ? 0 : size_a + 5, stride_b = bc.broadcast_b ? 0 : size_b;
                const int64_t stride_c = bc.M * ldc;
                const auto A = random_vector<T>(std::size_t(stride_a * (bc.batch - 1) + size_a), gen);
                const auto B = random_vector<T>(std::size_t(stride_b * (bc.batch - 1) + size_b), gen);
                const auto C0 = random_vector<T>(std::size_t(stride_c * bc.batch), gen);
                const T alpha(0.5), beta(0.5);
                auto want = C0;
                for (int64_t b = 0; b < bc.batch; ++b)
                    gemm_reference(ta, tb, bc.M, bc.N, bc.K, alpha, A.data() + b * stride_a, lda,
                                   B.data() + b * stride_b, ldb, beta, want.data() + b * stride_c, ldc);
                for (int threads : {1, 2}) {
                    INFO("batch " << bc.batch << ", M " << bc.M << ", N " << bc.N << ", K " << bc.K
                                  << ", trans_a " << ta << ", trans_b " << tb << ", threads " << threads);
                    ThreadScope scope(threads);
                    auto C = C0;
                    gemm_batched(bc.batch, ta, tb, bc.M, bc.N, bc.K, alpha, A.data(), lda, stride_a, B.data(), ldb,
                                 stride_b, beta, C.data(), ldc, stride_c);
                    expect_close(C, want, bc.M * bc.batch, bc.N, ldc, tolerance(bc.K, alpha, beta));
                }
            }
}

TEST_CASE("gemm: called from inside a parallel region, and from two user threads at once")
{
    // a gemm large enough to thread must compute all of C when it runs nested inside one of
    // spool's parallel regions (it runs serially there) and when two user threads call it at
    // once (the second runs serially while the first holds the pool)
    ThreadScope scope(2);
    std::mt19937 gen(5);
    const int64_t M = 260, N = 200, K = 160, items = 4;  // above the threading threshold
    const auto A = random_vector<float>(std::size_t(M * K), gen), B = random_vector<float>(std::size_t(K * N), gen);
    std::vector<float> want(std::size_t(M * N));
    gemm_reference(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, want.data(), N);
    auto one = [&](std::vector<float>& C, int64_t i) {
        gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C.data() + i * M * N, N);
    };
    auto check = [&](const std::vector<float>& C) {
        for (int64_t i = 0; i < items; ++i) {
            INFO("item " << i);
            expect_close(std::vector<float>(C.begin() + i * M * N, C.begin() + (i + 1) * M * N), want, M, N, N,
                         tolerance(K, 1.0f, 0.0f));
        }
    };
    std::vector<float> nested(std::size_t(items * M * N), std::numeric_limits<float>::quiet_NaN());
    spool::detail::parallel_for(items, 2, [&](int64_t i) { one(nested, i); });
    check(nested);
    std::vector<float> concurrent(std::size_t(items * M * N), std::numeric_limits<float>::quiet_NaN());
    for (int round = 0; round < 20; ++round) {
        std::thread other([&] { one(concurrent, 0), one(concurrent, 1); });
        one(concurrent, 2), one(concurrent, 3);
        other.join();
    }
    check(concurrent);
}

TEST_CASE("gemm kernels: each one this build runs on this CPU matches the reference")
{
    namespace k = spool::kernels;
    const std::vector<const char*> kernels = k::gemm_kernels();
    REQUIRE(!kernels.empty());
    const std::string before = k::gemm_kernel();
    std::mt19937 gen(11);
    // a tail case, the direct path, the swapped small-M path and the packed, threaded path
    const Case shapes[] = {{false, true, 9, 33, 8, 1}, {true, false, 97, 130, 65, 5}, {false, true, 32, 1000, 256, 0},
                           {false, false, 300, 257, 513, 3}};
    for (const char* name : kernels) {
        k::set_gemm_kernel(name);
        CHECK(std::string(k::gemm_kernel()) == name);
        CHECK(std::string(k::kernel_table().name) == name);  // the other hot loops follow the GEMM
        for (const Case& c : shapes) {
            INFO("kernel " << std::string(name));
            check_gemm<float>(c, 0.75f, 0.0f, gen);
            check_gemm<double>(c, 0.75, 0.5, gen);
        }
    }
    // the short names SPOOL_KERNEL also takes
    for (const char* alias : {"avx512", "avx2", "x86_64"}) {
        const std::string want = std::string(alias) == "avx512" ? "avx512bw"
                                 : std::string(alias) == "avx2" ? "fma3+avx2"
                                                                : "sse2";
        if (std::find(kernels.begin(), kernels.end(), want) == kernels.end()) continue;  // not in this build
        k::set_gemm_kernel(alias);
        CHECK(std::string(k::gemm_kernel()) == want);
    }
    k::set_gemm_kernel(before.c_str());
    std::string all;
    for (const char* name : kernels) all += (all.empty() ? "" : ", ") + std::string(name);
    CHECK(spool::test::message_of<spool::ValueError>([] { spool::kernels::set_gemm_kernel("avx1024"); }) ==
          "set_gemm_kernel: 'avx1024' is not a GEMM kernel this build runs on this CPU (" + all + ")");
    CHECK(std::string(k::gemm_kernel()) == before);
}
