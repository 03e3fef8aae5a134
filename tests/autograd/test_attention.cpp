// The blockwise (flash-attention style) path of scaled_dot_product_attention: equal to the
// materialised path in output and gradients, float64 gradcheck with tiles shrunk so that
// every length leaves a partial tile (masks, causal, dropout, L != S), and memory that grows
// linearly in the sequence length (the caching allocator's peak).
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "compare.hpp"
#include "messages.hpp"
#include "spool.hpp"
#include "tensor/nn_kernels.hpp"

using namespace spool;
using spool::test::expect_close;

namespace {

using Blocking = kernels::AttentionBlocking;
constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

/// Sets the attention tiling for a scope and restores the previous one.
struct WithBlocking {
    Blocking before = kernels::attention_blocking();
    explicit WithBlocking(const Blocking& b) { kernels::set_attention_blocking(b); }
    ~WithBlocking() { kernels::set_attention_blocking(before); }
};

struct Case {
    std::string name;
    std::int64_t L, S;
    std::function<SdpaOptions(DType)> options;
};

/// Masks for q [2, L, E], k [2, S, E]: bool [L, S] with row 1 fully masked, and a float
/// key-padding-like mask [2, 1, S] that shuts out the last key of batch 1.
Tensor bool_mask(std::int64_t L, std::int64_t S)
{
    std::vector<bool> m(L * S);
    for (std::int64_t i = 0; i < L; ++i)
        for (std::int64_t j = 0; j < S; ++j) m[i * S + j] = i != 1 && (i + 2 * j) % 3 != 0;
    return from_vector(m, {L, S});
}

Tensor float_mask(std::int64_t S, DType dt)
{
    std::vector<double> m(2 * S);
    for (std::int64_t j = 0; j < S; ++j) {
        m[j] = 0.25 * static_cast<double>(j % 3) - 0.3;
        m[S + j] = j == S - 1 ? -std::numeric_limits<double>::infinity() : 0.1 * static_cast<double>(j % 2);
    }
    return from_vector(m, {2, 1, S}, {.dtype = dt});
}

std::vector<Case> cases()
{
    std::vector<Case> c;
    for (auto [L, S] : {std::pair<std::int64_t, std::int64_t>{7, 5}, {5, 7}, {6, 6}, {1, 4}}) {
        const std::string ls = " L" + std::to_string(L) + " S" + std::to_string(S);
        c.push_back({"plain" + ls, L, S, [](DType) { return SdpaOptions{}; }});
        c.push_back({"causal, scale 0.7" + ls, L, S, [](DType) { return SdpaOptions{.is_causal = true, .scale = 0.7}; }});
        c.push_back({"bool mask with a fully masked row" + ls, L, S,
                     [L, S](DType) { return SdpaOptions{.attn_mask = L > 1 ? bool_mask(L, S) : Tensor()}; }});
        c.push_back({"float mask per batch" + ls, L, S, [S](DType dt) { return SdpaOptions{.attn_mask = float_mask(S, dt)}; }});
        c.push_back({"dropout 0.3" + ls, L, S, [](DType) { return SdpaOptions{.dropout_p = 0.3}; }});
        c.push_back({"dropout 0.5, causal" + ls, L, S, [](DType) { return SdpaOptions{.dropout_p = 0.5, .is_causal = true}; }});
    }
    return c;
}

struct Run {
    std::vector<double> out, dq, dk, dv;
};

/// Output and gradients of sum(out * w) for fixed random q, k, v, w.
Run run(const Case& c, DType dt, std::int64_t E, std::int64_t Ev)
{
    manual_seed(21);
    Tensor q = randn({2, c.L, E}, {.dtype = dt, .requires_grad = true});
    Tensor k = randn({2, c.S, E}, {.dtype = dt, .requires_grad = true});
    Tensor v = randn({2, c.S, Ev}, {.dtype = dt, .requires_grad = true});
    Tensor w = randn({2, c.L, Ev}, {.dtype = dt});
    SdpaOptions o = c.options(dt);
    manual_seed(99);  // the dropout draw
    Tape tape;
    Tensor out = scaled_dot_product_attention(q, k, v, o).output;
    tape.backward(sum(out * w));
    return {out.tolist(), q.grad().tolist(), k.grad().tolist(), v.grad().tolist()};
}

}  // namespace

TEST_CASE("blockwise attention equals the materialised path: output and gradients, f32 and f64")
{
    for (DType dt : {f64, f32})
        for (const Case& c : cases()) {
            Run tiled, whole;
            {
                WithBlocking b({.block_q = 2, .block_k = 3, .min_scores = 0});
                tiled = run(c, dt, 3, 2);
            }
            {
                WithBlocking b({.min_scores = never});
                whole = run(c, dt, 3, 2);
            }
            INFO(c.name, " ", dtype_name(dt));
            const auto tol = test::parity_tolerance(dt);
            expect_close("out", tiled.out, whole.out, tol);
            expect_close("dq", tiled.dq, whole.dq, tol);
            expect_close("dk", tiled.dk, whole.dk, tol);
            expect_close("dv", tiled.dv, whole.dv, tol);
        }
}

TEST_CASE("a few query rows (decoding) read keys and values in place: equal to the tiled GEMM path")
{
    // widths that leave SIMD tails: 37 = 2 x 16 + 5, 70 = 4 x 16 + 6, 20 = 16 + 4 (and for AVX2's 8 lanes)
    for (DType dt : {f64, f32})
        for (std::int64_t L : {1, 2, 3, 4})
            for (auto [E, Ev] : {std::pair<std::int64_t, std::int64_t>{37, 70}, {64, 20}})
                for (bool causal : {false, true}) {
                    const Case c{"few rows", L, 9, [causal](DType) { return SdpaOptions{.is_causal = causal}; }};
                    Run tiled, few;
                    {
                        WithBlocking b({.block_q = 2, .block_k = 3, .min_scores = 0});
                        tiled = run(c, dt, E, Ev);
                    }
                    {
                        WithBlocking b({.min_scores = never});
                        few = run(c, dt, E, Ev);
                    }
                    INFO(dtype_name(dt), " L ", L, " E ", E, " Ev ", Ev, " causal ", causal);
                    const auto tol = test::parity_tolerance(dt);
                    expect_close("out", few.out, tiled.out, tol);
                    expect_close("dq", few.dq, tiled.dq, tol);
                    expect_close("dk", few.dk, tiled.dk, tol);
                    expect_close("dv", few.dv, tiled.dv, tol);
                }
}

TEST_CASE("blockwise attention at the default tile sizes: partial tiles, L != S, causal, dropout")
{
    for (bool causal : {false, true})
        for (double p : {0.0, 0.2}) {
            Case c{"default tiles", 70, 150, [=](DType) { return SdpaOptions{.dropout_p = p, .is_causal = causal}; }};
            Run tiled, whole;
            {
                WithBlocking b({.min_scores = 0});
                tiled = run(c, f32, 8, 5);
            }
            {
                WithBlocking b({.min_scores = never});
                whole = run(c, f32, 8, 5);
            }
            INFO("causal ", causal, " dropout ", p);
            expect_close("out", tiled.out, whole.out, test::parity_f32);
            expect_close("dq", tiled.dq, whole.dq, test::parity_f32);
            expect_close("dk", tiled.dk, whole.dk, test::parity_f32);
            expect_close("dv", tiled.dv, whole.dv, test::parity_f32);
        }
}

TEST_CASE("the blockwise path gives the same bits at 1 and 2 threads: output and every gradient")
{
    // dQ gathers every key tile: it must add them in the same order whatever the schedule
    WithBlocking b({.block_q = 16, .block_k = 32, .min_scores = 0});
    Case c{"causal, dropout", 70, 150, [](DType) { return SdpaOptions{.dropout_p = 0.2, .is_causal = true}; }};
    const int saved = get_num_threads();
    set_num_threads(1);
    const Run one = run(c, f32, 8, 5);
    set_num_threads(2);
    const Run two = run(c, f32, 8, 5);
    set_num_threads(saved);
    CHECK(one.out == two.out);
    CHECK(one.dq == two.dq);
    CHECK(one.dk == two.dk);
    CHECK(one.dv == two.dv);
}

TEST_CASE("gradcheck (float64) of the blockwise path: masks, causal, dropout, L != S, partial tiles")
{
    WithBlocking b({.block_q = 2, .block_k = 3, .min_scores = 0});
    for (const Case& c : cases()) {
        manual_seed(5);
        Tensor q = randn({2, c.L, 3}, {.dtype = f64, .requires_grad = true});
        Tensor k = randn({2, c.S, 3}, {.dtype = f64, .requires_grad = true});
        Tensor v = randn({2, c.S, 2}, {.dtype = f64, .requires_grad = true});
        SdpaOptions o = c.options(f64);
        auto res = gradcheck([&](const std::vector<Tensor>& x) { return scaled_dot_product_attention(x[0], x[1], x[2], o).output; },
                             {q, k, v});
        INFO(c.name, ": ", res.message);
        CHECK(res.ok);
        CHECK(res.full_jacobian);
    }
}

TEST_CASE("a fully masked row on the blockwise path gives zeros and zero gradients, never NaN")
{
    WithBlocking b({.block_q = 2, .block_k = 2, .min_scores = 0});
    manual_seed(3);
    Tensor q = randn({1, 3, 4}, {.requires_grad = true}), k = randn({1, 5, 4}, {.requires_grad = true});
    Tensor v = randn({1, 5, 4}, {.requires_grad = true});
    std::vector<bool> m(15, true);
    for (int j = 0; j < 5; ++j) m[5 + j] = false;  // query 1 attends nothing
    Tape tape;
    Tensor out = scaled_dot_product_attention(q, k, v, {.attn_mask = from_vector(m, {3, 5})}).output;
    tape.backward(sum(out));
    for (int e = 0; e < 4; ++e) CHECK(out.at({0, 1, e}) == 0);
    for (int e = 0; e < 4; ++e) CHECK(q.grad().at({0, 1, e}) == 0);
    for (double x : k.grad().tolist()) CHECK(std::isfinite(x));
    for (double x : v.grad().tolist()) CHECK(std::isfinite(x));
}

namespace {
/// Peak allocator bytes above those in use before, over forward + backward of causal
/// self-attention with q, k, v [1, T, 16] float32.
std::size_t attention_peak(std::int64_t T, bool need_weights)
{
    manual_seed(8);
    Tensor q = randn({1, T, 16}, {.requires_grad = true}), k = randn({1, T, 16}, {.requires_grad = true});
    Tensor v = randn({1, T, 16}, {.requires_grad = true});
    const std::size_t before = allocator_stats().bytes_in_use;
    reset_peak_allocator_stats();
    {
        Tape tape;
        auto r = scaled_dot_product_attention(q, k, v, {.is_causal = true, .need_weights = need_weights});
        tape.backward(sum(r.output));
    }
    return allocator_stats().peak_bytes_in_use - before;
}
}  // namespace

TEST_CASE("the blockwise path allocates no L x S buffer: memory grows linearly in the length")
{
    const std::int64_t T = 2048;
    const std::size_t scores = T * T * sizeof(float);  // 16 MiB
    const std::size_t tiled = attention_peak(T, false), tiled2 = attention_peak(2 * T, false);
    const std::size_t whole = attention_peak(T, true);  // weights asked for: materialised
    INFO("peak bytes: blockwise T ", tiled, ", 2T ", tiled2, "; materialised T ", whole, "; one T x T matrix ", scores);
    CHECK(whole >= scores);      // the measurement sees an L x S buffer when there is one
    CHECK(tiled < scores / 8);  // q, k, v-sized buffers and tiles only
    CHECK(tiled2 <= tiled * 9 / 4);  // doubling the length about doubles the memory
}

TEST_CASE("set_attention_blocking rejects bad tile sizes")
{
    CHECK(test::message_of<ValueError>([] { kernels::set_attention_blocking({.block_q = 0}); }) ==
          "set_attention_blocking: block sizes must be >= 1 and min_scores >= 0; got block_q 0, block_k 128 and "
          "min_scores 16384");
    CHECK(kernels::attention_blocking().block_q == 64);  // unchanged by the rejected call
}
