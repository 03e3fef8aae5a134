// Shape ops (reshape, permute, slice, split, concat, broadcast_to), matmul and index_select.
// Dimension letters: B batch dims, M/K/N matrix dims.
#include <algorithm>
#include <cstring>

#include "autograd/checks.hpp"
#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "tensor/kernels.hpp"

namespace spool {

namespace k = kernels;

using detail::check_defined;

// ---- reshape family ------------------------------------------------------------------------------

// reshape(x, shape) -> y (shares storage)        dx += dy viewed as x's shape
Tensor reshape(const Tensor& x, const std::vector<std::int64_t>& shape)
{
    detail::OpProfile prof(OpKind::Reshape);
    check_defined(x, "reshape");
    std::vector<std::int64_t> dims = shape;
    int infer = -1;
    for (std::size_t i = 0; i < dims.size(); ++i) {
        if (dims[i] != -1) continue;
        SPOOL_CHECK(infer < 0, ShapeError, "reshape: only one dimension can be inferred (-1)");
        infer = static_cast<int>(i);
        dims[i] = 1;
    }
    Shape out(dims, "reshape");  // rejects negative dims and element counts that overflow
    if (infer >= 0) {
        const std::int64_t known = out.numel();
        SPOOL_CHECK(known > 0 && x.numel() % known == 0, ShapeError, "reshape: shape ", to_string(out),
                    " with dimension ", infer, " inferred (-1) is invalid for input of size ", x.numel());
        out.set(infer, x.numel() / known, "reshape");
    }
    SPOOL_CHECK(out.numel() == x.numel(), ShapeError, "reshape: shape ", to_string(out), " is invalid for input ",
                to_string(x.shape()), " of size ", x.numel());
    if (out == x.shape()) return x;
    return record(OpKind::Reshape, {x}, x.value().view(out),
                  [sx = x.shape()](const Value& dy, Grads& dx) { dx.add(0, dy.view(sx)); });
}

Tensor view(const Tensor& x, const std::vector<std::int64_t>& shape) { return reshape(x, shape); }

Tensor flatten(const Tensor& x, int start_dim, int end_dim)
{
    check_defined(x, "flatten");
    if (x.dim() == 0) return reshape(x, {1});
    int s = normalize_axis(start_dim, x.dim(), "flatten"), e = normalize_axis(end_dim, x.dim(), "flatten");
    SPOOL_CHECK(s <= e, ValueError, "flatten: start_dim cannot come after end_dim; got ", start_dim, " and ", end_dim);
    std::vector<std::int64_t> out;
    for (int i = 0; i < s; ++i) out.push_back(x.shape()[i]);
    out.push_back(x.shape().prod(s, e + 1));
    for (int i = e + 1; i < x.dim(); ++i) out.push_back(x.shape()[i]);
    return reshape(x, out);
}

Tensor unsqueeze(const Tensor& x, int dim)
{
    check_defined(x, "unsqueeze");
    int d = normalize_axis(dim, x.dim() + 1, "unsqueeze");
    auto s = x.shape().vec();
    s.insert(s.begin() + d, 1);
    return reshape(x, s);
}

Tensor squeeze(const Tensor& x, int dim)
{
    check_defined(x, "squeeze");
    if (x.dim() == 0) return x;
    int d = normalize_axis(dim, x.dim(), "squeeze");
    if (x.shape()[d] != 1) return x;
    auto s = x.shape().vec();
    s.erase(s.begin() + d);
    return reshape(x, s);
}

// permute(x, p) -> y[i...] = x[p(i)...]          dx += permute(dy, p^-1)
Tensor permute(const Tensor& x, const std::vector<int>& dims)
{
    detail::OpProfile prof(OpKind::Permute);
    check_defined(x, "permute");
    Value y = k::permute(x.value(), dims);
    std::vector<int> inv(dims.size());
    for (std::size_t i = 0; i < dims.size(); ++i) inv[normalize_axis(dims[i], x.dim(), "permute")] = static_cast<int>(i);
    return record(OpKind::Permute, {x}, std::move(y),
                  [inv](const Value& dy, Grads& dx) { dx.add(0, k::permute(dy, inv)); });
}

Tensor transpose(const Tensor& x, int dim0, int dim1)
{
    check_defined(x, "transpose");
    int a = normalize_axis(dim0, x.dim(), "transpose"), b = normalize_axis(dim1, x.dim(), "transpose");
    if (a == b || x.dim() < 2) return x;
    std::vector<int> p(x.dim());
    for (int i = 0; i < x.dim(); ++i) p[i] = i;
    std::swap(p[a], p[b]);
    return permute(x, p);
}

// slice(x, dim, start, end, step) -> y          dx += dy scattered back (zeros elsewhere)
Tensor slice(const Tensor& x, int dim, std::int64_t start, std::int64_t end, std::int64_t step)
{
    detail::OpProfile prof(OpKind::Slice);
    check_defined(x, "slice");
    int d = normalize_axis(dim, x.dim(), "slice");
    SPOOL_CHECK(step > 0, ValueError, "slice: step must be positive; got ", step);
    std::int64_t n = x.shape()[d];
    // Python's rules: negative counts from the end, then clamp to [0, n]
    if (start < 0) start += n;
    if (end < 0) end += n;
    start = std::clamp<std::int64_t>(start, 0, n);
    end = std::clamp<std::int64_t>(end, 0, n);
    if (end < start) end = start;
    Value y = k::slice(x.value(), d, start, end, step);
    return record(OpKind::Slice, {x}, std::move(y), [sx = x.shape(), d, start, step](const Value& dy, Grads& dx) {
        dx.add(0, k::slice_backward(dy, sx, d, start, step));
    });
}

// split(x, sizes, dim) -> y_i = x[o_i : o_i + sizes_i] along dim     dx += concat(dy_i) (0 where none)
std::vector<Tensor> split(const Tensor& x, const std::vector<std::int64_t>& sizes, int dim)
{
    detail::OpProfile prof(OpKind::Split);
    check_defined(x, "split");
    const int d = normalize_axis(dim, x.dim(), "split");
    std::string listed;
    std::int64_t total = 0;
    bool nonneg = true;
    for (std::int64_t s : sizes) {
        listed += (listed.empty() ? "" : ", ") + std::to_string(s);
        nonneg = nonneg && s >= 0;
        total += s;
    }
    SPOOL_CHECK(nonneg && total == x.shape()[d], ValueError, "split: section sizes [", listed,
                "] must be >= 0 and add up to ", x.shape()[d], ", the size of dim ", d, " of ", to_string(x.shape()));
    std::vector<Value> outs;
    std::int64_t at = 0;
    for (std::int64_t s : sizes) {
        outs.push_back(k::slice(x.value(), d, at, at + s, 1));
        at += s;
    }
    auto backward = [sizes, d, xs = x.shape(), dt = x.dtype()](const std::vector<Value>& dy, Grads& dx) {
        std::vector<Value> parts;
        for (std::size_t i = 0; i < sizes.size(); ++i) {
            if (dy[i].defined()) {
                parts.push_back(dy[i]);
                continue;
            }
            Shape ps = xs;
            ps.set(d, sizes[i], "split");
            parts.push_back(Value::zeros(ps, dt));
        }
        dx.add(0, k::concat(parts, d));
    };
    return record_multi(OpKind::Split, {x}, std::move(outs), backward);
}

std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, int dim)
{
    check_defined(x, "split");
    const std::int64_t n = x.shape()[normalize_axis(dim, x.dim(), "split")];
    SPOOL_CHECK(split_size > 0 || (split_size == 0 && n == 0), ValueError,
                "split: split_size must be positive (0 only for an empty dim); got ", split_size);
    std::vector<std::int64_t> sizes;
    for (std::int64_t at = 0; at < n; at += split_size) sizes.push_back(std::min(split_size, n - at));
    if (sizes.empty()) sizes.push_back(0);
    return split(x, sizes, dim);
}

// concat(xs, dim) -> y            dx_i += dy[offset_i : offset_i + n_i] along dim
Tensor concat(const std::vector<Tensor>& xs, int dim)
{
    detail::OpProfile prof(OpKind::Concat);
    SPOOL_CHECK(!xs.empty(), ValueError, "concat: expected a non-empty list of tensors");
    std::vector<Value> vals;
    for (const auto& x : xs) {
        check_defined(x, "concat");
        vals.push_back(x.value());
    }
    int d = normalize_axis(dim, xs[0].dim(), "concat");
    Value y = k::concat(vals, d);
    std::vector<std::int64_t> sizes;
    for (const auto& x : xs) sizes.push_back(x.shape()[d]);
    return record(OpKind::Concat, xs, std::move(y), [sizes, d](const Value& dy, Grads& dx) {
        std::int64_t at = 0;
        for (int i = 0; i < dx.size(); ++i) {
            if (dx.needs(i)) dx.add(i, k::slice(dy, d, at, at + sizes[i], 1));
            at += sizes[i];
        }
    });
}

Tensor cat(const std::vector<Tensor>& xs, int dim) { return concat(xs, dim); }

// broadcast_to(x, shape) -> y     dx += sum_to(dy, x.shape)
Tensor broadcast_to(const Tensor& x, const Shape& shape)
{
    detail::OpProfile prof(OpKind::BroadcastTo);
    check_defined(x, "broadcast_to");
    if (x.shape() == shape) return x;
    return record(OpKind::BroadcastTo, {x}, k::broadcast_to(x.value(), shape),
                  [sx = x.shape()](const Value& dy, Grads& dx) { dx.add(0, k::sum_to(dy, sx)); });
}

// ---- matmul --------------------------------------------------------------------------------------

// matmul(a, b) -> C[B, M, N] = A[B, M, K] · B[B, K, N]   (batch dims broadcast)
//   dA += sum_to(dC · Bᵀ), dB += sum_to(Aᵀ · dC)   — transpose flags, no copies       saves a, b
namespace {
Tensor matmul_nd(const Tensor& a, const Tensor& b)
{
    Value va = a.value(), vb = b.value();
    Value c = k::matmul(va, vb);
    return record(
        OpKind::Matmul, {a, b}, std::move(c),
        [va, vb](const Value& dc, Grads& dx) {
            if (dx.needs(0)) dx.add(0, k::sum_to(k::matmul(dc, vb, false, true), va.shape()));
            if (dx.needs(1)) dx.add(1, k::sum_to(k::matmul(va, dc, true, false), vb.shape()));
        },
        {va, vb});
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b)
{
    detail::OpProfile prof(OpKind::Matmul);
    check_defined(a, "matmul");
    check_defined(b, "matmul");
    SPOOL_CHECK(is_floating(a.dtype()) && a.dtype() == b.dtype(), TypeError,
                "matmul: expected two float tensors of the same dtype; got ", dtype_name(a.dtype()), " and ",
                dtype_name(b.dtype()));
    SPOOL_CHECK(a.dim() >= 1 && b.dim() >= 1, ShapeError, "matmul: both arguments need at least 1 dimension; got ",
                to_string(a.shape()), " and ", to_string(b.shape()));
    std::int64_t ka = a.shape()[a.dim() - 1];
    std::int64_t kb = b.dim() == 1 ? b.shape()[0] : b.shape()[b.dim() - 2];
    SPOOL_CHECK(ka == kb, ShapeError, "matmul: shapes cannot be multiplied; got ", to_string(a.shape()), " and ",
                to_string(b.shape()), " (", ka, " != ", kb, ")");
    // 1-D operands as in torch.matmul: a vector on the left is a row, on the right a column,
    // and the added dimension is removed from the result
    if (a.dim() == 1 && b.dim() == 1) return reshape(matmul_nd(unsqueeze(a, 0), unsqueeze(b, 1)), {});
    if (a.dim() == 1) return squeeze(matmul_nd(unsqueeze(a, 0), b), -2);
    if (b.dim() == 1) return squeeze(matmul_nd(a, unsqueeze(b, 1)), -1);
    return matmul_nd(a, b);
}

// ---- indexing ------------------------------------------------------------------------------------

// index_select(x, dim, idx) -> y  dx += index_add(dy) (rows picked twice get both)      saves idx
Tensor index_select(const Tensor& x, int dim, const Tensor& idx)
{
    detail::OpProfile prof(OpKind::IndexSelect);
    check_defined(x, "index_select");
    check_defined(idx, "index_select");
    int d = normalize_axis(dim, x.dim(), "index_select");
    Value vi = idx.value();
    Value y = k::index_select(x.value(), d, vi);
    return record(
        OpKind::IndexSelect, {x}, std::move(y),
        [vi, d, sx = x.shape()](const Value& dy, Grads& dx) { dx.add(0, k::index_add(dy, sx, d, vi)); }, {vi});
}

Tensor embedding(const Tensor& weight, const Tensor& ids, std::optional<std::int64_t> padding_idx)
{
    check_defined(weight, "embedding");
    SPOOL_CHECK(weight.dim() == 2, ShapeError, "embedding: weight must be 2-D [num_embeddings, embedding_dim]; got ",
                to_string(weight.shape()));
    if (!padding_idx) return index_select(weight, 0, ids);
    detail::OpProfile prof(OpKind::IndexSelect);  // (index_select above profiles itself)
    const std::int64_t V = weight.shape()[0], E = weight.shape()[1], pad = *padding_idx;
    SPOOL_CHECK(pad >= 0 && pad < V, ValueError, "embedding: padding_idx ", pad, " is out of range for ", V,
                " embeddings");
    // index_select whose backward leaves the padding row out
    Value vi = ids.value();
    Value y = k::index_select(weight.value(), 0, vi);
    return record(
        OpKind::IndexSelect, {weight}, std::move(y),
        [vi, pad, E, sw = weight.shape()](const Value& dy, Grads& dx) {
            Value g = k::index_add(dy, sw, 0, vi);
            std::memset(static_cast<char*>(g.raw()) + pad * E * itemsize(g.dtype()), 0, E * itemsize(g.dtype()));
            dx.add(0, g);
        },
        {vi});
}

}  // namespace spool
