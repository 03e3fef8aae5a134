// Layout kernels: permute, slice, concat, index_select / index_add, cast. They move
// bytes (any dtype) except index_add and cast, which do arithmetic. A run of trailing
// dims that stays in place is copied with memcpy (the attention head split keeps D); a
// permute that moves the last dim copies 16 x 16 tiles.
#include <algorithm>
#include <cstring>

#include "tensor/kernels.hpp"
#include "tensor/parallel.hpp"
#include "tensor/simd.hpp"

namespace spool::kernels {

using namespace detail;

namespace {
/// body(o) for o in [0, rows): each moves about bytes_per_row; threaded when the total is large.
template <class F>
void copy_rows(std::int64_t rows, F body, std::size_t bytes_per_row)
{
    const auto bytes = static_cast<std::int64_t>(bytes_per_row) * rows;
    spool::detail::parallel_for(rows, threads_for(bytes / 4), body);
}

// ---- permutes that move the last dim ------------------------------------------------------
// The source's contiguous dim lands on some output dim q and the output's contiguous dim
// reads a strided source dim, so every element moves alone. Copying element by element in
// output order reads one element per cache line; tiles of 16 x 16 reuse each line 16 times
// (bench/xtensor_kernels, transpose_2d).

constexpr std::int64_t tile = 16;

/// dst[i * ldd + j] = src[j * lds + i] for i < m, j < n (E: an unsigned type of the element's size).
template <class E>
void transpose_tile(const E* src, std::int64_t lds, E* dst, std::int64_t ldd, std::int64_t m, std::int64_t n)
{
    for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) dst[i * ldd + j] = src[j * lds + i];
}

/// y = x permuted by perm (normalised) when perm's last entry is not the last dim.
template <class E>
void permute_tiled(const Value& x, Value& y, const int* perm)
{
    const int r = x.rank();
    const Shape& out = y.shape();
    const auto xs = x.shape().strides(), ys = out.strides();
    int q = 0;  // the output dim the source's contiguous dim goes to
    while (perm[q] != r - 1) ++q;
    const std::int64_t m = out[q], n = out[r - 1], lds = xs[perm[r - 1]], ldd = ys[q];
    const std::int64_t tiles_m = (m + tile - 1) / tile, outer = out.numel() / (m * n);
    const E* src = static_cast<const E*>(x.raw());
    E* dst = static_cast<E*>(y.raw());
    // a unit: one tile row (tile indices of dim q) of one index of the other dims
    copy_rows(outer * tiles_m, [&](std::int64_t unit) {
        std::int64_t rest = unit / tiles_m, so = 0, d_off = 0;
        for (int i = r - 2; i >= 0; --i) {
            if (i == q) continue;
            const std::int64_t c = rest % out[i];
            rest /= out[i];
            so += c * xs[perm[i]];
            d_off += c * ys[i];
        }
        const std::int64_t i0 = unit % tiles_m * tile, mi = std::min(tile, m - i0);
        for (std::int64_t j0 = 0; j0 < n; j0 += tile)
            transpose_tile(src + so + i0 + j0 * lds, lds, dst + d_off + i0 * ldd + j0, ldd, mi, std::min(tile, n - j0));
    }, static_cast<std::size_t>(tile * n) * sizeof(E));
}
}  // namespace

Value permute(const Value& x, const std::vector<int>& perm)
{
    int r = x.rank();
    SPOOL_CHECK(static_cast<int>(perm.size()) == r, ShapeError, "permute: expected ", r, " dims for input ",
                to_string(x.shape()), "; got ", perm.size());
    Shape out;
    bool seen[Shape::max_rank] = {};
    for (int i = 0; i < r; ++i) {
        int p = normalize_axis(perm[i], r, "permute");
        SPOOL_CHECK(!seen[p], ValueError, "permute: dimension ", p, " repeated");
        seen[p] = true;
        out.push_back(x.shape()[p]);
    }
    Value y = Value::empty(out, x.dtype());
    if (x.numel() == 0) return y;
    auto xs = x.shape().strides();
    // trailing dims that map to themselves are one contiguous block
    int keep = r;
    while (keep > 0 && normalize_axis(perm[keep - 1], r, "permute") == keep - 1) --keep;
    std::size_t block = static_cast<std::size_t>(x.shape().prod(keep, r)) * itemsize(x.dtype());
    std::int64_t nblocks = out.prod(0, keep);
    const char* src = static_cast<const char*>(x.raw());
    char* dst = static_cast<char*>(y.raw());
    const std::size_t isz = itemsize(x.dtype());
    std::int64_t stride[Shape::max_rank] = {};  // source stride (bytes) of output dim i
    for (int i = 0; i < keep; ++i) stride[i] = xs[normalize_axis(perm[i], r, "permute")] * static_cast<std::int64_t>(isz);
    if (keep == 0) {
        std::memcpy(dst, src, block);
        return y;
    }
    if (keep == r) {  // the last dim moves: tiles, not one element per step
        int p[Shape::max_rank];
        for (int i = 0; i < r; ++i) p[i] = normalize_axis(perm[i], r, "permute");
        switch (isz) {
        case 1: permute_tiled<std::uint8_t>(x, y, p); break;
        case 4: permute_tiled<std::uint32_t>(x, y, p); break;
        default: permute_tiled<std::uint64_t>(x, y, p); break;
        }
        return y;
    }
    // rows: every output index but the last moved dim; each row copies out[keep-1] blocks
    const std::int64_t inner = out[keep - 1], rows = nblocks / inner, step = stride[keep - 1];
    copy_rows(rows, [&](std::int64_t row) {
        std::int64_t off = 0, rest = row;
        for (int i = keep - 2; i >= 0; --i) {
            off += (rest % out[i]) * stride[i];
            rest /= out[i];
        }
        char* d = dst + static_cast<std::size_t>(row * inner) * block;
        for (std::int64_t j = 0; j < inner; ++j) std::memcpy(d + static_cast<std::size_t>(j) * block, src + off + j * step, block);
    }, static_cast<std::size_t>(inner) * block);
    return y;
}

namespace {
/// For slice-like kernels: [outer, n, inner] with inner in bytes.
struct Blocks {
    std::int64_t outer, n;
    std::size_t inner_bytes;
};
Blocks blocks_of(const Shape& s, int axis, DType dt)
{
    return {s.prod(0, axis), s[axis], static_cast<std::size_t>(s.prod(axis + 1, s.rank())) * itemsize(dt)};
}
}  // namespace

Value slice(const Value& x, int axis, std::int64_t start, std::int64_t end, std::int64_t step)
{
    axis = normalize_axis(axis, x.rank(), "slice");
    std::int64_t len = end > start ? (end - start + step - 1) / step : 0;
    Shape out = x.shape();
    out.set(axis, len, "slice");
    Value y = Value::empty(out, x.dtype());
    auto b = blocks_of(x.shape(), axis, x.dtype());
    const char* src = static_cast<const char*>(x.raw());
    char* dst = static_cast<char*>(y.raw());
    if (step == 1) {  // one run of len x inner per outer index (the q/k/v split of the last dim)
        const std::size_t run = static_cast<std::size_t>(len) * b.inner_bytes;
        copy_rows(b.outer, [&](std::int64_t o) {
            std::memcpy(dst + static_cast<std::size_t>(o) * run, src + (o * b.n + start) * b.inner_bytes, run);
        }, run);
        return y;
    }
    for (std::int64_t o = 0; o < b.outer; ++o)
        for (std::int64_t j = 0; j < len; ++j)
            std::memcpy(dst + (o * len + j) * b.inner_bytes, src + (o * b.n + start + j * step) * b.inner_bytes,
                        b.inner_bytes);
    return y;
}

Value slice_backward(const Value& dy, const Shape& shape, int axis, std::int64_t start, std::int64_t step)
{
    auto b = blocks_of(shape, axis, dy.dtype());
    std::int64_t len = dy.shape()[axis];
    const char* src = static_cast<const char*>(dy.raw());
    if (step == 1) {  // per outer index: zeros before, the run of dy, zeros after
        Value dx = Value::empty(shape, dy.dtype());
        char* dst = static_cast<char*>(dx.raw());
        const std::size_t row = static_cast<std::size_t>(b.n) * b.inner_bytes, run = static_cast<std::size_t>(len) * b.inner_bytes;
        const std::size_t head = static_cast<std::size_t>(start) * b.inner_bytes;
        copy_rows(b.outer, [&](std::int64_t o) {
            char* d = dst + static_cast<std::size_t>(o) * row;
            std::memset(d, 0, head);
            std::memcpy(d + head, src + static_cast<std::size_t>(o) * run, run);
            std::memset(d + head + run, 0, row - head - run);
        }, row);
        return dx;
    }
    Value dx = Value::zeros(shape, dy.dtype());
    char* dst = static_cast<char*>(dx.raw());
    for (std::int64_t o = 0; o < b.outer; ++o)
        for (std::int64_t j = 0; j < len; ++j)
            std::memcpy(dst + (o * b.n + start + j * step) * b.inner_bytes, src + (o * len + j) * b.inner_bytes,
                        b.inner_bytes);
    return dx;
}

Value concat(const std::vector<Value>& xs, int axis)
{
    SPOOL_CHECK(!xs.empty(), ValueError, "concat: expected at least one tensor");
    const Shape& s0 = xs[0].shape();
    axis = normalize_axis(axis, s0.rank(), "concat");
    Shape out = s0;
    out.set(axis, 0, "concat");
    for (const auto& x : xs) {
        SPOOL_CHECK(x.dtype() == xs[0].dtype(), TypeError, "concat: dtypes must match; got ", dtype_name(xs[0].dtype()),
                    " and ", dtype_name(x.dtype()));
        bool ok = x.rank() == s0.rank();
        for (int i = 0; ok && i < s0.rank(); ++i) ok = i == axis || x.shape()[i] == s0[i];
        SPOOL_CHECK(ok, ShapeError, "concat: shapes must match except in dimension ", axis, "; got ", to_string(s0),
                    " and ", to_string(x.shape()));
        std::int64_t len = 0;
        SPOOL_CHECK(!__builtin_add_overflow(out[axis], x.shape()[axis], &len), ShapeError,
                    "concat: the result would have more than ", Shape::max_numel, " elements in dimension ", axis,
                    "; got ", xs.size(), " tensors of shape ", to_string(s0), " and similar");
        out.set(axis, len, "concat");
    }
    Value y = Value::empty(out, xs[0].dtype());
    auto bo = blocks_of(out, axis, y.dtype());
    char* dst = static_cast<char*>(y.raw());
    std::int64_t at = 0;
    for (const auto& x : xs) {
        auto b = blocks_of(x.shape(), axis, x.dtype());
        const char* src = static_cast<const char*>(x.raw());
        std::size_t chunk = b.n * b.inner_bytes;
        for (std::int64_t o = 0; o < b.outer; ++o)
            std::memcpy(dst + (o * bo.n + at) * bo.inner_bytes, src + o * chunk, chunk);
        at += b.n;
    }
    return y;
}

namespace {
void check_indices(const Value& idx, std::int64_t n, const char* op, const Shape& xs)
{
    SPOOL_CHECK(idx.dtype() == DType::i64, TypeError, op, ": indices must be int64; got ", dtype_name(idx.dtype()));
    const std::int64_t* p = idx.data<std::int64_t>();
    for (std::int64_t i = 0; i < idx.numel(); ++i)
        SPOOL_CHECK(p[i] >= 0 && p[i] < n, ValueError, op, ": index ", p[i], " is out of range for dimension of size ",
                    n, " (input shape ", to_string(xs), ")");
}
}  // namespace

Value index_select(const Value& x, int axis, const Value& idx)
{
    axis = normalize_axis(axis, x.rank(), "index_select");
    check_indices(idx, x.shape()[axis], "index_select", x.shape());
    Shape out;
    for (int i = 0; i < axis; ++i) out.push_back(x.shape()[i]);
    for (int i = 0; i < idx.rank(); ++i) out.push_back(idx.shape()[i]);
    for (int i = axis + 1; i < x.rank(); ++i) out.push_back(x.shape()[i]);
    Value y = Value::empty(out, x.dtype());
    auto b = blocks_of(x.shape(), axis, x.dtype());
    std::int64_t m = idx.numel();
    const std::int64_t* ip = idx.data<std::int64_t>();
    const char* src = static_cast<const char*>(x.raw());
    char* dst = static_cast<char*>(y.raw());
    for (std::int64_t o = 0; o < b.outer; ++o)
        for (std::int64_t j = 0; j < m; ++j)
            std::memcpy(dst + (o * m + j) * b.inner_bytes, src + (o * b.n + ip[j]) * b.inner_bytes, b.inner_bytes);
    return y;
}

Value index_add(const Value& dy, const Shape& shape, int axis, const Value& idx)
{
    axis = normalize_axis(axis, shape.rank(), "index_add");
    check_indices(idx, shape[axis], "index_add", shape);
    return dispatch_float(dy.dtype(), "index_add", [&]<class T>() {
        Value dx = Value::zeros(shape, dy.dtype());
        std::int64_t outer = shape.prod(0, axis), n = shape[axis], inner = shape.prod(axis + 1, shape.rank());
        std::int64_t m = idx.numel();
        const std::int64_t* ip = idx.data<std::int64_t>();
        const T* g = dy.data<T>();
        T* d = dx.data<T>();
        for (std::int64_t o = 0; o < outer; ++o)
            for (std::int64_t j = 0; j < m; ++j) {
                T* row = d + (o * n + ip[j]) * inner;
                const T* src = g + (o * m + j) * inner;
                for (std::int64_t k = 0; k < inner; ++k) row[k] += src[k];
            }
        return dx;
    });
}

Value scatter_along(const Value& dy, const Value& idx, const Shape& shape, int axis)
{
    return dispatch_float(dy.dtype(), "scatter_along", [&]<class T>() {
        Value dx = Value::zeros(shape, dy.dtype());
        auto [outer, n, inner] = split_at(shape, axis);
        const T* g = dy.data<T>();
        const std::int64_t* ip = idx.data<std::int64_t>();
        T* d = dx.data<T>();
        for (std::int64_t o = 0; o < outer; ++o)
            for (std::int64_t k = 0; k < inner; ++k) d[(o * n + ip[o * inner + k]) * inner + k] += g[o * inner + k];
        return dx;
    });
}

Value cast(const Value& x, DType dt)
{
    if (x.dtype() == dt) return x;
    Value y = Value::empty(x.shape(), dt);
    std::int64_t n = x.numel();
    auto run = [&]<class S, class D>() {
        const S* s = x.data<S>();
        D* d = y.data<D>();
        for (std::int64_t i = 0; i < n; ++i) d[i] = static_cast<D>(s[i]);
    };
    auto to = [&]<class S>() {
        switch (dt) {
        case DType::f32: run.template operator()<S, float>(); break;
        case DType::f64: run.template operator()<S, double>(); break;
        case DType::i64: run.template operator()<S, std::int64_t>(); break;
        case DType::b8: run.template operator()<S, bool>(); break;
        }
    };
    switch (x.dtype()) {
    case DType::f32: to.template operator()<float>(); break;
    case DType::f64: to.template operator()<double>(); break;
    case DType::i64: to.template operator()<std::int64_t>(); break;
    case DType::b8: to.template operator()<bool>(); break;
    }
    return y;
}

}  // namespace spool::kernels
