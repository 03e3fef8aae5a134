// The opt-in xtensor interop: views of a Tensor's buffer (reads, writes, shape and strides,
// dtype errors, lifetime), Tensors from expressions and moved-in containers (values and
// pointers), the copying round trip, and a gradient read back as an xarray.
#include <doctest/doctest.h>

#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xview.hpp>

#include "autograd/xtensor.hpp"
#include "spool.hpp"

using namespace spool;

// ---- views ---------------------------------------------------------------------------------

TEST_CASE("as_xtensor sees the tensor's elements, shape and row-major strides without a copy")
{
    Tensor t = reshape(arange(0, 24, 1, {.dtype = f32}), {2, 3, 4});
    auto v = as_xtensor<float>(t);
    CHECK(v.data() == t.data<float>());
    CHECK(v.dimension() == 3);
    CHECK(v.shape() == xt::dynamic_shape<std::size_t>{2, 3, 4});
    CHECK(v.strides() == xt::dynamic_shape<std::ptrdiff_t>{12, 4, 1});
    CHECK(v(1, 2, 3) == 23.0f);
    CHECK(v(0, 1, 0) == 4.0f);
    CHECK(xt::sum(v)() == doctest::Approx(276.0));
    // a 0-d tensor is a 0-d view of its one element
    Tensor s = scalar(2.5, {.dtype = f64});
    auto vs = as_xtensor<double>(s);
    CHECK(vs.dimension() == 0);
    CHECK(vs() == 2.5);
}

TEST_CASE("as_xtensor of a narrowed value starts at the view's first element")
{
    Tensor t = reshape(arange(0, 12, 1, {.dtype = f64}), {4, 3});
    Tensor rows = Tensor(t.value().narrow0(1, 3));
    auto v = as_xtensor<double>(rows);
    CHECK(v.shape() == xt::dynamic_shape<std::size_t>{2, 3});
    CHECK(v(0, 0) == 3.0);
    CHECK(v(1, 2) == 8.0);
}

TEST_CASE("as_xtensor_mut writes through to the tensor and bumps its version once")
{
    Tensor t = zeros({2, 3});
    const auto before = t.value().version();
    auto v = as_xtensor_mut<float>(t);
    CHECK(t.value().version() == before + 1);
    v(1, 2) = 7.0f;
    xt::view(v, 0, xt::all()) = xt::xarray<float>{1.0f, 2.0f, 3.0f};
    CHECK(t.tolist() == std::vector<double>{1, 2, 3, 0, 0, 7});
    CHECK(t.value().version() == before + 1);  // writes after making the view are not counted
    // the tensor's own changes show through the view
    t.value().set(3, -4.0);
    CHECK(v(1, 0) == -4.0f);
    // copies of a view alias the same buffer
    auto w = v;
    w(0, 0) = 9.0f;
    CHECK(t.at({0, 0}) == 9.0);
    // int64 and bool tensors too
    Tensor ids = zeros({3}, {.dtype = i64});
    as_xtensor_mut<std::int64_t>(ids) = xt::xarray<std::int64_t>{5, 6, (std::int64_t{1} << 53) + 1};
    CHECK(ids.tolist<std::int64_t>() == std::vector<std::int64_t>{5, 6, (std::int64_t{1} << 53) + 1});
    Tensor mask = zeros({2}, {.dtype = bool_});
    as_xtensor_mut<bool>(mask)(1) = true;
    CHECK(mask.tolist<bool>() == std::vector<bool>{false, true});
}

TEST_CASE("as_xtensor_mut refuses a tensor that requires grad; its detach() can be written")
{
    Tensor p = zeros({2}, {.requires_grad = true});
    CHECK_THROWS_WITH_AS(as_xtensor_mut<float>(p),
                         "as_xtensor_mut: the tensor requires grad and writes through a view bypass autograd; "
                         "view t.detach() instead",
                         ValueError);
    as_xtensor_mut<float>(p.detach()) = xt::xarray<float>{0.5f, -0.5f};
    CHECK(p.tolist() == std::vector<double>{0.5, -0.5});
    CHECK(p.requires_grad());
    // reading a tensor that requires grad is allowed: it changes nothing
    CHECK(as_xtensor<float>(p)(1) == -0.5f);
}

TEST_CASE("a view of the wrong element type throws TypeError naming both dtypes")
{
    Tensor t = zeros({2, 2});
    CHECK_THROWS_WITH_AS(as_xtensor<double>(t),
                         "as_xtensor: tensor is float32; asked for a view of float64 (convert first with to(t, dtype))",
                         TypeError);
    Tensor ids = zeros({2}, {.dtype = i64});
    CHECK_THROWS_WITH_AS(as_xtensor_mut<float>(ids),
                         "as_xtensor_mut: tensor is int64; asked for a view of float32 (convert first with to(t, dtype))",
                         TypeError);
    CHECK_THROWS_WITH_AS(to_xarray<bool>(t),
                         "to_xarray: tensor is float32; asked for a view of bool (convert first with to(t, dtype))",
                         TypeError);
}

TEST_CASE("a view keeps the buffer alive after the last Tensor handle is gone")
{
    XtensorView<const float> v = as_xtensor<float>(zeros({1}));  // the Tensor was a temporary
    const float* p = nullptr;
    {
        Tensor t = full({3, 2}, 1.5);
        p = t.data<float>();
        v = as_xtensor<float>(t);
        CHECK(t.value().use_count() == 2);  // the tensor and the view
    }
    CHECK(v.data() == p);
    CHECK(v.shape() == xt::dynamic_shape<std::size_t>{3, 2});
    CHECK(xt::all(xt::equal(v, 1.5f)));
    // the view alone holds the storage: a new tensor of that size cannot reuse the buffer
    Tensor other = zeros({3, 2});
    CHECK(other.data<float>() != p);
    CHECK(v(2, 1) == 1.5f);
}

// ---- Tensors from xtensor ------------------------------------------------------------------

TEST_CASE("from_xtensor evaluates an expression into a new tensor")
{
    xt::xarray<double> a = {{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}};
    xt::xarray<double> b = {10.0, 20.0, 30.0};
    Tensor t = from_xtensor(a * 2.0 + b);  // broadcasting expression, never an xarray
    CHECK(t.dtype() == f64);
    CHECK(t.shape() == Shape({2, 3}));
    CHECK(t.tolist() == std::vector<double>{12, 24, 36, 18, 30, 42});
    // reductions, comparisons (bool) and casts pick the dtype from the value_type
    Tensor rows = from_xtensor(xt::sum(a, {1}));
    CHECK(rows.shape() == Shape({2}));
    CHECK(rows.tolist() == std::vector<double>{6, 15});
    Tensor big = from_xtensor(a > 2.5);
    CHECK(big.dtype() == bool_);
    CHECK(big.tolist<bool>() == std::vector<bool>{false, false, true, true, true, true});
    Tensor ids = from_xtensor(xt::cast<std::int64_t>(xt::arange(4)));
    CHECK(ids.dtype() == i64);
    CHECK(ids.tolist<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3});
    // an expression over a view of a tensor gives a new tensor; the source is unchanged
    Tensor x = from_vector(std::vector<float>{1, -2, 3, -4}, {2, 2});
    Tensor y = from_xtensor(xt::abs(as_xtensor<float>(x)), true);
    CHECK(y.requires_grad());
    CHECK(!y.value().shares_storage(x.value()));
    CHECK(y.tolist() == std::vector<double>{1, 2, 3, 4});
    CHECK(x.tolist() == std::vector<double>{1, -2, 3, -4});
    // a column-major container arrives in row-major order
    xt::xarray<float, xt::layout_type::column_major> cm = {{1.0f, 2.0f}, {3.0f, 4.0f}};
    CHECK(from_xtensor(cm).tolist() == std::vector<double>{1, 2, 3, 4});
}

TEST_CASE("from_xtensor of a moved xarray or xtensor adopts its buffer (same pointer)")
{
    xt::xarray<float> a = {{1.0f, 2.0f}, {3.0f, 4.0f}, {5.0f, 6.0f}};
    const float* p = a.data();
    Tensor t = from_xtensor(std::move(a), true);
    CHECK(t.data<float>() == p);
    CHECK(t.shape() == Shape({3, 2}));
    CHECK(t.requires_grad());
    CHECK(t.tolist() == std::vector<double>{1, 2, 3, 4, 5, 6});
    // the adopted buffer behaves like any other: ops read it, backward reaches it
    {
        Tape tape;
        tape.backward(sum(t * t));
    }
    CHECK(t.grad().tolist() == std::vector<double>{2, 4, 6, 8, 10, 12});

    xt::xtensor<std::int64_t, 1> ids = {3, 1, 4};
    const std::int64_t* q = ids.data();
    Tensor ti = from_xtensor(std::move(ids));
    CHECK(ti.data<std::int64_t>() == q);
    CHECK(ti.dtype() == i64);
    CHECK(ti.tolist<std::int64_t>() == std::vector<std::int64_t>{3, 1, 4});

    // an lvalue is copied: both stay independent
    xt::xarray<double> c = {1.0, 2.0};
    Tensor tc = from_xtensor(c);
    CHECK(tc.data<double>() != c.data());
    c(0) = 5.0;
    CHECK(tc.tolist() == std::vector<double>{1, 2});
}

TEST_CASE("an adopted buffer outlives its tensor through views and is not the allocator's")
{
    XtensorView<const double> v = as_xtensor<double>(zeros({1}, {.dtype = f64}));
    const auto in_use = allocator_stats().bytes_in_use;
    {
        Tensor t = from_xtensor(xt::xarray<double>(xt::arange<double>(0.0, 4096.0)));
        CHECK(allocator_stats().bytes_in_use == in_use);  // no spool buffer was allocated
        v = as_xtensor<double>(t);
    }
    CHECK(v.size() == 4096);
    CHECK(v(4095) == 4095.0);
    CHECK(xt::sum(v)() == doctest::Approx(4095.0 * 4096.0 / 2));
}

// ---- copies ----------------------------------------------------------------------------------

TEST_CASE("xarray -> Tensor -> xarray round trip keeps shape and values")
{
    xt::xarray<double> a = {{1.0, 2.0, 3.0}, {4.0, 5.0, 6.0}};
    Tensor t = from_xarray(a, true);
    CHECK(t.shape() == Shape({2, 3}));
    CHECK(t.dtype() == f64);
    CHECK(t.requires_grad());
    CHECK(to_xarray<double>(t) == a);
    // a non-contiguous view copies in row-major order
    xt::xarray<double> col = xt::view(a, xt::all(), 1);
    CHECK(from_xarray(col).tolist() == std::vector<double>{2, 5});
    CHECK_THROWS_AS(to_xarray<float>(t), TypeError);
    // to_xarray copies: changing the xarray leaves the tensor alone
    xt::xarray<double> back = to_xarray<double>(t);
    back(0, 0) = 100.0;
    CHECK(t.at({0, 0}) == 1.0);
}

TEST_CASE("gradients come back as xarrays")
{
    xt::xarray<float> w = {0.5f, -1.0f};
    Tensor tw = from_xarray(w, true);
    Tape tape;
    tape.backward(sum(tw * tw));
    xt::xarray<float> g = to_xarray<float>(tw.grad());
    CHECK(g(0) == doctest::Approx(1.0));
    CHECK(g(1) == doctest::Approx(-2.0));
    // metrics straight from a view: the argmax of each row of logits
    Tensor logits = from_vector(std::vector<float>{0.1f, 2.0f, -1.0f, 3.0f, 0.5f, 0.2f}, {2, 3});
    xt::xarray<std::size_t> best = xt::argmax(as_xtensor<float>(logits), 1);
    CHECK(best == xt::xarray<std::size_t>{1, 0});
}
