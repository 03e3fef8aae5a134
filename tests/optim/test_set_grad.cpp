// Optimizers and clipping on gradients set by hand (Tensor::set_grad, PyTorch's `p.grad = g`):
// what a custom optimizer loop, an external all-reduce or a hand-written accumulation does.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "spool.hpp"

using namespace spool;

namespace {
Tensor f64s(const std::vector<double>& v, bool requires_grad = false)
{
    return from_vector(v, {static_cast<std::int64_t>(v.size())}, {.dtype = f64, .requires_grad = requires_grad});
}
}  // namespace

TEST_CASE("SGD and Adam step on a gradient given by set_grad")
{
    Tensor p = f64s({1, 2, 3}, true);
    optim::SGD sgd({p}, {.lr = 0.1});
    p.set_grad(f64s({1, -2, 0.5}));
    sgd.step();
    CHECK(p.tolist() == std::vector<double>{1 - 0.1 * 1, 2 + 0.1 * 2, 3 - 0.1 * 0.5});

    // Adam's first step: m̂ = g, v̂ = g², so p −= lr · g / (|g| + eps)
    Tensor q = f64s({1, 2}, true);
    optim::Adam adam({q}, {.lr = 0.01, .eps = 1e-8});
    q.set_grad(f64s({4, -0.25}));
    adam.step();
    CHECK(q.at(0) == doctest::Approx(1 - 0.01 * 4 / (4 + 1e-8)).epsilon(1e-15));
    CHECK(q.at(1) == doctest::Approx(2 + 0.01 * 0.25 / (0.25 + 1e-8)).epsilon(1e-15));

    // a cleared gradient is skipped, as PyTorch skips p.grad = None
    q.set_grad(Tensor());
    const std::vector<double> before = q.tolist();
    adam.step();
    CHECK(q.tolist() == before);
}

TEST_CASE("clip_grad_norm and zero_grad(false) leave the tensor given to set_grad unchanged")
{
    Tensor p = f64s({0, 0}, true);
    Tensor g = f64s({3, 4});  // norm 5
    p.set_grad(g);
    const double norm = optim::clip_grad_norm({p}, 1.0);
    CHECK(norm == doctest::Approx(5.0));
    CHECK(p.grad().at(0) == doctest::Approx(0.6).epsilon(1e-6));
    CHECK(p.grad().at(1) == doctest::Approx(0.8).epsilon(1e-6));
    CHECK(g.tolist() == std::vector<double>{3, 4});

    optim::SGD sgd({p}, {.lr = 1});
    p.set_grad(g);
    sgd.zero_grad(/*set_to_none=*/false);
    CHECK(p.grad().tolist() == std::vector<double>{0, 0});
    CHECK(g.tolist() == std::vector<double>{3, 4});
}

TEST_CASE("an all-reduce by hand over two module replicas gives one update equal to the full batch's")
{
    manual_seed(5);
    nn::Linear full({.in_features = 3, .out_features = 2, .dtype = f64});
    auto r0 = full.clone_as(), r1 = full.clone_as();
    Tensor x = randn({4, 3}, {.dtype = f64}), y = randn({4, 2}, {.dtype = f64});
    auto step = [](nn::Linear& m, const Tensor& xs, const Tensor& ys) {
        Tape tape;
        losses::mse_loss(m(xs), ys).backward();
    };
    step(full, x, y);
    step(*r0, slice(x, 0, 0, 2), slice(y, 0, 0, 2));
    step(*r1, slice(x, 0, 2, 4), slice(y, 0, 2, 4));
    optim::SGD o0(r0->parameters(), {.lr = 0.5}), o1(r1->parameters(), {.lr = 0.5}), of(full.parameters(), {.lr = 0.5});
    auto p0 = r0->parameters(), p1 = r1->parameters();
    for (std::size_t i = 0; i < p0.size(); ++i) {
        Tensor avg = (p0[i].grad() + p1[i].grad()) * 0.5;
        p0[i].set_grad(avg);
        p1[i].set_grad(Tensor(avg.value().clone()));  // each rank holds its own copy
    }
    o0.step();
    o1.step();
    of.step();
    const auto pf = full.parameters();
    for (std::size_t i = 0; i < pf.size(); ++i)
        for (std::int64_t j = 0; j < pf[i].numel(); ++j) {
            CHECK(p0[i].at(j) == doctest::Approx(pf[i].at(j)).epsilon(1e-13));
            CHECK(p1[i].at(j) == p0[i].at(j));
        }
}
