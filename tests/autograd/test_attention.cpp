// The blockwise (flash-attention style) path of scaled_dot_product_attention: equal to the
// materialised path in output and gradients, float64 gradcheck with tiles shrunk so that
// every length leaves a partial tile (masks, causal, dropout, L != S), and memory that grows
// linearly in the sequence length (the caching allocator's peak).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

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

namespace {

/// One run of attention over heads that lie in their sources' columns, by the heads-layout op
/// or by the split-out route (slice, reshape, permute, scaled_dot_product_attention, merge):
/// output, weights and the gradient of every source, from one seed.
struct HeadsRun {
    std::vector<double> out, weights;
    std::vector<std::vector<double>> grads;
};

HeadsRun run_heads(bool fused_op, DType dt, bool batch_first, int sources, const AttentionHeads& h,
                   const std::function<SdpaOptions(std::int64_t N, std::int64_t L, std::int64_t S)>& options)
{
    const std::int64_t N = 3, L = 7, S = sources == 1 ? L : 6, HE = h.heads * h.head_dim;  // one source: self-attention
    manual_seed(5);
    auto src = [&](std::int64_t T, std::int64_t W) {
        return randn(batch_first ? Shape{N, T, W} : Shape{T, N, W}, {.dtype = dt, .requires_grad = true});
    };
    // sources: 1 = q|k|v in one tensor; 2 = q, and k|v in one; 3 = q, k, v apart
    std::vector<Tensor> x;
    if (sources == 1) x = {src(L, 3 * HE + 2)};
    if (sources == 2) x = {src(L, HE + 1), src(S, 2 * HE)};
    if (sources == 3) x = {src(L, HE), src(S, HE + 3), src(S, HE)};
    const Tensor& qs = x[0];
    const Tensor& ks = sources == 1 ? x[0] : x[1];
    const Tensor& vs = sources == 1 ? x[0] : sources == 2 ? x[1] : x[2];
    SdpaOptions o = options(N, L, S);
    Tape tape;
    manual_seed(17);  // the dropout draw
    AttentionOutput r;
    if (fused_op) {
        r = scaled_dot_product_attention_heads(qs, ks, vs, h, o);
    } else {
        auto heads = [&](const Tensor& s, std::int64_t col, std::int64_t T) {
            Tensor b = slice(s, 2, col, col + HE);
            Tensor r4 = reshape(b, batch_first ? std::vector<std::int64_t>{N, T, h.heads, h.head_dim}
                                               : std::vector<std::int64_t>{T, N, h.heads, h.head_dim});
            return batch_first ? permute(r4, {0, 2, 1, 3}) : permute(r4, {1, 2, 0, 3});
        };
        AttentionOutput a = scaled_dot_product_attention(heads(qs, h.q_col, L), heads(ks, h.k_col, S),
                                                         heads(vs, h.v_col, S), o);
        Tensor merged = batch_first ? reshape(permute(a.output, {0, 2, 1, 3}), {N, L, HE})
                                    : reshape(permute(a.output, {2, 0, 1, 3}), {L, N, HE});
        r = {merged, a.weights};
    }
    manual_seed(23);
    Tensor loss = sum(r.output * randn(r.output.shape(), {.dtype = dt}));
    if (r.weights.defined()) loss = loss + sum(r.weights * randn(r.weights.shape(), {.dtype = dt}));
    tape.backward(loss);
    HeadsRun run{r.output.tolist(), r.weights.defined() ? r.weights.tolist() : std::vector<double>{}, {}};
    for (const Tensor& t : x) run.grads.push_back(t.grad().tolist());
    return run;
}

}  // namespace

TEST_CASE("attention over heads in their projections' columns equals the split-out route, bit for bit")
{
    // same GEMMs on the same numbers read with other strides, same dropout draw: equal bits
    struct HCase {
        const char* name;
        int sources;
        AttentionHeads h;
        std::function<SdpaOptions(std::int64_t, std::int64_t, std::int64_t)> options;
    };
    const std::vector<HCase> cases{
        {"fused q|k|v, causal, dropout", 1, {.heads = 2, .head_dim = 3, .q_col = 1, .k_col = 7, .v_col = 13},
         [](std::int64_t, std::int64_t, std::int64_t) { return SdpaOptions{.dropout_p = 0.25, .is_causal = true}; }},
        {"q and k|v, key padding, weights", 2, {.heads = 3, .head_dim = 2, .q_col = 1, .k_col = 0, .v_col = 6},
         [](std::int64_t N, std::int64_t, std::int64_t S) {
             std::vector<double> pad(static_cast<std::size_t>(N * S), 0.0);
             pad[static_cast<std::size_t>(S - 1)] = -INFINITY;  // batch 0's last key
             pad[static_cast<std::size_t>(S + 2)] = -1.5;
             return SdpaOptions{.attn_mask = from_vector(pad, {N, 1, 1, S}), .need_weights = true};
         }},
        {"q, k, v apart, bool mask, dropout, weights", 3, {.heads = 2, .head_dim = 2, .q_col = 0, .k_col = 3, .v_col = 0},
         [](std::int64_t, std::int64_t L, std::int64_t S) {
             std::vector<bool> m(static_cast<std::size_t>(L * S), true);
             for (std::int64_t j = 0; j < S; ++j) m[static_cast<std::size_t>(2 * S + j)] = false;  // query 2 sees nothing
             m[3] = false;
             return SdpaOptions{.attn_mask = from_vector(m, {L, S}), .dropout_p = 0.3, .need_weights = true};
         }},
    };
    for (DType dt : {f32, f64})
        for (bool batch_first : {true, false})
            for (const HCase& c : cases) {
                INFO(std::string(c.name), ", ", dtype_name(dt), ", batch_first ", batch_first);
                AttentionHeads h = c.h;
                h.batch_first = batch_first;
                // the sources above use float64 masks; match the dtype
                auto opts = [&](std::int64_t N, std::int64_t L, std::int64_t S) {
                    SdpaOptions o = c.options(N, L, S);
                    if (o.attn_mask.defined() && o.attn_mask.dtype() != DType::b8) o.attn_mask = to(o.attn_mask, dt);
                    return o;
                };
                const HeadsRun a = run_heads(true, dt, batch_first, c.sources, h, opts);
                const HeadsRun b = run_heads(false, dt, batch_first, c.sources, h, opts);
                CHECK(a.out == b.out);
                CHECK(a.weights == b.weights);
                REQUIRE(a.grads.size() == b.grads.size());
                for (std::size_t i = 0; i < a.grads.size(); ++i) CHECK(a.grads[i] == b.grads[i]);
                // columns outside every head get a zero gradient
                if (c.sources == 1) CHECK(a.grads[0][0] == 0.0);
            }
}

TEST_CASE("attention heads layout: typed errors for sources that do not hold the heads, and for long sequences")
{
    Tensor x = randn({2, 6, 8});
    AttentionHeads h{.heads = 2, .head_dim = 2, .q_col = 0, .k_col = 4, .v_col = 6};  // v's heads end at column 10 > 8
    CHECK_THROWS_WITH_AS(scaled_dot_product_attention_heads(x, x, x, h),
                         doctest::Contains("value source (2, 6, 8) does not hold 2 heads of 2 at column 6"), ShapeError);
    CHECK_THROWS_AS(scaled_dot_product_attention_heads(x, randn({3, 6, 8}), x, {.heads = 2, .head_dim = 2}), ShapeError);
    CHECK_FALSE(attention_heads_supported(4, 64, false));   // a few query rows: the decoding loops
    CHECK_FALSE(attention_heads_supported(128, 128, false));  // the blockwise path
    CHECK(attention_heads_supported(128, 128, true));         // weights asked for: materialised
    Tensor y = randn({1, 200, 12});
    CHECK_THROWS_AS(scaled_dot_product_attention_heads(y, y, y, {.heads = 2, .head_dim = 2, .k_col = 4, .v_col = 8}),
                    ValueError);
}
