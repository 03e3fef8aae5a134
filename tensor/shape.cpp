#include "tensor/shape.hpp"

#include <ostream>

#include "tensor/dtype.hpp"
#include "tensor/errors.hpp"

namespace spool {

const char* dtype_name(DType dt)
{
    switch (dt) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i64: return "int64";
    case DType::b8: return "bool";
    }
    return "?";
}

std::size_t itemsize(DType dt)
{
    switch (dt) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i64: return 8;
    case DType::b8: return 1;
    }
    return 0;
}

Shape::Shape(std::initializer_list<std::int64_t> dims)
{
    for (auto d : dims) push_back(d);
}

Shape::Shape(const std::vector<std::int64_t>& dims)
{
    for (auto d : dims) push_back(d);
}

void Shape::push_back(std::int64_t d)
{
    SPOOL_CHECK(rank_ < max_rank, ShapeError, "Shape: at most ", max_rank, " dimensions are supported");
    SPOOL_CHECK(d >= 0, ShapeError, "Shape: dimensions must be >= 0; got ", d);
    dims_[rank_++] = d;
}

std::int64_t Shape::numel() const { return prod(0, rank_); }

std::int64_t Shape::prod(int from, int to) const
{
    std::int64_t n = 1;
    for (int i = from; i < to; ++i) n *= dims_[i];
    return n;
}

std::array<std::int64_t, Shape::max_rank> Shape::strides() const
{
    std::array<std::int64_t, max_rank> s{};
    std::int64_t acc = 1;
    for (int i = rank_ - 1; i >= 0; --i) {
        s[i] = acc;
        acc *= dims_[i];
    }
    return s;
}

bool operator==(const Shape& a, const Shape& b)
{
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
        if (a.dims_[i] != b.dims_[i]) return false;
    return true;
}

std::string to_string(const Shape& s)
{
    std::string out = "(";
    for (int i = 0; i < s.rank(); ++i) {
        if (i) out += ", ";
        out += std::to_string(s[i]);
    }
    if (s.rank() == 1) out += ",";
    return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << to_string(s); }

int normalize_axis(int axis, int rank, const char* op)
{
    int r = rank == 0 ? 1 : rank;  // a scalar accepts axis 0 / -1 like PyTorch
    SPOOL_CHECK(axis >= -r && axis < r, ValueError, op, ": dimension out of range (expected to be in range of [", -r,
                ", ", r - 1, "]); got ", axis);
    return axis < 0 ? axis + r : axis;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op)
{
    int r = std::max(a.rank(), b.rank());
    std::vector<std::int64_t> out(r);
    for (int i = 0; i < r; ++i) {
        int ia = a.rank() - r + i, ib = b.rank() - r + i;
        std::int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        SPOOL_CHECK(da == db || da == 1 || db == 1, ShapeError, op, ": shapes cannot be broadcast together; got ",
                    to_string(a), " and ", to_string(b));
        out[i] = da == 1 ? db : da;
    }
    return Shape(out);
}

}  // namespace spool
