// The opt-in xtensor interop: round trips and a gradient read back as an xarray.
#include <doctest/doctest.h>

#include <xtensor/xview.hpp>

#include "autograd/xtensor.hpp"
#include "spool.hpp"

using namespace spool;

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
}
