// Shape, Value, allocator and creation basics.
#include <doctest/doctest.h>

#include <sstream>

#include "autograd/tensor.hpp"
#include "tensor/errors.hpp"
#include "tensor/value.hpp"

using namespace spool;

TEST_CASE("shape printing, numel, strides")
{
    Shape s{2, 3, 4};
    CHECK(to_string(s) == "(2, 3, 4)");
    CHECK(to_string(Shape{5}) == "(5,)");
    CHECK(to_string(Shape{}) == "()");
    CHECK(s.numel() == 24);
    CHECK(Shape{}.numel() == 1);
    auto st = s.strides();
    CHECK(st[0] == 12);
    CHECK(st[1] == 4);
    CHECK(st[2] == 1);
}

TEST_CASE("broadcast_shapes follows NumPy and names the op on failure")
{
    CHECK(broadcast_shapes({2, 1, 3}, {4, 1}, "add") == Shape({2, 4, 3}));
    CHECK(broadcast_shapes({}, {3}, "add") == Shape({3}));
    try {
        broadcast_shapes({2, 3}, {4}, "mul");
        FAIL("expected ShapeError");
    } catch (const ShapeError& e) {
        CHECK(std::string(e.what()) == "mul: shapes cannot be broadcast together; got (2, 3) and (4,)");
    }
    CHECK_THROWS_AS(normalize_axis(3, 2, "sum"), ValueError);
    CHECK(normalize_axis(-1, 2, "sum") == 1);
}

TEST_CASE("storage is 64-byte aligned and reused by the caching allocator")
{
    void* first;
    {
        Value v = Value::zeros(Shape{1000}, f32);
        first = v.raw();
        CHECK(reinterpret_cast<std::uintptr_t>(first) % 64 == 0);
    }
    Value w = Value::empty(Shape{1000}, f32);
    CHECK(w.raw() == first);  // same size class: the cached buffer comes back
    auto st = allocator_stats();
    CHECK(st.bytes_in_use >= 4000);
}

TEST_CASE("allocator size classes: powers of two up to 4 KiB, then quarter octaves (at most 25% waste)")
{
    auto held_for = [](std::int64_t floats) {
        const std::size_t before = allocator_stats().bytes_in_use;
        Value v = Value::empty(Shape{floats}, f32);
        return allocator_stats().bytes_in_use - before;
    };
    CHECK(held_for(1) == 64);
    CHECK(held_for(1000) == 4096);              // 4,000 bytes: a power of two below 4 KiB
    CHECK(held_for(1 << 20) == (4u << 20));     // a power of two is its own class
    CHECK(held_for(64 * 32 * 768) == 6u << 20);            // T-small's q/k/v projection: 6 MiB (was 8)
    CHECK(held_for((5 << 20) / 4 + 1) == 6u << 20);        // just past 5 MiB -> 4 + 2 x 1 MiB
    CHECK(held_for((3 << 20) / 4 + 1) == (7u << 20) / 2);  // just past 3 MiB -> 2 + 3 x 0.5 MiB
    for (std::int64_t n : {1025, 3000, 5001, 100000, 777777, 2048 * 1000, 2048 * 1100}) {
        const std::size_t held = held_for(n), bytes = 4 * static_cast<std::size_t>(n);
        INFO(n << " floats: " << held << " bytes held");
        CHECK(held >= bytes);
        CHECK(held <= bytes + bytes / 4 + 4096 / 4);
    }
}

TEST_CASE("creation: zeros, ones, full, arange, from_vector")
{
    CHECK(zeros({2, 2}).tolist() == std::vector<double>{0, 0, 0, 0});
    CHECK(ones({3}, {.dtype = f64}).tolist() == std::vector<double>{1, 1, 1});
    CHECK(full({2}, 2.5).tolist() == std::vector<double>{2.5, 2.5});
    CHECK(arange(5).tolist() == std::vector<double>{0, 1, 2, 3, 4});
    CHECK(arange(5).dtype() == i64);
    CHECK(arange(1, 2, 0.25, {.dtype = f32}).tolist() == std::vector<double>{1, 1.25, 1.5, 1.75});
    Tensor t = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK(t.at({1, 2}) == 6);
    CHECK(t.dtype() == f32);
    CHECK_THROWS_AS(from_vector(std::vector<double>{1, 2}, {3}), ShapeError);
    CHECK_THROWS_AS(t.at({2, 0}), ValueError);
    CHECK_THROWS_AS(t.item(), ValueError);
    CHECK(scalar(3).item() == 3);
    CHECK_THROWS_AS(from_vector(std::vector<std::int64_t>{1}, {1}).requires_grad_(), TypeError);
}

TEST_CASE("printing looks like PyTorch")
{
    std::ostringstream os;
    os << from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2});
    CHECK(os.str() == "tensor([[1.0000, 2.0000],\n        [3.0000, 4.0000]])");
    std::ostringstream os2;
    os2 << from_vector(std::vector<double>{0.5}, {1}, {.dtype = f64, .requires_grad = true});
    CHECK(os2.str() == "tensor([0.5000], dtype=torch.float64, requires_grad=True)");
    std::ostringstream os3;
    os3 << from_vector(std::vector<bool>{true, false}, {2});
    CHECK(os3.str() == "tensor([True, False])");
}
