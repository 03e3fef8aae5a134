// Shape: up to 8 dimensions held inline (no heap allocation per tensor), plus
// the helpers every op needs: numel, axis normalisation, broadcasting, printing.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>
#include <vector>

namespace spool {

/// Every Shape satisfies: rank <= max_rank, dims >= 0, and the product of its nonzero dims
/// is at most max_numel. So numel(), prod() and strides() of a Shape, and of any shape made
/// by dropping or shrinking its dims (a reduction of a zero-size tensor), cannot overflow,
/// and numel * itemsize fits in ptrdiff_t for every dtype. Construction and set() enforce it.
class Shape {
public:
    static constexpr int max_rank = 8;
    /// Most elements a tensor may have: its byte size must fit in ptrdiff_t at 8 bytes each.
    static constexpr std::int64_t max_numel = PTRDIFF_MAX / 8;

    Shape() = default;
    Shape(std::initializer_list<std::int64_t> dims);
    /// op names the caller in the error message when dims are invalid.
    explicit Shape(const std::vector<std::int64_t>& dims, const char* op = "Shape");

    int rank() const { return rank_; }
    std::int64_t operator[](int i) const { return dims_[i]; }
    /// Replace dim i (checked like construction).
    void set(int i, std::int64_t d, const char* op = "Shape");
    std::int64_t numel() const;
    void push_back(std::int64_t d);
    const std::int64_t* begin() const { return dims_.data(); }
    const std::int64_t* end() const { return dims_.data() + rank_; }
    std::vector<std::int64_t> vec() const { return {begin(), end()}; }

    /// Product of dims [from, to).
    std::int64_t prod(int from, int to) const;
    /// Row-major strides in elements.
    std::array<std::int64_t, max_rank> strides() const;

    friend bool operator==(const Shape& a, const Shape& b);
    friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

private:
    void assign(const std::int64_t* b, const std::int64_t* e, const char* op);
    std::array<std::int64_t, max_rank> dims_{};
    int rank_ = 0;
};

/// The shape parameter of the functions that create tensors: a Shape, or dims in braces that
/// the function validates under its own name, so zeros({1LL << 62}) reports "zeros: …" where
/// a Shape built at the call site could only say "Shape: …". Holds a reference to its
/// argument: use it as a parameter only.
class ShapeArg {
public:
    ShapeArg(const Shape& shape) : shape_(&shape) {}  // NOLINT(google-explicit-constructor)
    ShapeArg(std::initializer_list<std::int64_t> dims) : dims_(dims) {}  // NOLINT
    /// The shape, dims checked as Shape's constructor checks them, errors naming op.
    Shape get(const char* op) const;

private:
    const Shape* shape_ = nullptr;
    std::initializer_list<std::int64_t> dims_;
};

/// "(2, 3)"; a scalar prints as "()".
std::string to_string(const Shape& s);
std::ostream& operator<<(std::ostream& os, const Shape& s);

/// Normalise axis (negative counts from the end); throws ValueError naming op.
int normalize_axis(int axis, int rank, const char* op);
/// NumPy broadcast of two shapes; throws ShapeError naming op and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace spool
