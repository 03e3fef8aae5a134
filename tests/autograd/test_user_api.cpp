// Tensor API that users reach for directly (issue 11): set_grad (PyTorch's `p.grad = g`) and
// exact element access of integer tensors (tolist<T>(), item<T>()). The optimizers reading a
// set gradient are tested in tests/optim/test_set_grad.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using spool::test::message_of;

namespace {
Tensor f64s(const std::vector<double>& v, bool requires_grad = false)
{
    return from_vector(v, {static_cast<std::int64_t>(v.size())}, {.dtype = f64, .requires_grad = requires_grad});
}
}  // namespace

// ---- set_grad ----------------------------------------------------------------------------------

TEST_CASE("set_grad: backward adds to a set gradient, and the tensor given stays unchanged")
{
    Tensor w = f64s({1, -2, 3}, true);
    Tensor g0 = f64s({10, 20, 30});
    w.set_grad(g0);
    CHECK(w.grad().tolist() == std::vector<double>{10, 20, 30});
    CHECK(w.grad().value().shares_storage(g0.value()));  // p.grad = g: the same data, like PyTorch
    {
        Tape tape;
        sum(w * f64s({4, 5, 6})).backward();
    }
    CHECK(w.grad().tolist() == std::vector<double>{14, 25, 36});
    CHECK(g0.tolist() == std::vector<double>{10, 20, 30});  // accumulation continued in a copy
    w.set_grad(Tensor());  // p.grad = None
    CHECK_FALSE(w.grad().defined());
}

TEST_CASE("set_grad: custom accumulation — a running sum built by hand equals the tape's own")
{
    // two backward passes accumulated by the tape ...
    Tensor a = f64s({0.5, -1.5}, true);
    for (double s : {2.0, -3.0}) {
        Tape tape;
        sum(tanh(a * s)).backward();
    }
    // ... and the same two gradients computed separately and summed by the user
    Tensor b = f64s({0.5, -1.5}, true);
    Tensor total;
    for (double s : {2.0, -3.0}) {
        Tape tape;
        sum(tanh(b * s)).backward();
        total = total.defined() ? (total + b.grad()) : b.grad().detach();
        b.zero_grad();
    }
    b.set_grad(total);
    CHECK(b.grad().tolist() == a.grad().tolist());
}

TEST_CASE("set_grad: manual all-reduce — averaging two replicas' gradients gives the full batch's")
{
    const std::vector<double> x = {0.3, -1.2, 2.0, 0.7}, y = {1.0, 0.0, -1.0, 2.0};
    auto loss_on = [&](const Tensor& w, std::size_t begin, std::size_t end) {  // mean squared error on x[begin, end)
        std::vector<double> xs(x.begin() + begin, x.begin() + end), ys(y.begin() + begin, y.begin() + end);
        return mean(pow(f64s(xs) * w - f64s(ys), 2.0));
    };
    Tensor whole = f64s({0.8}, true), r0 = f64s({0.8}, true), r1 = f64s({0.8}, true);
    {
        Tape tape;
        loss_on(whole, 0, 4).backward();
    }
    {
        Tape tape;
        loss_on(r0, 0, 2).backward();
    }
    {
        Tape tape;
        loss_on(r1, 2, 4).backward();
    }
    Tensor avg = (r0.grad() + r1.grad()) * 0.5;  // what an all-reduce (sum) / world size gives
    r0.set_grad(avg);
    r1.set_grad(avg);
    // d/dw mean((xw − y)²) = 2·mean(x(xw − y)) = 2 · 5.116 / 4 at w = 0.8; the replicas had 0.924 and 4.192
    CHECK(r0.grad().item() == doctest::Approx(whole.grad().item()).epsilon(1e-14));
    CHECK(r1.grad().item() == doctest::Approx(2.558).epsilon(1e-12));
}

TEST_CASE("set_grad: wrong shape, dtype or target name both sides")
{
    Tensor w = zeros({2, 3}, {.requires_grad = true});
    CHECK(message_of<ShapeError>([&] { w.set_grad(zeros({3, 2})); }) ==
          "set_grad: the gradient must have the tensor's shape; got gradient (3, 2) for tensor (2, 3)");
    CHECK(message_of<TypeError>([&] { w.set_grad(zeros({2, 3}, {.dtype = f64})); }) ==
          "set_grad: the gradient must have the tensor's dtype; got gradient float64 for tensor float32");
    CHECK(message_of<TypeError>([&] { zeros({2}, {.dtype = i64}).set_grad(zeros({2}, {.dtype = i64})); }) ==
          "set_grad: only float32 and float64 tensors have gradients; got dtype int64");
    CHECK(message_of<ValueError>([&] { w.set_grad(w.detach()); }) ==
          "set_grad: a tensor cannot be its own gradient (the gradient shares the tensor's storage, shape (2, 3)); "
          "pass a clone()");
    CHECK_FALSE(w.grad().defined());  // every failed call left it as it was
    CHECK_THROWS_AS(Tensor().set_grad(zeros({1})), ValueError);
}

TEST_CASE("set_grad: a gradient that requires grad is stored without its tape link")
{
    Tensor w = f64s({1, 2}, true);
    Tape tape;
    Tensor g = w * 3.0;  // recorded on the tape
    w.set_grad(g);
    CHECK_FALSE(w.grad().requires_grad());
    CHECK(w.grad().tolist() == std::vector<double>{3, 6});
}

// ---- tolist<T>, item<T> ------------------------------------------------------------------------

TEST_CASE("tolist<std::int64_t> is exact where doubles round: 2^53 + 1 and the int64 extremes")
{
    const std::int64_t big = (std::int64_t{1} << 53) + 1;
    const std::int64_t lo = std::numeric_limits<std::int64_t>::min(), hi = std::numeric_limits<std::int64_t>::max();
    Tensor t = from_vector(std::vector<std::int64_t>{big, -big, lo, hi, 0, -1}, {2, 3});
    CHECK(t.tolist<std::int64_t>() == std::vector<std::int64_t>{big, -big, lo, hi, 0, -1});
    CHECK(t.tolist()[0] == 9007199254740992.0);  // the double form rounds 2^53 + 1 to 2^53 (documented)
    CHECK(from_vector(std::vector<std::int64_t>{big}, {1}).item<std::int64_t>() == big);
    CHECK(scalar(-7, {.dtype = i64}).item<std::int64_t>() == -7);
    // an int64 result of an op: argmax
    CHECK(argmax(from_vector(std::vector<double>{0, 5, 1, 9, 2, 3}, {2, 3}), 1).tolist<std::int64_t>() ==
          std::vector<std::int64_t>{1, 0});
}

TEST_CASE("tolist<T> for each dtype's own type; tolist() still converts any dtype to double")
{
    CHECK(from_vector(std::vector<bool>{true, false, true}, {3}).tolist<bool>() == std::vector<bool>{true, false, true});
    CHECK(from_vector(std::vector<bool>{true, false}, {2}).tolist() == std::vector<double>{1, 0});
    CHECK(from_vector(std::vector<float>{0.1f, -2.5f}, {2}).tolist<float>() == std::vector<float>{0.1f, -2.5f});
    CHECK(f64s({0.1, 1e300}).tolist<double>() == std::vector<double>{0.1, 1e300});
    CHECK(from_vector(std::vector<std::int64_t>{3, -4}, {2}).tolist() == std::vector<double>{3, -4});
    CHECK(from_vector(std::vector<bool>{true}, {1}).item<bool>());
    CHECK(zeros({0}, {.dtype = i64}).tolist<std::int64_t>().empty());
}

TEST_CASE("tolist<T> and item<T> with another dtype's type throw TypeError naming both")
{
    CHECK(message_of<TypeError>([] { zeros({2}).tolist<std::int64_t>(); }) ==
          "tolist<int64>: the tensor is float32; ask for its own element type (float32) or for double (tolist(), item())");
    CHECK(message_of<TypeError>([] { zeros({2}, {.dtype = i64}).tolist<float>(); }) ==
          "tolist<float32>: the tensor is int64; ask for its own element type (int64) or for double (tolist(), item())");
    CHECK(message_of<TypeError>([] { scalar(1).item<bool>(); }) ==
          "item<bool>: the tensor is float32; ask for its own element type (float32) or for double (tolist(), item())");
    CHECK_THROWS_AS(zeros({2}, {.dtype = i64}).item<std::int64_t>(), ValueError);  // 2 elements
}
