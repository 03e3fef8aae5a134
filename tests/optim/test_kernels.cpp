// The fused optimizer kernels (tensor/optim_kernels.hpp) against plain double-precision
// loops of the same equations, at sizes that exercise the SIMD tails, in float32 and
// float64; one call over several tensors; bit-identical results for 1 and 2 threads; the
// gradient utilities (sums, max, finite check, in-place scale and clamp).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/tensor.hpp"
#include "tensor/optim_kernels.hpp"
#include "tensor/random.hpp"
#include "tensor/threads.hpp"

using namespace spool;
namespace k = spool::kernels;

namespace {

const std::int64_t sizes[] = {1, 7, 8, 9, 31, 33, 1000};
const DType dtypes[] = {f32, f64};

Value make(std::int64_t n, DType dt, std::uint64_t seed, double scale = 1.0, double shift = 0.0)
{
    manual_seed(seed);
    Value v = randn({n}, {.dtype = dt}).value();
    for (std::int64_t i = 0; i < n; ++i) v.set(i, v.at(i) * scale + shift);
    return v;
}

Value positive(std::int64_t n, DType dt, std::uint64_t seed)
{
    Value v = make(n, dt, seed);
    for (std::int64_t i = 0; i < n; ++i) v.set(i, 0.01 + v.at(i) * v.at(i));
    return v;
}

std::vector<double> vec(const Value& v)
{
    std::vector<double> out(v.numel());
    for (std::int64_t i = 0; i < v.numel(); ++i) out[i] = v.at(i);
    return out;
}

/// float32 rounds each of the ~10 operations; the reference runs in double.
double tol(DType dt) { return dt == f32 ? 2e-6 : 1e-13; }

void check_close(const Value& got, const std::vector<double>& want, DType dt, const char* what)
{
    REQUIRE(got.numel() == static_cast<std::int64_t>(want.size()));
    for (std::int64_t i = 0; i < got.numel(); ++i) {
        INFO(what, " ", dtype_name(dt), " n=", got.numel(), " i=", i, " got=", got.at(i), " want=", want[i]);
        CHECK(std::abs(got.at(i) - want[i]) <= tol(dt) * (1 + std::abs(want[i])));
    }
}

bool bit_equal(const Value& a, const Value& b)
{
    return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

struct SgdCase {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, maximize, init;
};

struct AdamCase {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled, amsgrad, maximize;
    std::int64_t step;
};

}  // namespace

TEST_CASE("sgd_step matches a scalar reference at tail sizes")
{
    const SgdCase cases[] = {
        {0.1, 0, 0, 0, false, false, false},     {0.1, 0.9, 0, 0, false, false, true},
        {0.1, 0.9, 0.1, 0.01, false, false, false}, {0.05, 0.9, 0, 0.01, true, false, false},
        {0.05, 0.5, 0, 0, false, true, false},
    };
    for (DType dt : dtypes)
        for (std::int64_t n : sizes)
            for (const SgdCase& c : cases) {
                Value p = make(n, dt, 1), g = make(n, dt, 2), buf = make(n, dt, 3);
                std::vector<double> rp = vec(p), rg = vec(g), rb = vec(buf);
                for (std::int64_t i = 0; i < n; ++i) {
                    double d = c.maximize ? -rg[i] : rg[i];
                    if (c.weight_decay != 0) d += c.weight_decay * rp[i];
                    if (c.momentum != 0) {
                        rb[i] = c.init ? d : c.momentum * rb[i] + (1 - c.dampening) * d;
                        d = c.nesterov ? d + c.momentum * rb[i] : rb[i];
                    }
                    rp[i] -= c.lr * d;
                }
                k::SgdSlot s{.param = &p, .grad = &g, .momentum_buffer = c.momentum != 0 ? &buf : nullptr,
                             .init_buffer = c.init, .lr = c.lr, .momentum = c.momentum, .dampening = c.dampening,
                             .weight_decay = c.weight_decay, .nesterov = c.nesterov, .maximize = c.maximize};
                k::sgd_step({&s, 1});
                check_close(p, rp, dt, "sgd param");
                if (c.momentum != 0) check_close(buf, rb, dt, "sgd momentum buffer");
            }
}

TEST_CASE("adam_step matches a scalar reference at tail sizes")
{
    const AdamCase cases[] = {
        {1e-3, 0.9, 0.999, 1e-8, 0, false, false, false, 1},   {1e-2, 0.9, 0.98, 1e-9, 0, false, false, false, 7},
        {1e-2, 0.9, 0.999, 1e-8, 0.1, false, true, false, 3},  {1e-2, 0.8, 0.99, 1e-8, 0.1, true, false, false, 2},
        {1e-2, 0.9, 0.999, 1e-6, 0.05, true, true, true, 12},
    };
    for (DType dt : dtypes)
        for (std::int64_t n : sizes)
            for (const AdamCase& c : cases) {
                Value p = make(n, dt, 4), g = make(n, dt, 5), m = make(n, dt, 6, 0.1), v = positive(n, dt, 7),
                      vmax = positive(n, dt, 8);
                std::vector<double> rp = vec(p), rg = vec(g), rm = vec(m), rv = vec(v), rx = vec(vmax);
                const double bc1 = 1 - std::pow(c.beta1, c.step), bc2 = 1 - std::pow(c.beta2, c.step);
                for (std::int64_t i = 0; i < n; ++i) {
                    double gi = c.maximize ? -rg[i] : rg[i];
                    if (c.decoupled) rp[i] *= 1 - c.lr * c.weight_decay;
                    else if (c.weight_decay != 0) gi += c.weight_decay * rp[i];
                    rm[i] = c.beta1 * rm[i] + (1 - c.beta1) * gi;
                    rv[i] = c.beta2 * rv[i] + (1 - c.beta2) * gi * gi;
                    double vh = rv[i];
                    if (c.amsgrad) vh = rx[i] = std::max(rx[i], rv[i]);
                    rp[i] -= c.lr / bc1 * rm[i] / (std::sqrt(vh) / std::sqrt(bc2) + c.eps);
                }
                k::AdamSlot s{.param = &p, .grad = &g, .exp_avg = &m, .exp_avg_sq = &v,
                              .max_exp_avg_sq = c.amsgrad ? &vmax : nullptr, .step = c.step, .lr = c.lr,
                              .beta1 = c.beta1, .beta2 = c.beta2, .eps = c.eps, .weight_decay = c.weight_decay,
                              .decoupled = c.decoupled, .maximize = c.maximize};
                k::adam_step({&s, 1});
                check_close(p, rp, dt, "adam param");
                check_close(m, rm, dt, "adam exp_avg");
                check_close(v, rv, dt, "adam exp_avg_sq");
                if (c.amsgrad) check_close(vmax, rx, dt, "adam max_exp_avg_sq");
            }
}

TEST_CASE("one adam_step call over many tensors equals one call per tensor, for 1 and 2 threads")
{
    // sizes above the parallel grain so that two threads really split, with the split
    // falling inside tensors; mixed dtypes in one call
    const std::int64_t ns[] = {70001, 33, 90017, 1, 40000};
    const int saved = get_num_threads();
    for (int threads : {1, 2}) {
        std::vector<Value> p, g, m, v, p1, m1, v1;
        for (std::size_t t = 0; t < std::size(ns); ++t) {
            DType dt = t == 3 ? f64 : f32;
            p.push_back(make(ns[t], dt, 10 + t));
            g.push_back(make(ns[t], dt, 20 + t));
            m.push_back(make(ns[t], dt, 30 + t, 0.1));
            v.push_back(positive(ns[t], dt, 40 + t));
            p1.push_back(p.back().clone());
            m1.push_back(m.back().clone());
            v1.push_back(v.back().clone());
        }
        std::vector<k::AdamSlot> slots;
        for (std::size_t t = 0; t < std::size(ns); ++t)
            slots.push_back({.param = &p[t], .grad = &g[t], .exp_avg = &m[t], .exp_avg_sq = &v[t], .step = 3,
                             .lr = 0.01, .weight_decay = 0.01, .decoupled = true});
        set_num_threads(threads);
        k::adam_step(slots);
        set_num_threads(1);
        for (std::size_t t = 0; t < std::size(ns); ++t) {
            k::AdamSlot one = slots[t];
            one.param = &p1[t];
            one.exp_avg = &m1[t];
            one.exp_avg_sq = &v1[t];
            k::adam_step({&one, 1});
            INFO("threads=", threads, " tensor ", t);
            CHECK(bit_equal(p[t], p1[t]));
            CHECK(bit_equal(m[t], m1[t]));
            CHECK(bit_equal(v[t], v1[t]));
        }
    }
    set_num_threads(saved);
}

TEST_CASE("sgd_step over many tensors is bit-identical for 1 and 2 threads")
{
    const int saved = get_num_threads();
    std::vector<Value> results[2];
    for (int threads : {1, 2}) {
        std::vector<Value> p, g, b;
        for (std::int64_t n : {50001, 9, 65536}) {
            p.push_back(make(n, f32, 1 + n));
            g.push_back(make(n, f32, 2 + n));
            b.push_back(make(n, f32, 3 + n));
        }
        std::vector<k::SgdSlot> slots;
        for (std::size_t t = 0; t < p.size(); ++t)
            slots.push_back({.param = &p[t], .grad = &g[t], .momentum_buffer = &b[t], .lr = 0.1, .momentum = 0.9,
                             .dampening = 0.1, .weight_decay = 0.01, .nesterov = false});
        set_num_threads(threads);
        k::sgd_step(slots);
        results[threads - 1] = p;
        results[threads - 1].insert(results[threads - 1].end(), b.begin(), b.end());
    }
    set_num_threads(saved);
    for (std::size_t t = 0; t < results[0].size(); ++t) CHECK(bit_equal(results[0][t], results[1][t]));
}

TEST_CASE("kernels check shapes and dtypes of their operands")
{
    Value p = make(5, f32, 1), g = make(4, f32, 2), g64 = make(5, f64, 3), m = make(5, f32, 4), v = positive(5, f32, 5);
    k::AdamSlot s{.param = &p, .grad = &g, .exp_avg = &m, .exp_avg_sq = &v};
    CHECK_THROWS_WITH_AS(k::adam_step({&s, 1}), "adam_step: gradient has shape (4,) but the parameter has shape (5,)",
                         ShapeError);
    s.grad = &g64;
    CHECK_THROWS_WITH_AS(k::adam_step({&s, 1}), "adam_step: gradient is float64 but the parameter is float32", TypeError);
    Value gg = make(5, f32, 6);
    s.grad = &gg;
    s.step = 0;
    CHECK_THROWS_WITH_AS(k::adam_step({&s, 1}), "adam_step: step must be >= 1 (incremented before the update); got 0",
                         ValueError);
    Value idx = Value::zeros({5}, i64);
    k::SgdSlot q{.param = &idx, .grad = &gg};
    CHECK_THROWS_WITH_AS(k::sgd_step({&q, 1}), "sgd_step: parameter must be float32 or float64; got int64", TypeError);
}

TEST_CASE("gradient utilities match scalar references")
{
    for (DType dt : dtypes)
        for (std::int64_t n : sizes) {
            Value a = make(n, dt, 50), b = make(n + 3, dt, 51, 3.0);
            std::vector<const Value*> xs{&a, &b};
            double ss = 0, mx = 0, p3 = 0;
            for (const Value* x : xs)
                for (std::int64_t i = 0; i < x->numel(); ++i) {
                    ss += x->at(i) * x->at(i);
                    mx = std::max(mx, std::abs(x->at(i)));
                    p3 += std::pow(std::abs(x->at(i)), 3.0);
                }
            INFO(dtype_name(dt), " n=", n);
            CHECK(k::sum_squares(xs) == doctest::Approx(ss).epsilon(dt == f32 ? 1e-6 : 1e-14));
            CHECK(k::max_abs(xs) == mx);
            CHECK(k::sum_abs_pow(xs, 3.0) == doctest::Approx(p3).epsilon(1e-12));
            CHECK(k::all_finite(xs));

            std::vector<double> ra = vec(a);
            std::vector<Value*> ys{&a};
            k::scale_(ys, 0.37);
            std::vector<double> want(ra.size());
            for (std::size_t i = 0; i < ra.size(); ++i) want[i] = ra[i] * 0.37;
            check_close(a, want, dt, "scale_");
            k::clamp_(ys, -0.2, 0.3);
            for (std::size_t i = 0; i < ra.size(); ++i) want[i] = std::min(0.3, std::max(-0.2, want[i]));
            check_close(a, want, dt, "clamp_");
        }
}

TEST_CASE("gradient utilities see NaN and Inf anywhere, tails included")
{
    const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
    for (DType dt : dtypes)
        for (std::int64_t n : sizes)
            for (std::int64_t at : {std::int64_t{0}, n / 2, n - 1}) {
                INFO(dtype_name(dt), " n=", n, " at=", at);
                Value a = make(n, dt, 60), b = make(9000, dt, 61);
                std::vector<const Value*> xs{&b, &a};
                a.set(at, inf);
                CHECK_FALSE(k::all_finite(xs));
                CHECK(k::max_abs(xs) == inf);
                CHECK(std::isinf(k::sum_squares(xs)));
                a.set(at, nan);
                CHECK_FALSE(k::all_finite(xs));
                CHECK(std::isnan(k::max_abs(xs)));
                CHECK(std::isnan(k::sum_squares(xs)));
                std::vector<Value*> ys{&a};
                k::clamp_(ys, -1, 1);
                CHECK(std::isnan(a.at(at)));
            }
    CHECK(k::sum_squares(std::vector<const Value*>{}) == 0);
    CHECK(k::all_finite(std::vector<const Value*>{}));
}
