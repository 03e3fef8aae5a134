// Bad input gets a typed error whose message names the op and the shapes or values.
#include <doctest/doctest.h>

#include <string>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;
using spool::test::message_of;

TEST_CASE("shape mismatch names the op and both shapes")
{
    Tensor a = zeros({2, 3}), b = zeros({4});
    CHECK(message_of<ShapeError>([&] { add(a, b); }) == "add: shapes cannot be broadcast together; got (2, 3) and (4,)");
    CHECK(message_of<ShapeError>([&] { matmul(a, zeros({2, 5})); }) ==
          "matmul: shapes cannot be multiplied; got (2, 3) and (2, 5) (3 != 2)");
    CHECK(message_of<ShapeError>([&] { reshape(a, {4, 2}); }) ==
          "reshape: shape (4, 2) is invalid for input (2, 3) of size 6");
    CHECK(message_of<ShapeError>([&] { concat({a, zeros({2, 3, 1})}, 0); }) ==
          "concat: shapes must match except in dimension 0; got (2, 3) and (2, 3, 1)");
    CHECK(message_of<ShapeError>([&] { masked_fill(a, from_vector(std::vector<bool>{true, false}, {2}), 0); }) ==
          "masked_fill: shapes cannot be broadcast together; got (2, 3) and (2,)");
}

TEST_CASE("dtype mismatch is a TypeError")
{
    Tensor a = zeros({2}), b = zeros({2}, {.dtype = f64});
    CHECK(message_of<TypeError>([&] { mul(a, b); }) == "mul: dtypes must match; got float32 and float64");
    CHECK(message_of<TypeError>([&] { exp(arange(3)); }) == "exp: expected a float32 or float64 tensor; got int64");
    CHECK(message_of<TypeError>([&] { index_select(a, 0, zeros({1})); }) ==
          "index_select: indices must be int64; got float32");
}

TEST_CASE("out-of-range index and dimension")
{
    Tensor w = zeros({5, 3});
    CHECK(message_of<ValueError>([&] { embedding(w, from_vector(std::vector<std::int64_t>{1, 5}, {2})); }) ==
          "index_select: index 5 is out of range for dimension of size 5 (input shape (5, 3))");
    CHECK(message_of<ValueError>([&] { embedding(w, from_vector(std::vector<std::int64_t>{-1}, {1})); }) ==
          "index_select: index -1 is out of range for dimension of size 5 (input shape (5, 3))");
    CHECK(message_of<ValueError>([&] { softmax(w, 2); }) ==
          "softmax: dimension out of range (expected to be in range of [-2, 1]); got 2");
}

TEST_CASE("backward misuse")
{
    Tensor x = ones({3}, {.requires_grad = true});
    CHECK(message_of<AutogradError>([&] { sum(x).backward(); }) ==
          "backward: no live Tape on this thread; create a spool::Tape before the forward pass");
    {
        Tape tape;
        Tensor y = x * 2.0;
        CHECK(message_of<AutogradError>([&] { tape.backward(y); }) ==
              "backward: grad can be implicitly created only for scalar outputs; got shape (3,) (pass a seed gradient "
              "of that shape)");
        Tensor l = sum(y);
        tape.backward(l);
        CHECK(message_of<AutogradError>([&] { tape.backward(l); }).find(
                  "backward: this tape's backward already ran") == 0);
    }
    {
        Tape tape;
        Tensor y = x * 2.0;
        CHECK(message_of<ShapeError>([&] { tape.backward(y, ones({2})); }) ==
              "backward: seed gradient shape (2,) does not match the output shape (3,)");
    }
    {
        Tape tape;
        Tensor c = ones({3}) * 2.0;
        CHECK(message_of<AutogradError>([&] { tape.backward(sum(c)); }).find(
                  "backward: the tensor does not require grad") == 0);
    }
}

TEST_CASE("bad option values")
{
    Tensor x = ones({3});
    CHECK(message_of<ValueError>([&] { dropout(x, 1.5); }) == "dropout: probability has to be between 0 and 1; got 1.5");
    CHECK(message_of<ValueError>([&] { gelu(x, "fast"); }) == "gelu: approximate must be 'none' or 'tanh'; got 'fast'");
    CHECK(message_of<ValueError>([&] { clamp(x, 2.0, 1.0); }) == "clamp: min must be <= max; got min 2 and max 1");
    CHECK(message_of<ValueError>([&] { slice(x, 0, 0, 2, 0); }) == "slice: step must be positive; got 0");
    Tensor m = ones({2, 5});
    CHECK(message_of<ValueError>([&] { split(m, std::vector<std::int64_t>{2, 2}, 1); }) ==
          "split: section sizes [2, 2] must be >= 0 and add up to 5, the size of dim 1 of (2, 5)");
    CHECK(message_of<ValueError>([&] { split(m, std::vector<std::int64_t>{6, -1}, -1); }) ==
          "split: section sizes [6, -1] must be >= 0 and add up to 5, the size of dim 1 of (2, 5)");
    CHECK(message_of<ValueError>([&] { split(m, std::int64_t{0}, 1); }) ==
          "split: split_size must be positive (0 only for an empty dim); got 0");
    // torch.split's piece sizes: 5 in pieces of 2 -> 2, 2, 1
    const auto pieces = split(m, std::int64_t{2}, 1);
    REQUIRE(pieces.size() == 3);
    CHECK(pieces[2].shape() == Shape({2, 1}));
}
