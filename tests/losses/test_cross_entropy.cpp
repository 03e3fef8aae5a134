// The fused cross-entropy: its gradient identity (softmax − q)/M checked directly, the SIMD
// kernel against a scalar double reference at tail sizes, extreme logits, every target
// ignored, the streaming-store path, thread-count independence, memory held, and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "messages.hpp"
#include "spool.hpp"
#include "tolerances.hpp"

using namespace spool;

namespace {

using test::message_of;

Tensor labels(const std::vector<std::int64_t>& v, const Shape& s) { return from_vector(v, s); }

/// Softmax of row i of z [N, C], in double.
std::vector<double> softmax_row(const Tensor& z, std::int64_t i)
{
    const std::int64_t C = z.shape()[1];
    double m = -INFINITY, s = 0;
    for (std::int64_t c = 0; c < C; ++c) m = std::max(m, z.at(i * C + c));
    std::vector<double> p(C);
    for (std::int64_t c = 0; c < C; ++c) s += p[c] = std::exp(z.at(i * C + c) - m);
    for (auto& v : p) v /= s;
    return p;
}

/// PyTorch's per-row loss from the definition, in double: −Σ_c q_c log p_c with
/// q_c = (1 − ε) w_y [c = y] + (ε/C) w_c.
double reference_row(const Tensor& z, std::int64_t i, std::int64_t y, double eps, const std::vector<double>& w)
{
    const std::int64_t C = z.shape()[1];
    const auto p = softmax_row(z, i);
    double l = 0;
    for (std::int64_t c = 0; c < C; ++c) {
        const double wc = w.empty() ? 1.0 : w[c], wy = w.empty() ? 1.0 : w[y];
        l -= ((1 - eps) * wy * (c == y) + eps / static_cast<double>(C) * wc) * std::log(p[c]);
    }
    return l;
}

}  // namespace

TEST_CASE("dCE/dlogits = (softmax - q) / M for label-smoothed cross-entropy, checked directly")
{
    manual_seed(11);
    const std::int64_t N = 6, C = 9;
    const double eps = 0.1;
    const std::vector<std::int64_t> y{4, -100, 0, 8, -100, 4};
    for (DType dt : {f64, f32}) {
        CAPTURE(dtype_name(dt));
        Tensor z = (randn({N, C}, {.dtype = dt}) * 3.0).detach().requires_grad_();
        Tape tape;
        tape.backward(cross_entropy(z, labels(y, {N}), {.label_smoothing = eps}));
        const double M = 4;  // non-ignored targets
        for (std::int64_t i = 0; i < N; ++i) {
            const auto p = softmax_row(z, i);
            for (std::int64_t c = 0; c < C; ++c) {
                const double q = (1 - eps) * (c == y[i]) + eps / C;
                const double want = y[i] == -100 ? 0.0 : (p[c] - q) / M;
                CHECK_MESSAGE(test::close(z.grad().at(i * C + c), want, test::parity_tolerance(dt)), "dz[", i, ", ", c,
                              "] = ", z.grad().at(i * C + c), ", (softmax - q)/M = ", want);
            }
        }
    }
}

TEST_CASE("weighted identity: dz = (mass * softmax - q) / sum of target weights")
{
    manual_seed(12);
    const std::int64_t N = 5, C = 4;
    const double eps = 0.2;
    const std::vector<double> w{0.5, 2.0, 1.0, 3.0};
    const std::vector<std::int64_t> y{1, 3, -100, 0, 1};
    Tensor z = randn({N, C}, {.dtype = f64, .requires_grad = true});
    Tape tape;
    tape.backward(cross_entropy(z, labels(y, {N}), {.weight = from_vector(w, {C}, {.dtype = f64}), .label_smoothing = eps}));
    double W = 0, total = 0;
    for (double v : w) W += v;
    for (auto t : y)
        if (t >= 0) total += w[t];
    for (std::int64_t i = 0; i < N; ++i) {
        const auto p = softmax_row(z, i);
        for (std::int64_t c = 0; c < C; ++c) {
            double want = 0;
            if (y[i] >= 0) {
                const double mass = (1 - eps) * w[y[i]] + eps / C * W;
                const double q = (1 - eps) * w[y[i]] * (c == y[i]) + eps / C * w[c];
                want = (mass * p[c] - q) / total;
            }
            CHECK(z.grad().at(i * C + c) == doctest::Approx(want).epsilon(1e-13));
        }
    }
}

TEST_CASE("the SIMD kernel matches a scalar double reference at tail sizes: values and gradients")
{
    manual_seed(13);
    for (DType dt : {f32, f64})
        for (std::int64_t C : {1, 7, 8, 9, 15, 16, 17, 31, 33, 1000}) {
            for (bool weighted : {false, true}) {
                CAPTURE(dtype_name(dt));
                CAPTURE(C);
                CAPTURE(weighted);
                const std::int64_t N = 3;
                const double eps = 0.1;
                Tensor z = (randn({N, C}, {.dtype = dt}) * 4.0).detach().requires_grad_();
                std::vector<double> w;
                for (std::int64_t c = 0; weighted && c < C; ++c) w.push_back(0.5 + static_cast<double>(c % 3));
                const std::vector<std::int64_t> y{0, C - 1, C / 2};
                CrossEntropyOptions o{.reduction = Reduction::sum, .label_smoothing = eps};
                if (weighted) o.weight = from_vector(w, {C}, {.dtype = dt});
                Tape tape;
                const Tensor l = cross_entropy(z, labels(y, {N}), o);
                tape.backward(l);
                double want_sum = 0, W = 0;
                for (std::int64_t c = 0; c < C; ++c) W += weighted ? w[c] : 1.0;
                for (std::int64_t i = 0; i < N; ++i) {
                    want_sum += reference_row(z, i, y[i], eps, w);
                    // dz = mass softmax − q, mass = (1 − ε) w_y + (ε/C) W
                    const auto p = softmax_row(z, i);
                    const double wy = weighted ? w[y[i]] : 1.0, mass = (1 - eps) * wy + eps / C * W;
                    for (std::int64_t c = 0; c < C; ++c) {
                        const double q = (1 - eps) * wy * (c == y[i]) + eps / C * (weighted ? w[c] : 1.0);
                        const double got = z.grad().at(i * C + c), want = mass * p[c] - q;
                        CHECK_MESSAGE(test::close(got, want, test::parity_tolerance(dt)), "dz[", i, ", ", c, "] = ", got,
                                      ", reference ", want);
                    }
                }
                CHECK_MESSAGE(test::close(l.item(), want_sum, test::parity_tolerance(dt)), l.item(), " vs ", want_sum);
            }
        }
}

TEST_CASE("logits of +-1000 give finite, exact values and gradients")
{
    // row [1000, -1000, 0]: p = (1, 0, 0) to double precision
    Tensor z = from_vector(std::vector<double>{1000, -1000, 0, 1000, -1000, 0, 1000, -1000, 0}, {3, 3}).requires_grad_();
    const Tensor y = labels({0, 1, 2}, {3});
    Tape tape;
    const Tensor l = cross_entropy(z, y, {.reduction = Reduction::none});
    CHECK(l.at(0) == 0.0);
    CHECK(l.at(1) == doctest::Approx(2000.0));
    CHECK(l.at(2) == doctest::Approx(1000.0));
    // with smoothing 0.1 each row adds (0.1/3)(0 + 2000 + 1000) = 100 to 0.9 times its loss: 100 + 1900 + 1000
    const Tensor ls = cross_entropy(z, y, {.reduction = Reduction::sum, .label_smoothing = 0.1});
    CHECK(ls.item() == doctest::Approx(3000.0));
    tape.backward(ls);
    for (double g : z.grad().tolist()) CHECK(std::isfinite(g));
    CHECK(z.grad().at(0) == doctest::Approx(1 - (0.9 + 0.1 / 3)));  // p - q at the target
    CHECK(z.grad().at(1) == doctest::Approx(-0.1 / 3));
}

TEST_CASE("every target ignored: loss 0 and zero gradients (PyTorch gives NaN)")
{
    for (Reduction r : {Reduction::mean, Reduction::sum, Reduction::none}) {
        CAPTURE(reduction_name(r));
        Tensor z = randn({3, 4}, {.requires_grad = true});
        Tape tape;
        const Tensor l = cross_entropy(z, labels({-100, -100, -100}, {3}), {.reduction = r, .label_smoothing = 0.1});
        for (double v : l.tolist()) CHECK(v == 0.0);
        tape.backward(sum(l));
        for (double g : z.grad().tolist()) CHECK(g == 0.0);
    }
}

TEST_CASE("large gradients take the streaming-store path and stay exact (odd C: unaligned rows)")
{
    manual_seed(14);
    const std::int64_t N = 129, C = 32771;  // 16.9 MB of float32 gradient
    Tensor z = (randn({N, C}) * 2.0).detach().requires_grad_();
    std::vector<std::int64_t> y(N);
    for (std::int64_t i = 0; i < N; ++i) y[i] = (i * 7919) % C;
    Tape tape;
    tape.backward(cross_entropy(z, labels(y, {N}), {.label_smoothing = 0.1}));
    const Tensor g = z.grad();
    for (std::int64_t i : {std::int64_t{0}, std::int64_t{1}, std::int64_t{64}, N - 1}) {
        const auto p = softmax_row(z, i);
        std::vector<double> want(C);
        double scale = 0;  // the row's largest entry: float32 gradients are exact relative to it
        for (std::int64_t c = 0; c < C; ++c) {
            want[c] = (p[c] - (0.9 * (c == y[i]) + 0.1 / C)) / N;
            scale = std::max(scale, std::abs(want[c]));
        }
        const test::Tolerance tol{.rtol = test::parity_f32.rtol, .atol = test::parity_f32.rtol * scale};
        int bad = 0;
        for (std::int64_t c = 0; c < C; ++c) bad += !test::close(g.at(i * C + c), want[c], tol);
        CHECK_MESSAGE(bad == 0, "row ", i, ": ", bad, " gradient entries differ from (softmax - q)/N");
    }
}

TEST_CASE("results do not depend on the thread count")
{
    manual_seed(15);
    const Tensor z0 = randn({64, 1000});
    const Tensor y = labels(std::vector<std::int64_t>(64, 3), {64});
    std::vector<std::vector<double>> values, grads;
    const int saved = get_num_threads();
    for (int t : {1, 2}) {
        set_num_threads(t);
        Tensor z = z0.detach().requires_grad_();
        Tape tape;
        const Tensor l = cross_entropy(z, y, {.label_smoothing = 0.1});
        tape.backward(l);
        values.push_back(l.tolist());
        grads.push_back(z.grad().tolist());
    }
    set_num_threads(saved);
    CHECK(values[0] == values[1]);
    CHECK(grads[0] == grads[1]);
}

TEST_CASE("memory: one [N, C] buffer in all — the gradient, written by the forward, handed to backward")
{
    const std::int64_t N = 256, C = 4096;  // 4 MiB of logits
    const std::size_t grad_bytes = static_cast<std::size_t>(N * C) * sizeof(float);
    Tensor z = randn({N, C}, {.requires_grad = true});
    const Tensor y = labels(std::vector<std::int64_t>(N, 1), {N});
    const std::size_t before = allocator_stats().bytes_in_use;
    {
        Tape tape;
        const Tensor l = cross_entropy(z, y, {.label_smoothing = 0.1});
        CHECK(allocator_stats().bytes_in_use - before < grad_bytes + (std::size_t{64} << 10));
        CHECK(tape.stats().saved_bytes == grad_bytes);  // not even the logits: backward does not read them
        tape.backward(l);
        CHECK(allocator_stats().bytes_in_use - before < grad_bytes + (std::size_t{64} << 10));
    }
    CHECK(allocator_stats().bytes_in_use - before == grad_bytes);
    // without a tape (evaluation) nothing of size [N, C] is allocated
    const Tensor l = cross_entropy(z, y, {.label_smoothing = 0.1});
    CHECK(allocator_stats().bytes_in_use - before < grad_bytes + (std::size_t{64} << 10));
}

TEST_CASE("probability targets get gradients too: dt = -(1 - eps) log_softmax(z) / N")
{
    manual_seed(16);
    Tensor z = randn({3, 4}, {.dtype = f64, .requires_grad = true});
    Tensor t = softmax(randn({3, 4}, {.dtype = f64}), 1).detach().requires_grad_();
    Tape tape;
    tape.backward(cross_entropy(z, t, {.label_smoothing = 0.2}));
    const Tensor lp = log_softmax(z.detach(), 1);
    for (std::int64_t i = 0; i < 12; ++i) CHECK(t.grad().at(i) == doctest::Approx(-0.8 * lp.at(i) / 3).epsilon(1e-13));
}

TEST_CASE("cross_entropy errors name the loss, the value and the shapes")
{
    const Tensor z = zeros({2, 3});
    CHECK(message_of<ValueError>([&] { cross_entropy(z, labels({0, 3}, {2})); }) ==
          "cross_entropy: target 3 at position 1 is out of bounds for 3 classes (and is not ignore_index -100); got "
          "input (2, 3) and target (2,)");
    CHECK(message_of<ValueError>([&] { cross_entropy(z, labels({-1, 0}, {2})); }) ==
          "cross_entropy: target -1 at position 0 is out of bounds for 3 classes (and is not ignore_index -100); got "
          "input (2, 3) and target (2,)");
    CHECK(message_of<ShapeError>([&] { cross_entropy(z, labels({0, 1, 2}, {3})); }) ==
          "cross_entropy: expected target of shape (2,) for input (2, 3); got target (3,)");
    // sequence logits with classes last: the message says what to do
    CHECK(message_of<ShapeError>([] { cross_entropy(zeros({2, 5, 7}), zeros({2, 5}, {.dtype = i64})); }) ==
          "cross_entropy: expected target of shape (2, 7) for input (2, 5, 7); got target (2, 5). Classes are "
          "dim 1, as in PyTorch: for logits with classes last flatten them to (N*T, C) and the target to (N*T), "
          "or permute the logits to (N, C, T)");
    CHECK(message_of<ShapeError>([&] { cross_entropy(z, zeros({2, 4})); }) ==
          "cross_entropy: class probabilities must have the input's shape; got input (2, 3) and target (2, 4) (class "
          "indices would be int64 of shape (2,))");
    CHECK(message_of<TypeError>([&] { cross_entropy(z, from_vector(std::vector<bool>{true, false}, {2})); }) ==
          "cross_entropy: class-index targets must be int64; got bool target (2,) for input (2, 3)");
    CHECK(message_of<ValueError>([&] { cross_entropy(z, labels({0, 1}, {2}), {.label_smoothing = -0.1}); }) ==
          "cross_entropy: label_smoothing must be in [0, 1); got -0.1");
    CHECK(message_of<ValueError>([&] { cross_entropy(z, labels({0, 1}, {2}), {.label_smoothing = 1.0}); }) ==
          "cross_entropy: label_smoothing must be in [0, 1); got 1");
    CHECK(message_of<ValueError>([&] { cross_entropy(z, labels({0, 1}, {2}), {.weight = ones({2})}); }) ==
          "cross_entropy: weight must have shape (3,) (one per class) and the input's dtype float32; got weight (2,) "
          "float32 for input (2, 3)");
    CHECK(message_of<ValueError>([&] { cross_entropy(z, zeros({2, 3}), {.ignore_index = 0}); }) ==
          "cross_entropy: ignore_index is not supported for class-probability targets; got ignore_index 0");
    CHECK(message_of<ValueError>([&] { cross_entropy(z, labels({0, 1}, {2}), {.reduction = Reduction::batchmean}); }) ==
          "cross_entropy: reduction 'batchmean' is kl_div's only; use none, mean or sum");
    CHECK(message_of<ValueError>([&] { losses::CrossEntropy({.label_smoothing = 1.5}); }) ==
          "cross_entropy: label_smoothing must be in [0, 1); got 1.5");
    CHECK(message_of<ValueError>([&] { parse_reduction("avg", "cross_entropy"); }) ==
          "cross_entropy: reduction must be none, mean, sum or batchmean; got 'avg'");
}
