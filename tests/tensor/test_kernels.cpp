// Kernels against plain-loop references at sizes that exercise SIMD tails, and NaN
// propagation. Inputs are deterministic (seeded generator).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/tensor.hpp"
#include "tensor/kernels.hpp"
#include "tensor/random.hpp"
#include "tensor/threads.hpp"

using namespace spool;
namespace k = spool::kernels;

namespace {

const std::int64_t sizes[] = {1, 7, 8, 9, 31, 33, 1000};

Value make(const Shape& s, DType dt, std::uint64_t seed)
{
    manual_seed(seed);
    return randn(s, {.dtype = dt}).value();
}

template <class F>
void check_map(const Value& got, const Value& x, F ref, double tol, const char* what)
{
    REQUIRE(got.shape() == x.shape());
    for (std::int64_t i = 0; i < x.numel(); ++i) {
        double want = ref(x.at(i));
        double g = got.at(i);
        INFO(what, " n=", x.numel(), " i=", i, " x=", x.at(i), " got=", g, " want=", want);
        if (std::isnan(want)) CHECK(std::isnan(g));
        else CHECK(std::abs(g - want) <= tol * (1 + std::abs(want)));
    }
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x)
{
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

}  // namespace

TEST_CASE("unary kernels match scalar references at tail sizes")
{
    struct U {
        k::Unary op;
        const char* name;
        double (*ref)(double);
        bool positive;
    };
    const U ops[] = {
        {k::Unary::neg, "neg", [](double x) { return -x; }, false},
        {k::Unary::exp, "exp", [](double x) { return std::exp(x); }, false},
        {k::Unary::log, "log", [](double x) { return std::log(x); }, true},
        {k::Unary::sqrt, "sqrt", [](double x) { return std::sqrt(x); }, true},
        {k::Unary::abs, "abs", [](double x) { return std::abs(x); }, false},
        {k::Unary::tanh, "tanh", [](double x) { return std::tanh(x); }, false},
        {k::Unary::sigmoid, "sigmoid", [](double x) { return 1 / (1 + std::exp(-x)); }, false},
        {k::Unary::relu, "relu", [](double x) { return x > 0 ? x : 0.0; }, false},
        {k::Unary::gelu_erf, "gelu", gelu_ref, false},
        {k::Unary::gelu_tanh, "gelu_tanh", gelu_tanh_ref, false},
        {k::Unary::square, "square", [](double x) { return x * x; }, false},
    };
    for (DType dt : {f32, f64})
        for (auto n : sizes)
            for (const auto& u : ops) {
                Value x = make(Shape{n}, dt, 7);
                if (u.positive) x = k::add_scalar(k::unary(k::Unary::abs, x), 0.1);
                check_map(k::unary(u.op, x), x, u.ref, dt == f32 ? 2e-6 : 1e-13, u.name);
            }
}

TEST_CASE("scalar ops, pow and clamp")
{
    for (DType dt : {f32, f64})
        for (auto n : sizes) {
            Value x = make(Shape{n}, dt, 3);
            double tol = dt == f32 ? 2e-6 : 1e-13;
            check_map(k::add_scalar(x, 1.5), x, [](double v) { return v + 1.5; }, tol, "add_scalar");
            check_map(k::mul_scalar(x, -2), x, [](double v) { return v * -2; }, tol, "mul_scalar");
            check_map(k::pow_scalar(x, 3), x, [](double v) { return v * v * v; }, tol, "pow 3");
            Value p = k::add_scalar(k::unary(k::Unary::abs, x), 0.5);
            check_map(k::pow_scalar(p, -1.5), p, [](double v) { return std::pow(v, -1.5); }, tol * 4, "pow -1.5");
            check_map(k::pow_scalar(p, 0.3), p, [](double v) { return std::pow(v, 0.3); }, tol * 4, "pow 0.3");
            check_map(k::clamp(x, -0.5, 0.25), x, [](double v) { return std::min(std::max(v, -0.5), 0.25); }, tol,
                      "clamp");
        }
}

TEST_CASE("binary kernels broadcast like NumPy")
{
    for (DType dt : {f32, f64})
        for (auto n : sizes) {
            Value a = make(Shape{3, n}, dt, 1);
            Value b = make(Shape{3, n}, dt, 2);
            Value row = make(Shape{n}, dt, 4);
            Value col = make(Shape{3, 1}, dt, 5);
            Value s = make(Shape{}, dt, 6);
            double tol = dt == f32 ? 1e-6 : 1e-14;
            auto check = [&](const Value& got, auto ref, const char* what) {
                REQUIRE(got.shape() == Shape({3, n}));
                for (std::int64_t i = 0; i < 3; ++i)
                    for (std::int64_t j = 0; j < n; ++j) {
                        double want = ref(i, j), g = got.at(i * n + j);
                        INFO(what, " n=", n, " (", i, ",", j, ") got=", g, " want=", want);
                        CHECK(std::abs(g - want) <= tol * (1 + std::abs(want)));
                    }
            };
            check(k::add(a, b), [&](auto i, auto j) { return a.at(i * n + j) + b.at(i * n + j); }, "add");
            check(k::sub(a, row), [&](auto i, auto j) { return a.at(i * n + j) - row.at(j); }, "sub row");
            check(k::mul(col, a), [&](auto i, auto j) { return col.at(i) * a.at(i * n + j); }, "mul col");
            check(k::div(a, s), [&](auto i, auto j) { return a.at(i * n + j) / s.at(0); }, "div scalar");
            check(k::add(row, col), [&](auto i, auto j) { return row.at(j) + col.at(i); }, "row+col");
            Value acc = a.clone();
            k::add_(acc, row);
            check(acc, [&](auto i, auto j) { return a.at(i * n + j) + row.at(j); }, "add_ row");
        }
}

TEST_CASE("reductions over every axis")
{
    for (DType dt : {f32, f64})
        for (auto n : sizes) {
            Value x = make(Shape{3, n, 2}, dt, 9);
            double tol = dt == f32 ? 1e-5 : 1e-12;
            for (int axis = 0; axis < 3; ++axis) {
                Value s = k::sum(x, axis);
                Value idx;
                Value m = k::max(x, axis, &idx);
                Shape os = x.shape();
                os.set(axis, 1);
                REQUIRE(s.shape() == os);
                auto st = x.shape().strides();
                for (std::int64_t o = 0; o < os.numel(); ++o) {
                    std::int64_t i0 = o / (os[1] * os[2]), i1 = o / os[2] % os[1], i2 = o % os[2];
                    double want = 0, mx = -1e300;
                    std::int64_t am = 0;
                    for (std::int64_t j = 0; j < x.shape()[axis]; ++j) {
                        std::int64_t ii[3] = {i0, i1, i2};
                        ii[axis] = j;
                        double v = x.at(ii[0] * st[0] + ii[1] * st[1] + ii[2] * st[2]);
                        want += v;
                        if (v > mx) mx = v, am = j;
                    }
                    INFO("axis ", axis, " n=", n, " o=", o);
                    CHECK(std::abs(s.at(o) - want) <= tol * (1 + std::abs(want)) * std::sqrt(double(n)));
                    CHECK(m.at(o) == mx);
                    CHECK(idx.at(o) == am);
                }
            }
        }
}

TEST_CASE("softmax and log_softmax rows")
{
    for (DType dt : {f32, f64})
        for (auto n : sizes)
            for (int axis : {0, 1}) {
                Value x = k::mul_scalar(make(Shape{4, n}, dt, 11), 5);
                Value y = k::softmax(x, axis), ly = k::log_softmax(x, axis);
                double tol = dt == f32 ? 2e-6 : 1e-13;
                std::int64_t rows = axis == 1 ? 4 : n, len = axis == 1 ? n : 4;
                for (std::int64_t r = 0; r < rows; ++r) {
                    auto at = [&](std::int64_t j) { return axis == 1 ? r * n + j : j * n + r; };
                    double m = -1e300, s = 0;
                    for (std::int64_t j = 0; j < len; ++j) m = std::max(m, x.at(at(j)));
                    for (std::int64_t j = 0; j < len; ++j) s += std::exp(x.at(at(j)) - m);
                    for (std::int64_t j = 0; j < len; ++j) {
                        double want = std::exp(x.at(at(j)) - m) / s;
                        INFO("axis ", axis, " n=", n, " r=", r, " j=", j);
                        CHECK(std::abs(y.at(at(j)) - want) <= tol);
                        CHECK(std::abs(ly.at(at(j)) - std::log(want)) <= tol * (1 + std::abs(std::log(want))));
                    }
                }
            }
}

TEST_CASE("softmax of huge logits stays finite; an all -inf row gives no NaN from inf - inf")
{
    Value x = from_vector(std::vector<double>{1000, 999, -1000}, Shape{3}).value();
    Value y = k::softmax(x, 0);
    CHECK(y.at(0) == doctest::Approx(1 / (1 + std::exp(-1.0))));
    CHECK(y.at(2) == 0.0);
    Value ly = k::log_softmax(x, 0);
    CHECK(ly.at(0) == doctest::Approx(-std::log1p(std::exp(-1.0))));
}

TEST_CASE("NaN propagates through relu, max, clamp and softmax")
{
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (DType dt : {f32, f64})
        for (auto n : sizes) {
            Value x = make(Shape{n}, dt, 13);
            x.set(n / 2, nan);
            Value r = k::unary(k::Unary::relu, x);
            CHECK(std::isnan(r.at(n / 2)));
            Value c = k::clamp(x, -0.1, 0.1);
            CHECK(std::isnan(c.at(n / 2)));
            CHECK(std::isnan(k::max(x, 0, nullptr).at(0)));
            CHECK(std::isnan(k::softmax(x, 0).at(0)));
            CHECK_FALSE(k::all_finite(x));
        }
    Value inf = Value::full(Shape{9}, std::numeric_limits<double>::infinity(), f64);
    CHECK_FALSE(k::all_finite(inf));
    CHECK(k::all_finite(Value::full(Shape{9}, 1e300, f64)));
}

TEST_CASE("permute that moves the last dim (tiled) matches an element-by-element reference")
{
    // sizes around the 16-element tile: partial tiles, one tile, many
    const std::vector<std::int64_t> sizes = {1, 7, 8, 9, 16, 17, 31, 33};
    struct Case {
        Shape shape;
        std::vector<int> perm;
    };
    std::vector<Case> cases;
    for (auto a : sizes)
        for (auto b : {std::int64_t{1}, std::int64_t{9}, std::int64_t{33}}) {
            cases.push_back({Shape{a, b}, {1, 0}});
            cases.push_back({Shape{3, a, b}, {0, 2, 1}});
            cases.push_back({Shape{a, 2, b}, {2, 1, 0}});
            cases.push_back({Shape{2, a, 3, b}, {3, 0, 2, 1}});
        }
    cases.push_back({Shape{1000, 3}, {1, 0}});
    cases.push_back({Shape{600, 700}, {1, 0}});  // large enough to be split between threads
    for (DType dt : {f32, f64, i64, bool_})
        for (const auto& c : cases) {
            const std::int64_t n = c.shape.numel();
            Value x = Value::empty(c.shape, dt);
            for (std::int64_t i = 0; i < n; ++i) x.set(i, dt == bool_ ? (i * 7) % 3 == 0 : static_cast<double>(i));
            Value y = k::permute(x, c.perm);
            const int r = c.shape.rank();
            const auto xs = c.shape.strides(), ys = y.shape().strides();
            std::int64_t bad = 0, first_bad = -1;
            for (std::int64_t o = 0; o < n; ++o) {
                std::int64_t rest = o, src = 0;
                for (int d = 0; d < r; ++d) {
                    src += rest / ys[d] * xs[c.perm[static_cast<std::size_t>(d)]];
                    rest %= ys[d];
                }
                if (y.at(o) != x.at(src) && bad++ == 0) first_bad = o;
            }
            INFO(dtype_name(dt), " ", to_string(c.shape), " first wrong output element ", first_bad);
            CHECK(bad == 0);
        }
}

TEST_CASE("layout kernels: permute, slice, concat, index_select, sum_to")
{
    Value x = arange(24, {.dtype = f64}).value().view(Shape{2, 3, 4});
    Value p = k::permute(x, {2, 0, 1});
    REQUIRE(p.shape() == Shape({4, 2, 3}));
    for (int a = 0; a < 4; ++a)
        for (int b = 0; b < 2; ++b)
            for (int c = 0; c < 3; ++c) CHECK(p.at((a * 2 + b) * 3 + c) == x.at((b * 3 + c) * 4 + a));
    Value sl = k::slice(x, 2, 1, 4, 2);
    REQUIRE(sl.shape() == Shape({2, 3, 2}));
    CHECK(sl.at(0) == 1);
    CHECK(sl.at(1) == 3);
    CHECK(sl.at(2) == 5);
    Value cc = k::concat({x, sl}, 2);
    REQUIRE(cc.shape() == Shape({2, 3, 6}));
    CHECK(cc.at(4) == 1);
    CHECK(cc.at(5) == 3);
    CHECK(cc.at(6) == 4);
    Value idx = from_vector(std::vector<std::int64_t>{2, 0, 2}, Shape{3}).value();
    Value sel = k::index_select(x, 1, idx);
    REQUIRE(sel.shape() == Shape({2, 3, 4}));
    CHECK(sel.at(0) == 8);
    CHECK(sel.at(4) == 0);
    Value back = k::index_add(Value::full(Shape{2, 3, 4}, 1, f64), Shape{2, 3, 4}, 1, idx);
    CHECK(back.at(8) == 2);  // row 2 picked twice
    CHECK(back.at(4) == 0);  // row 1 never picked
    Value st = k::sum_to(Value::full(Shape{5, 2, 3}, 1, f64), Shape{2, 1});
    REQUIRE(st.shape() == Shape({2, 1}));
    CHECK(st.at(0) == 15);
}

TEST_CASE("matmul kernel broadcasts batch dims and honours transpose flags")
{
    manual_seed(21);
    for (DType dt : {f32, f64}) {
        Value a = randn({2, 1, 3, 5}, {.dtype = dt}).value();
        Value b = randn({4, 5, 6}, {.dtype = dt}).value();
        Value c = k::matmul(a, b);
        REQUIRE(c.shape() == Shape({2, 4, 3, 6}));
        double tol = dt == f32 ? 1e-5 : 1e-12;
        for (int i = 0; i < 2; ++i)
            for (int j = 0; j < 4; ++j)
                for (int m = 0; m < 3; ++m)
                    for (int n = 0; n < 6; ++n) {
                        double want = 0;
                        for (int q = 0; q < 5; ++q) want += a.at((i * 3 + m) * 5 + q) * b.at((j * 5 + q) * 6 + n);
                        CHECK(std::abs(c.at(((i * 4 + j) * 3 + m) * 6 + n) - want) <= tol * 10);
                    }
        // a^T b^T through flags equals (b a)^T
        Value at = k::permute(a.view(Shape{2, 3, 5}), {0, 2, 1});   // [2, 5, 3]
        Value bt = k::permute(b.narrow0(0, 1).view(Shape{5, 6}), {1, 0});  // [6, 5]
        Value c1 = k::matmul(at, bt, true, true);   // [2, 3, 6]
        Value c2 = k::matmul(a.view(Shape{2, 3, 5}), b.narrow0(0, 1).view(Shape{5, 6}));
        REQUIRE(c1.shape() == c2.shape());
        for (std::int64_t i = 0; i < c1.numel(); ++i) CHECK(std::abs(c1.at(i) - c2.at(i)) <= tol * 10);
    }
}

TEST_CASE("sum over the rows of [rows, features] (a bias gradient): row after row, the same bits at 1 and 2 threads")
{
    // 150 features = 2 items of 4 float vectors (AVX-512) + 1 vector + 6 columns; 4 + 2 items for double
    for (DType dt : {f32, f64}) {
        Value x = make(Shape{300, 150}, dt, 31);
        const int before = get_num_threads();
        std::vector<double> first;
        for (int threads : {1, 2}) {
            set_num_threads(threads);
            Value s = k::sum(x, 0);
            REQUIRE(s.shape() == Shape{1, 150});
            for (std::int64_t c = 0; c < 150; ++c) {
                // the order of a loop adding each row into the result, in the tensor's precision
                double want = 0;
                if (dt == f32) {
                    float a = 0;
                    for (std::int64_t r = 0; r < 300; ++r) a += static_cast<float>(x.at(r * 150 + c));
                    want = a;
                } else {
                    for (std::int64_t r = 0; r < 300; ++r) want += x.at(r * 150 + c);
                }
                INFO(dtype_name(dt), " threads ", threads, " column ", c);
                CHECK(s.at(c) == want);
            }
            if (threads == 1)
                for (std::int64_t c = 0; c < 150; ++c) first.push_back(s.at(c));
            else
                for (std::int64_t c = 0; c < 150; ++c) CHECK(s.at(c) == first[std::size_t(c)]);
        }
        set_num_threads(before);
    }
}
