#include "tensor/shape.hpp"

#include <algorithm>
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

Shape::Shape(std::initializer_list<std::int64_t> dims) { assign(dims.begin(), dims.end(), "Shape"); }

Shape::Shape(const std::vector<std::int64_t>& dims, const char* op) { assign(dims.data(), dims.data() + dims.size(), op); }

namespace {
std::string dims_string(const std::int64_t* b, const std::int64_t* e)
{
    std::string out = "(";
    for (const std::int64_t* p = b; p != e; ++p) out += (p == b ? "" : ", ") + std::to_string(*p);
    return out + (e - b == 1 ? ",)" : ")");
}
}  // namespace

// The one place a shape's size is validated: checked multiplication, so a shape whose
// element count overflows (or cannot be held in memory at any dtype) never exists.
void Shape::assign(const std::int64_t* b, const std::int64_t* e, const char* op)
{
    SPOOL_CHECK(e - b <= max_rank, ShapeError, op, ": at most ", max_rank, " dimensions are supported; got shape ",
                dims_string(b, e));
    std::int64_t n = 1;  // product of the nonzero dims: what a reduction of a zero-size tensor can produce
    for (const std::int64_t* p = b; p != e; ++p) {
        SPOOL_CHECK(*p >= 0, ShapeError, op, ": dimensions must be >= 0; got shape ", dims_string(b, e));
        SPOOL_CHECK(*p == 0 || (!__builtin_mul_overflow(n, *p, &n) && n <= max_numel), ShapeError, op,
                    ": a tensor of shape ", dims_string(b, e), " would have more than ", max_numel,
                    " elements (the most whose size in bytes fits in ptrdiff_t)");
    }
    rank_ = static_cast<int>(e - b);
    std::copy(b, e, dims_.begin());
}

void Shape::push_back(std::int64_t d)
{
    std::array<std::int64_t, max_rank + 1> dims{};
    std::copy(begin(), end(), dims.begin());
    dims[rank_] = d;
    assign(dims.data(), dims.data() + rank_ + 1, "Shape");
}

void Shape::set(int i, std::int64_t d, const char* op)
{
    SPOOL_ASSERT(i >= 0 && i < rank_);
    std::array<std::int64_t, max_rank> dims = dims_;
    dims[i] = d;
    assign(dims.data(), dims.data() + rank_, op);
}

Shape ShapeArg::get(const char* op) const
{
    if (shape_ != nullptr) return *shape_;
    return Shape(std::vector<std::int64_t>(dims_), op);
}

std::int64_t Shape::numel() const { return prod(0, rank_); }

std::int64_t Shape::prod(int from, int to) const
{
    std::int64_t n = 1;  // cannot overflow: see the class invariant
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

std::string to_string(const Shape& s) { return dims_string(s.begin(), s.end()); }

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
    return Shape(out, op);
}

}  // namespace spool
