// Size arithmetic (issue 9): every shape's element count and byte size is computed with
// overflow checks, so a shape that cannot be allocated is a typed error naming the op and
// the shape — never a short buffer that a kernel then reads past.
#include <doctest/doctest.h>

#include <string>

#include "messages.hpp"
#include "tensor/kernels.hpp"
#include "tensor/value.hpp"

using namespace spool;
using spool::test::message_of;

namespace {
constexpr std::int64_t p2(int e) { return std::int64_t{1} << e; }
bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

TEST_CASE("a shape whose element count overflows cannot be built")
{
    // 2^62 float32 elements are 2^64 bytes: the byte size wrapped to 0 before
    CHECK(message_of<ShapeError>([] { Shape{p2(62)}; }) ==
          "Shape: a tensor of shape (4611686018427387904,) would have more than 1152921504606846975 elements (the "
          "most whose size in bytes fits in ptrdiff_t)");
    // 2^40 x 2^40 overflowed a signed product
    CHECK(starts_with(message_of<ShapeError>([] { Shape{p2(40), p2(40)}; }),
                      "Shape: a tensor of shape (1099511627776, 1099511627776) would have more than"));
    CHECK(message_of<ShapeError>([] { Shape(std::vector<std::int64_t>{3, -2}, "zeros"); }) ==
          "zeros: dimensions must be >= 0; got shape (3, -2)");
    CHECK(message_of<ShapeError>([] { Shape{1, 1, 1, 1, 1, 1, 1, 1, 1}; }) ==
          "Shape: at most 8 dimensions are supported; got shape (1, 1, 1, 1, 1, 1, 1, 1, 1)");
    // the limit itself is a valid shape (it is never allocated here)
    CHECK(Shape{Shape::max_numel}.numel() == Shape::max_numel);
    CHECK_THROWS_AS(Shape{Shape::max_numel + 1}, ShapeError);
}

TEST_CASE("a zero-size shape is checked on its nonzero dims, so its reductions are valid shapes")
{
    // [0, 2^61, 2] holds no elements, but reducing dim 0 gave (2^61, 2) over a 0-byte buffer
    CHECK(starts_with(message_of<ShapeError>([] { Shape{0, p2(61), 2}; }),
                      "Shape: a tensor of shape (0, 2305843009213693952, 2) would have more than"));
    Shape s{0, p2(58), 2};  // fine: its largest reduction has 2^59 elements
    Value z = Value::zeros(s, DType::f32);
    CHECK(z.numel() == 0);
    CHECK(z.nbytes() == 0);
    // the reduction is a legal shape, but 2^61 bytes cannot be allocated: a clean error
    CHECK(message_of<ValueError>([&] { kernels::sum(z, 0); }) ==
          "allocate: a float32 tensor of shape (1, 288230376151711744, 2) needs 2305843009213693952 bytes, more than "
          "the largest allocation (140737488355328 bytes)");
}

TEST_CASE("set, push_back, broadcasting and concat keep the size invariant")
{
    Shape s{0, 4};
    CHECK(message_of<ShapeError>([&] { s.set(1, p2(61), "slice"); }) ==
          "slice: a tensor of shape (0, 2305843009213693952) would have more than 1152921504606846975 elements (the "
          "most whose size in bytes fits in ptrdiff_t)");
    CHECK(s == Shape{0, 4});  // unchanged by the failed set
    CHECK_THROWS_AS(s.push_back(p2(60)), ShapeError);
    CHECK(s.rank() == 2);
    // (0, 2^40, 1) and (1, 1, 2^40) broadcast to a zero-size shape whose nonzero dims overflow
    CHECK(starts_with(message_of<ShapeError>([] { broadcast_shapes(Shape{0, p2(40), 1}, Shape{1, 1, p2(40)}, "add"); }),
                      "add: a tensor of shape (0, 1099511627776, 1099511627776) would have more than"));
    Value a = Value::zeros(Shape{0, p2(59)}, DType::f32);
    CHECK(starts_with(message_of<ShapeError>([&] { kernels::concat({a, a}, 1); }),
                      "concat: a tensor of shape (0, 1152921504606846976) would have more than"));
    Value b = Value::zeros(Shape{p2(59), 0}, DType::f32);
    std::vector<Value> many(17, b);  // 17 x 2^59 overflows int64 itself
    CHECK(starts_with(message_of<ShapeError>([&] { kernels::concat(many, 0); }), "concat: "));
}
