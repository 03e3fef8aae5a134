// The counter-based generator: published known answers, reproducibility, thread-count
// independence, distribution moments, and dropout's keep rate.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "autograd/tensor.hpp"
#include "tensor/kernels.hpp"
#include "tensor/random.hpp"
#include "tensor/threads.hpp"

using namespace spool;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors")
{
    struct Kat {
        std::uint32_t ctr[4], key[2], out[4];
    };
    const Kat kats[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (const auto& k : kats) {
        std::uint32_t c[4] = {k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]};
        rng::philox4x32(c, k.key);
        for (int i = 0; i < 4; ++i) CHECK(c[i] == k.out[i]);
    }
}

TEST_CASE("same seed, same numbers; different thread counts, same numbers")
{
    int saved = get_num_threads();
    std::vector<double> runs[2];
    for (int t = 1; t <= 2; ++t) {
        set_num_threads(t);
        manual_seed(1234);
        Tensor a = randn({300000});
        Tensor b = rand({7});
        runs[t - 1] = a.tolist();
        auto bl = b.tolist();
        runs[t - 1].insert(runs[t - 1].end(), bl.begin(), bl.end());
    }
    set_num_threads(saved);
    REQUIRE(runs[0].size() == runs[1].size());
    CHECK(runs[0] == runs[1]);
    manual_seed(1235);
    CHECK(randn({4}).tolist() != std::vector<double>(runs[0].begin(), runs[0].begin() + 4));
}

TEST_CASE("uniform and normal moments")
{
    manual_seed(7);
    for (DType dt : {f32, f64}) {
        Tensor u = rand({200000}, {.dtype = dt});
        Tensor n = randn({200000}, {.dtype = dt});
        double su = 0, su2 = 0, sn = 0, sn2 = 0, lo = 1, hi = 0;
        for (double v : u.tolist()) su += v, su2 += v * v, lo = std::min(lo, v), hi = std::max(hi, v);
        for (double v : n.tolist()) sn += v, sn2 += v * v;
        double N = 200000;
        CHECK(lo >= 0);
        CHECK(hi < 1);
        CHECK(su / N == doctest::Approx(0.5).epsilon(0.01));
        CHECK(su2 / N - (su / N) * (su / N) == doctest::Approx(1.0 / 12).epsilon(0.02));
        CHECK(std::abs(sn / N) < 0.01);
        CHECK(sn2 / N == doctest::Approx(1.0).epsilon(0.02));
    }
}

TEST_CASE("rng state save/restore replays the same draw")
{
    manual_seed(99);
    randn({10});
    RngState s = get_rng_state();
    auto a = randn({10}).tolist();
    set_rng_state(s);
    CHECK(randn({10}).tolist() == a);
}

TEST_CASE("dropout mask keeps 1-p and scales by 1/(1-p)")
{
    manual_seed(5);
    for (double p : {0.1, 0.5, 0.9}) {
        Value m = kernels::dropout_mask(Shape{100000}, f32, p);
        std::int64_t kept = 0;
        for (std::int64_t i = 0; i < m.numel(); ++i) {
            double v = m.at(i);
            if (v != 0) {
                ++kept;
                CHECK(v == doctest::Approx(1 / (1 - p)));
            }
        }
        CHECK(kept / 1e5 == doctest::Approx(1 - p).epsilon(0.02));
    }
    CHECK_THROWS_AS(kernels::dropout_mask(Shape{3}, f32, 1.5), ValueError);
}

TEST_CASE("raw words equal philox4x32 block by block across SIMD groups, tails and a 32-bit counter carry")
{
    // the SIMD path computes 8 or 16 blocks at once: compare every word with the scalar
    // known-answer function, from offsets that start mid-group and cross 2^32 in the counter
    for (const spool::RngState s : {spool::RngState{0x5eed, 0}, spool::RngState{0x123456789abcdefULL, 0xfffffff5ULL}}) {
        for (std::uint64_t first : {0ULL, 3ULL, 17ULL}) {
            const std::int64_t n = 4 * 53 + 3;
            std::vector<std::uint32_t> got(static_cast<std::size_t>(n));
            spool::rng::words(s, first, got.data(), n);
            for (std::int64_t i = 0; i < n; ++i) {
                const std::uint64_t w = first + static_cast<std::uint64_t>(i), ctr = s.offset + w / 4;
                std::uint32_t c[4] = {static_cast<std::uint32_t>(ctr), static_cast<std::uint32_t>(ctr >> 32), 0, 0};
                const std::uint32_t key[2] = {static_cast<std::uint32_t>(s.seed), static_cast<std::uint32_t>(s.seed >> 32)};
                spool::rng::philox4x32(c, key);
                INFO("offset " << s.offset << " word " << w);
                REQUIRE(got[static_cast<std::size_t>(i)] == c[w % 4]);
            }
        }
    }
}

TEST_CASE("randint: int64 values in [low, high), every value drawn, reproducible, any int64 range")
{
    spool::manual_seed(5);
    const spool::Tensor a = spool::randint(-3, 4, {7000});
    CHECK(a.dtype() == spool::DType::i64);
    std::vector<int> counts(7, 0);
    for (double v : a.tolist()) {
        REQUIRE(v >= -3);
        REQUIRE(v < 4);
        REQUIRE(v == std::floor(v));
        ++counts[static_cast<std::size_t>(v + 3)];
    }
    for (int c : counts) {  // 1000 expected each; 5 standard deviations is ~150
        CHECK(c > 850);
        CHECK(c < 1150);
    }
    spool::manual_seed(5);
    CHECK(spool::randint(-3, 4, {7000}).tolist() == a.tolist());
    // the whole int64 range: offsets are unsigned, so nothing overflows
    const std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
    const spool::Tensor w = spool::randint(lo, hi, {1000});
    const std::int64_t* wv = w.value().data<std::int64_t>();
    int negative = 0;
    for (int i = 0; i < 1000; ++i) {
        REQUIRE(wv[i] < hi);
        negative += wv[i] < 0;
    }
    CHECK(negative > 400);
    CHECK(negative < 600);
    CHECK(spool::randint(0, 1, {3}).tolist() == std::vector<double>{0, 0, 0});
    CHECK(spool::randint(0, 10, {2, 2}, {.dtype = spool::DType::f32}).dtype() == spool::DType::f32);
    CHECK_THROWS_WITH_AS(spool::randint(5, 5, {1}), "randint: low must be less than high; got low 5 and high 5",
                         spool::ValueError);
    CHECK_THROWS_WITH_AS(spool::randint(0, 5, {-1}), "randint: dimensions must be >= 0; got shape (-1,)",
                         spool::ShapeError);
}
