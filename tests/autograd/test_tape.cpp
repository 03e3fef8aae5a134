// The tape's rules (docs/autograd.md, "The tape"): what is recorded, accumulation, release.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "spool.hpp"
#include "tensor/kernels.hpp"

using namespace spool;

TEST_CASE("no tape, no recording; a tape records only ops on inputs that require grad")
{
    Tensor w = from_vector(std::vector<double>{1, 2, 3}, {3}, {.requires_grad = true});
    Tensor c = from_vector(std::vector<double>{4, 5, 6}, {3});
    Tensor y = w * c;
    CHECK_FALSE(y.requires_grad());  // no tape alive
    Tape tape;
    Tensor z = c * 2.0;
    CHECK_FALSE(z.requires_grad());
    CHECK(tape.stats().nodes == 0);
    Tensor l = sum(w * c);
    CHECK(l.requires_grad());
    CHECK(tape.stats().nodes == 2);
    tape.backward(l);
    CHECK(w.grad().tolist() == std::vector<double>{4, 5, 6});
}

TEST_CASE("gradients accumulate across tapes until zero_grad")
{
    Tensor w = from_vector(std::vector<double>{1, -2}, {2}, {.dtype = f64, .requires_grad = true});
    for (int step = 0; step < 3; ++step) {
        Tape tape;
        Tensor l = sum(w * w);
        l.backward();
    }
    CHECK(w.grad().tolist() == std::vector<double>{6, -12});  // 3 x 2w
    w.zero_grad();
    CHECK_FALSE(w.grad().defined());
}

TEST_CASE("a tensor used twice gets both contributions")
{
    Tensor x = from_vector(std::vector<double>{3}, {1}, {.dtype = f64, .requires_grad = true});
    Tape tape;
    Tensor y = x * x + exp(x) * x;  // dy/dx = 2x + e^x (1 + x)
    tape.backward(sum(y));
    CHECK(x.grad().item() == doctest::Approx(6 + std::exp(3.0) * 4));
}

TEST_CASE("NoGrad pauses recording, detach cuts the graph")
{
    Tensor x = from_vector(std::vector<double>{2}, {1}, {.requires_grad = true});
    Tape tape;
    {
        NoGrad ng;
        Tensor y = x * 3.0;
        CHECK_FALSE(y.requires_grad());
    }
    Tensor d = x.detach();
    CHECK_FALSE(d.requires_grad());
    Tensor y = x * d;  // d is a constant here
    tape.backward(sum(y));
    CHECK(x.grad().item() == 2);
}

TEST_CASE("saved tensors are released as backward consumes them; stats report them")
{
    Tensor x = randn({64, 64}, {.requires_grad = true});
    Tape tape;
    Tensor h = tanh(matmul(x, x));
    Tensor l = sum(h);
    auto before = tape.stats();
    CHECK(before.nodes == 3);
    CHECK(before.live_nodes == 3);
    CHECK(before.saved_bytes >= 3 * 64 * 64 * 4);  // matmul saves x twice, tanh saves h
    tape.backward(l);
    auto after = tape.stats();
    CHECK(after.live_nodes == 0);
    CHECK(after.saved_bytes == 0);
    CHECK(x.grad().shape() == Shape({64, 64}));
}

TEST_CASE("seeded backward of a non-scalar output")
{
    Tensor x = from_vector(std::vector<double>{1, 2, 3}, {3}, {.dtype = f64, .requires_grad = true});
    Tape tape;
    Tensor y = x * x;
    tape.backward(y, from_vector(std::vector<double>{1, 0, 2}, {3}, {.dtype = f64}));
    CHECK(x.grad().tolist() == std::vector<double>{2, 0, 12});
}

TEST_CASE("nested tapes record on the innermost")
{
    Tensor x = from_vector(std::vector<double>{1}, {1}, {.dtype = f64, .requires_grad = true});
    Tape outer;
    Tensor a = x * 2.0;
    {
        Tape inner;
        CHECK(Tape::current() == &inner);
        Tensor b = exp(x);
        inner.backward(sum(b));
    }
    CHECK(Tape::current() == &outer);
    CHECK(x.grad().item() == doctest::Approx(std::exp(1.0)));
    outer.backward(sum(a));
    CHECK(x.grad().item() == doctest::Approx(std::exp(1.0) + 2));
}

TEST_CASE("dropout is reproducible under manual_seed and identity in eval")
{
    Tensor x = ones({1000});
    manual_seed(3);
    auto a = dropout(x, 0.5).tolist();
    manual_seed(3);
    auto b = dropout(x, 0.5).tolist();
    CHECK(a == b);
    CHECK(dropout(x, 0.5, false).same(x));
    int zeros = 0;
    for (double v : a) zeros += v == 0;
    CHECK(zeros > 400);
    CHECK(zeros < 600);
}

TEST_CASE("dropout draws the mask dropout_mask draws and saves it as one bit per element for backward")
{
    // same numbers as the float-mask formulation x * m, dx = dy * m, with 8 bytes saved per
    // 64 elements (3003 elements: 47 words, the last one partly used)
    for (DType dt : {f32, f64}) {
        manual_seed(11);
        Tensor x = randn({3, 1001}, {.dtype = dt, .requires_grad = true});
        Tensor w = randn({3, 1001}, {.dtype = dt});
        const RngState before = get_rng_state();
        Tape tape;
        Tensor y = dropout(x, 0.3);
        CHECK(tape.stats().saved_bytes == 47 * 8);
        tape.backward(sum(y * w));
        set_rng_state(before);
        const Value m = kernels::dropout_mask(x.shape(), dt, 0.3);
        CHECK(y.tolist() == Tensor(kernels::mul(x.value(), m)).tolist());
        CHECK(x.grad().tolist() == Tensor(kernels::mul(w.value(), m)).tolist());
    }
    // NaN and inf in x propagate through dropped positions as x * 0 does
    Tensor z = from_vector(std::vector<double>(64, std::nan("")), {64});
    for (double v : dropout(z, 0.5).tolist()) CHECK(std::isnan(v));
}

TEST_CASE("relu_dropout equals dropout(relu(x)) bit for bit: values, gradients, NaN, inf and the draw")
{
    for (DType dt : {f32, f64}) {
        manual_seed(3);
        Tensor x0 = randn({5, 301}, {.dtype = dt});
        std::vector<double> v = x0.tolist();
        v[0] = std::nan("");
        v[1] = INFINITY;
        v[2] = -INFINITY;
        v[3] = 0.0;
        v[4] = -0.0;
        std::vector<double> g(v.size());
        for (std::size_t i = 0; i < g.size(); ++i) g[i] = std::sin(double(i));
        g[7] = std::nan("");  // a NaN gradient reaches dx where x > 0, kept or dropped, as in the composition
        g[11] = INFINITY;
        auto run = [&](bool fused) {
            Tensor x = from_vector(v, {5, 301}, {.dtype = dt, .requires_grad = true});
            Tensor w = from_vector(g, {5, 301}, {.dtype = dt});
            manual_seed(41);
            Tape tape;
            Tensor y = fused ? relu_dropout(x, 0.4) : dropout(relu(x), 0.4);
            tape.backward(sum(y * w));
            return std::pair{y.tolist(), x.grad().tolist()};
        };
        const auto a = run(true), b = run(false);
        const auto same = [](const std::vector<double>& p, const std::vector<double>& q) {
            if (p.size() != q.size()) return false;
            for (std::size_t i = 0; i < p.size(); ++i)
                if (!(p[i] == q[i] || (std::isnan(p[i]) && std::isnan(q[i]))) || std::signbit(p[i]) != std::signbit(q[i]))
                    return false;
            return true;
        };
        CHECK(same(a.first, b.first));
        CHECK(same(a.second, b.second));
        // eval mode and p == 0 are relu
        Tensor x = from_vector(v, {5, 301}, {.dtype = dt});
        CHECK(same(relu_dropout(x, 0.4, false).tolist(), relu(x).tolist()));
        CHECK(same(relu_dropout(x, 0.0).tolist(), relu(x).tolist()));
    }
    CHECK_THROWS_AS(relu_dropout(randn({3}), 1.0), ValueError);
}

TEST_CASE("anomaly mode names the op that produced NaN")
{
    detect_anomaly(true);
    Tensor x = from_vector(std::vector<double>{-1}, {1}, {.requires_grad = true});
    try {
        Tape tape;
        Tensor y = log(x);
        FAIL("expected anomaly error");
    } catch (const ValueError& e) {
        CHECK(std::string(e.what()).find("log: output contains NaN (anomaly mode)") == 0);
    }
    // backward: sqrt(0) is fine forward, its gradient 1/(2*0) is Inf
    Tensor z = zeros({1}, {.requires_grad = true});
    try {
        Tape tape;
        Tensor y = sqrt(z);
        tape.backward(sum(y));
        FAIL("expected anomaly error");
    } catch (const ValueError& e) {
        CHECK(std::string(e.what()).find("sqrt: gradient contains NaN or Inf") == 0);
    }
    // an infinite forward value is not an anomaly (masks hold −inf), its infinite gradient is
    Tensor w = zeros({2}, {.requires_grad = true});
    {
        Tape tape;
        Tensor y = log(w);  // −inf, no error
        CHECK(std::isinf(y.at(0)));
        Tensor mask = full({2}, -INFINITY);  // unrecorded −inf: no error either
        CHECK(std::isinf(mask.at(1)));
        try {
            tape.backward(sum(y));
            FAIL("expected anomaly error");
        } catch (const ValueError& e) {
            CHECK(std::string(e.what()).find("log: gradient contains NaN or Inf") == 0);
        }
    }
    detect_anomaly(false);
    Tensor y = log(x);  // off again: NaN is a value, not an error
    CHECK(std::isnan(y.item()));
}

TEST_CASE("matmul follows torch.matmul for 1-D operands")
{
    Tensor a = from_vector(std::vector<double>{1, 2}, {2});
    Tensor m = from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
    CHECK(matmul(a, a).shape() == Shape{});
    CHECK(matmul(a, a).item() == 5);
    CHECK(matmul(a, m).tolist() == std::vector<double>{7, 10});
    CHECK(matmul(m, a).tolist() == std::vector<double>{5, 11});
}

TEST_CASE("two leaves never share one gradient buffer")
{
    Tensor a = ones({3}, {.requires_grad = true}), b = ones({3}, {.requires_grad = true});
    Tape tape;
    tape.backward(sum((a + b) * 3.0));  // add hands the same dy to both inputs
    CHECK_FALSE(a.grad().value().shares_storage(b.grad().value()));
    CHECK(a.grad().tolist() == std::vector<double>{3, 3, 3});
    CHECK(b.grad().tolist() == std::vector<double>{3, 3, 3});
}

TEST_CASE("a gradient-ready hook fires once per leaf, when its last contribution is in, before commit")
{
    // x is used by the first op and by the last; w only by the last: backward completes w's
    // gradient first, x's only after the first op's backward
    Tensor x = from_vector(std::vector<double>{1, 2}, {2}, {.requires_grad = true});
    Tensor w = from_vector(std::vector<double>{5, 7}, {2}, {.requires_grad = true});
    Tensor unused = from_vector(std::vector<double>{0}, {1}, {.requires_grad = true});
    std::vector<std::string> order;
    std::vector<double> x_seen;
    bool x_grad_defined_then = true;
    const auto hx = add_grad_ready_hook(x, [&](const Value& g) {
        order.push_back("x");
        x_seen = {g.at(0), g.at(1)};
        x_grad_defined_then = x.grad().defined();
    });
    const auto hw = add_grad_ready_hook(w, [&](const Value&) { order.push_back("w"); });
    const auto hu = add_grad_ready_hook(unused, [&](const Value&) { order.push_back("unused"); });
    {
        Tape tape;
        Tensor y = x * 3.0;         // dx += 3 · dy
        Tensor l = sum(y * w + x);  // dy = w, dx += 1, dw = y
        tape.backward(l);
    }
    CHECK(order == std::vector<std::string>{"w", "x"});  // unused got no gradient: no call
    CHECK(x_seen == std::vector<double>{16, 22});        // both contributions: 3 · w + 1
    CHECK_FALSE(x_grad_defined_then);                    // committed only after the pass
    CHECK(x.grad().tolist() == x_seen);

    // removed hooks stay quiet; a hook that throws aborts backward and leaves grads unchanged
    remove_grad_ready_hook(x, hx);
    remove_grad_ready_hook(w, hw);
    const auto hthrow = add_grad_ready_hook(w, [](const Value&) { throw ValueError("hook failed"); });
    order.clear();
    {
        Tape tape;
        Tensor l = sum(x * w);
        CHECK_THROWS_WITH_AS(tape.backward(l), "hook failed", ValueError);
    }
    CHECK(order.empty());
    CHECK(x.grad().tolist() == x_seen);
    CHECK(w.grad().tolist() == std::vector<double>{3, 6});
    Tensor y = x * 2.0;
    CHECK_THROWS_WITH_AS(add_grad_ready_hook(y, [](const Value&) {}),
                         "add_grad_ready_hook: the tensor must be a leaf that requires grad (a parameter)",
                         AutogradError);
    remove_grad_ready_hook(unused, hu);
    remove_grad_ready_hook(w, hthrow);
}
