// Misuse that used to crash or give silently wrong gradients (issue 9): undefined tensors,
// tapes ended out of order, backward after the tape ended, tensors changed in place after
// an op saved them, a backward that throws halfway, pow at 0, sizes that overflow.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using spool::test::message_of;

namespace {
constexpr double inf = std::numeric_limits<double>::infinity();

struct AnomalyOn {
    AnomalyOn() { detect_anomaly(true); }
    ~AnomalyOn() { detect_anomaly(false); }
};
}  // namespace

// ---- sizes ------------------------------------------------------------------------------------

TEST_CASE("creation and reshape reject element counts that overflow")
{
    const std::string too_many = " would have more than 1152921504606846975 elements "
                                 "(the most whose size in bytes fits in ptrdiff_t)";
    // each creation function names itself, whatever the dims are written as
    CHECK(message_of<ShapeError>([] { zeros({std::int64_t{1} << 62}); }) ==
          "zeros: a tensor of shape (4611686018427387904,)" + too_many);
    CHECK(message_of<ShapeError>([] { zeros({std::int64_t{1} << 40, std::int64_t{1} << 40}); }) ==
          "zeros: a tensor of shape (1099511627776, 1099511627776)" + too_many);
    const std::int64_t big = std::int64_t{1} << 31;
    CHECK(message_of<ShapeError>([&] { empty({big, big, 4}); }).starts_with("empty: a tensor of shape (2147483648, "));
    CHECK(message_of<ShapeError>([&] { ones({big, big, 4}); }).starts_with("ones: "));
    CHECK(message_of<ShapeError>([&] { full({big, big, 4}, 2.0); }).starts_with("full: "));
    CHECK(message_of<ShapeError>([&] { rand({big, big, 4}); }).starts_with("rand: "));
    CHECK(message_of<ShapeError>([&] { randn({big, big, 4}); }).starts_with("randn: "));
    CHECK(message_of<ShapeError>([&] { uniform({big, big, 4}, 0, 1); }).starts_with("uniform: "));
    CHECK(message_of<ShapeError>([&] { from_vector(std::vector<float>{}, {big, big, 4}); }).starts_with("from_vector: "));
    CHECK(message_of<ShapeError>([] { zeros({2, -1}); }) == "zeros: dimensions must be >= 0; got shape (2, -1)");
    // a Shape built by the caller was checked when it was built, naming Shape
    CHECK(message_of<ShapeError>([] { zeros(Shape{std::int64_t{1} << 62}); }) ==
          "Shape: a tensor of shape (4611686018427387904,)" + too_many);
    CHECK(zeros({}).shape() == Shape{});
    CHECK(zeros({2, 3}).shape() == Shape{2, 3});
    // 4 x 2^62 wrapped to 0 == numel of zeros({0}): accepted before
    CHECK(message_of<ShapeError>([] { reshape(zeros({0}), {4, std::int64_t{1} << 62}); }) ==
          "reshape: a tensor of shape (4, 4611686018427387904) would have more than 1152921504606846975 elements "
          "(the most whose size in bytes fits in ptrdiff_t)");
    CHECK(message_of<ShapeError>([] { reshape(zeros({6}), {-1, 0}); }) ==
          "reshape: shape (1, 0) with dimension 0 inferred (-1) is invalid for input of size 6");
    CHECK(message_of<ShapeError>([] { reshape(zeros({6}), {-2, 3}); }) ==
          "reshape: dimensions must be >= 0; got shape (-2, 3)");
    CHECK(reshape(zeros({6}), {-1, 3}).shape() == Shape{2, 3});
    CHECK(message_of<ValueError>([] { arange(0, 1e30); }) ==
          "arange: 1e+30 elements are too many for one tensor; got start 0, end 1e+30, step 1");
}

// ---- undefined tensors ----------------------------------------------------------------------

TEST_CASE("an undefined tensor throws a clear error from every accessor")
{
    Tensor t;
    const std::string tail = " needs a value (a default-constructed Tensor, or grad() before any backward)";
    CHECK(message_of<ValueError>([&] { (void)t.numel(); }) == "Tensor: undefined tensor; numel()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.shape(); }) == "Tensor: undefined tensor; shape()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.item(); }) == "Tensor: undefined tensor; item()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.dim(); }) == "Tensor: undefined tensor; dim()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.dtype(); }) == "Tensor: undefined tensor; dtype()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.value(); }) == "Tensor: undefined tensor; value()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.data<float>(); }) == "Tensor: undefined tensor; data()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.requires_grad(); }) == "Tensor: undefined tensor; requires_grad()" + tail);
    CHECK(message_of<ValueError>([&] { t.requires_grad_(); }) == "Tensor: undefined tensor; dtype()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.grad(); }) == "Tensor: undefined tensor; grad()" + tail);
    CHECK(message_of<ValueError>([&] { t.zero_grad(); }) == "Tensor: undefined tensor; zero_grad()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.detach(); }) == "Tensor: undefined tensor; detach()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.tolist(); }) == "Tensor: undefined tensor; tolist()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.tolist<std::int64_t>(); }) == "Tensor: undefined tensor; tolist()" + tail);
    CHECK(message_of<ValueError>([&] { t.set_grad(Tensor()); }) == "Tensor: undefined tensor; set_grad()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.at(0); }) == "Tensor: undefined tensor; numel()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.size(0); }) == "Tensor: undefined tensor; shape()" + tail);
    CHECK(message_of<ValueError>([&] { (void)t.is_leaf(); }) == "Tensor: undefined tensor; is_leaf()" + tail);
    CHECK_FALSE(t.defined());
}

// ---- tape lifetimes ----------------------------------------------------------------------------

TEST_CASE("tapes ended out of order leave a consistent stack (no use after free)")
{
    Tensor w = from_vector(std::vector<double>{1, 2}, {2}, {.dtype = f64, .requires_grad = true});
    auto outer = std::make_unique<Tape>();
    auto middle = std::make_unique<Tape>();
    auto inner = std::make_unique<Tape>();
    middle.reset();  // ends under a live nested tape
    CHECK(Tape::current() == inner.get());
    outer.reset();
    CHECK(Tape::current() == inner.get());
    Tensor l = sum(w * w);  // records on the innermost tape
    CHECK(inner->stats().nodes == 2);
    inner->backward(l);
    CHECK(w.grad().tolist() == std::vector<double>{2, 4});
    inner.reset();
    CHECK(Tape::current() == nullptr);
    Tensor y = w * w;  // used the freed outer tape before
    CHECK_FALSE(y.requires_grad());

    // the outer one ends first, then an op records on the inner one, then it ends
    auto a = std::make_unique<Tape>();
    auto b = std::make_unique<Tape>();
    a.reset();
    CHECK(Tape::current() == b.get());
    Tensor z = w * 3.0;
    CHECK(z.requires_grad());
    b.reset();
    CHECK(Tape::current() == nullptr);
    CHECK_FALSE((w * 3.0).requires_grad());
}

TEST_CASE("backward of a tensor whose tape has ended is an error, and leaves the current tape usable")
{
    Tensor w = from_vector(std::vector<double>{1, 2}, {2}, {.dtype = f64, .requires_grad = true});
    Tensor loss;
    {
        Tape t;
        loss = sum(w * w);
    }
    Tape t2;
    const std::string ended =
        "backward: the tape that recorded this tensor has ended, so no gradient can flow from it; keep the Tape alive "
        "until backward has run";
    CHECK(message_of<AutogradError>([&] { loss.backward(); }) == ended);
    CHECK(message_of<AutogradError>([&] { t2.backward(loss); }) == ended);
    CHECK_FALSE(w.grad().defined());
    // the failed call did not consume t2
    Tensor l2 = sum(w * loss);  // loss is a leaf on t2
    t2.backward(l2);
    CHECK(w.grad().tolist() == std::vector<double>{5, 5});
}

TEST_CASE("backward on another live tape than the one that recorded the tensor is an error")
{
    Tensor w = from_vector(std::vector<double>{3}, {1}, {.dtype = f64, .requires_grad = true});
    Tape outer;
    Tensor loss = sum(w * w);
    {
        Tape inner;
        CHECK(message_of<AutogradError>([&] { loss.backward(); }) ==
              "backward: this tensor was recorded on another live Tape (an enclosing or a nested one); call that "
              "tape's backward");
    }
    outer.backward(loss);
    CHECK(w.grad().item() == 6);
}

// ---- in-place changes after an op saved a tensor ----------------------------------------------------

TEST_CASE("a saved input changed in place before backward is an error naming the op")
{
    Tensor x = randn({2, 3}, {.dtype = f64});
    Tensor w = randn({3, 4}, {.dtype = f64, .requires_grad = true});
    {
        Tape tape;
        Tensor l = sum(matmul(x, w));
        x.value().set(0, 5.0);  // element write
        CHECK(message_of<AutogradError>([&] { tape.backward(l); }) ==
              "backward of matmul: an input saved for backward (input 0, shape (2, 3)) was modified in place (version "
              "0 → 1) after the op ran, e.g. by optimizer.step() or an element write; run backward before changing "
              "it, or give the op a clone()");
        CHECK_FALSE(w.grad().defined());
    }
    {
        Tape tape;  // a write through data() counts too; the output saved by exp as well
        Tensor y = exp(w);
        Tensor l = sum(y);
        y.data<double>()[0] = 0;
        CHECK(message_of<AutogradError>([&] { tape.backward(l); }) ==
              "backward of exp: a tensor saved for backward (its output or an internal one) was modified in place "
              "(version 0 → 1) after the op ran, e.g. by optimizer.step() or an element write; run backward before "
              "changing it, or give the op a clone()");
    }
    {
        Tape tape;  // add saves nothing: changing its input is fine
        Tensor a = zeros({3, 4}, {.dtype = f64});
        Tensor l = sum(add(w, a));
        a.value().set(1, 1.0);
        tape.backward(l);
        CHECK(w.grad().tolist() == std::vector<double>(12, 1.0));
    }
}

TEST_CASE("optimizer.step() between forward and backward is detected; the gradients stay as they were")
{
    manual_seed(7);
    nn::Linear lin(nn::LinearOptions{.in_features = 3, .out_features = 2});
    optim::SGD opt(lin.parameters(), {.lr = 0.1});
    Tensor x = randn({4, 3});
    {
        Tape tape;
        tape.backward(sum(lin(x)));
    }
    std::vector<double> g0 = lin.weight.grad().tolist();
    Tape tape;
    Tensor l = sum(lin(x));
    opt.step();  // changes weight in place: the saved weight is no longer what forward used
    CHECK(message_of<AutogradError>([&] { tape.backward(l); }) ==
          "backward of linear: an input saved for backward (input 1, shape (2, 3)) was modified in place (version 0 → "
          "1) after the op ran, e.g. by optimizer.step() or an element write; run backward before changing it, or "
          "give the op a clone()");
    CHECK(lin.weight.grad().tolist() == g0);
}

// ---- a failed backward --------------------------------------------------------------------------------

TEST_CASE("a backward that throws leaves every grad exactly as it was")
{
    AnomalyOn anomaly;
    Tensor w = from_vector(std::vector<double>{1, 2}, {2}, {.dtype = f64, .requires_grad = true});
    Tensor v = from_vector(std::vector<double>{0, 4}, {2}, {.dtype = f64, .requires_grad = true});
    {
        Tape tape;
        tape.backward(sum(w * 3.0) + sum(v));
    }
    CHECK(w.grad().tolist() == std::vector<double>{3, 3});
    {
        Tape tape;
        Tensor a = sum(sqrt(v));  // d sqrt(v) at 0 is inf: anomaly mode throws in sqrt's backward
        Tensor b = sum(w * 2.0);  // runs first in backward: w's gradient was already added before
        CHECK(message_of<ValueError>([&] { tape.backward(a + b); }) ==
              "sqrt: gradient contains NaN or Inf (anomaly mode); shape (2,)");
    }
    CHECK(w.grad().tolist() == std::vector<double>{3, 3});
    CHECK(v.grad().tolist() == std::vector<double>{1, 1});
    {
        Tape tape;  // the next step adds exactly its own gradient
        tape.backward(sum(w * 2.0));
    }
    CHECK(w.grad().tolist() == std::vector<double>{5, 5});
}

TEST_CASE("a leaf's new grad never shares a buffer with another leaf's")
{
    Tensor a = from_vector(std::vector<double>{1, 2}, {2}, {.dtype = f64, .requires_grad = true});
    Tensor b = from_vector(std::vector<double>{3, 4}, {2}, {.dtype = f64, .requires_grad = true});
    Tape tape;
    tape.backward(sum(a + b));  // add hands the same dy to both inputs
    CHECK_FALSE(a.grad().value().shares_storage(b.grad().value()));
    CHECK(a.grad().tolist() == std::vector<double>{1, 1});
    CHECK(b.grad().tolist() == std::vector<double>{1, 1});
}

// ---- pow at zero ------------------------------------------------------------------------------------

TEST_CASE("pow follows IEEE std::pow at 0, negative and non-finite bases, in every SIMD lane and the tail")
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (double p : {-0.5, 0.5, 1.5, -1.5, 0.3, -2.0, 3.0, 0.0, 70.5}) {
        for (DType dt : {f32, f64}) {
            // 9 elements: a full SIMD batch or two plus a tail, special values at both ends
            std::vector<double> xs{0, 4, -1, 2.5, inf, -inf, nan, -0.0, 0};
            Tensor y = pow(from_vector(xs, {9}, {.dtype = dt}), p);
            for (std::size_t i = 0; i < xs.size(); ++i) {
                const double want = dt == f32 ? double(std::pow(float(xs[i]), float(p))) : std::pow(xs[i], p);
                const double got = y.at(static_cast<std::int64_t>(i));
                INFO("p = ", p, ", x = ", xs[i], ", ", dtype_name(dt), ": got ", got, ", want ", want);
                if (std::isnan(want)) CHECK(std::isnan(got));
                else if (std::isinf(want) || want == 0) CHECK(got == want);
                else CHECK(got == doctest::Approx(want).epsilon(dt == f32 ? 1e-5 : 1e-10));
            }
        }
    }
    CHECK(pow(scalar(0.0), -0.5).item() == inf);
}

TEST_CASE("x^0.5 has an infinite gradient at 0, which anomaly mode reports")
{
    Tensor x = from_vector(std::vector<double>{0, 4}, {2}, {.dtype = f64, .requires_grad = true});
    {
        Tape tape;
        tape.backward(sum(pow(x, 0.5)));
    }
    CHECK(x.grad().tolist() == std::vector<double>{inf, 0.25});
    x.zero_grad();
    AnomalyOn anomaly;
    Tape tape;
    CHECK(message_of<ValueError>([&] { tape.backward(sum(pow(x, 0.5))); }) ==
          "pow: gradient contains NaN or Inf (anomaly mode); shape (2,)");
    CHECK_FALSE(x.grad().defined());
}
