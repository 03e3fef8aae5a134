// DistributedDataParallel: bucket planning and the gradient sync.
// A bucket's flat buffer is [gradients of its parameters..., one flag per parameter]: the
// flag is 1 where this rank has a gradient, so after the sum it counts the ranks that had
// one, and a parameter no rank touched keeps no gradient everywhere.
#include "dist/ddp.hpp"

#include <chrono>
#include <cstring>

#include "dist/comm.hpp"
#include "nn/module.hpp"
#include "tensor/errors.hpp"
#include "tensor/value.hpp"

namespace spool::dist {

namespace {
using steady = std::chrono::steady_clock;

double since(steady::time_point t) { return std::chrono::duration<double>(steady::now() - t).count(); }

template <class T>
void divide(T* p, std::int64_t n, int by)
{
    for (std::int64_t i = 0; i < n; ++i) p[i] /= static_cast<T>(by);
}

/// Pack b's gradients and flags into flat (zeros where a parameter has none).
void pack(const Bucket& b, const std::vector<Tensor>& params, Value& flat)
{
    char* out = static_cast<char*>(flat.raw());
    const std::size_t item = itemsize(b.dtype);
    std::int64_t off = 0;
    for (std::size_t k = 0; k < b.params.size(); ++k) {
        const Tensor& p = params[b.params[k]];
        const Tensor g = p.grad();
        const std::size_t bytes = static_cast<std::size_t>(p.numel()) * item;
        if (g.defined()) std::memcpy(out + off * item, g.value().raw(), bytes);
        else std::memset(out + off * item, 0, bytes);
        flat.set(b.numel + static_cast<std::int64_t>(k), g.defined() ? 1.0 : 0.0);
        off += p.numel();
    }
}

/// Divide the sums by the number of ranks and hand each parameter its averaged gradient.
void unpack(const Bucket& b, std::vector<Tensor>& params, Value& flat, int world)
{
    if (b.dtype == DType::f32) divide(flat.data<float>(), b.numel, world);
    else divide(flat.data<double>(), b.numel, world);
    const char* in = static_cast<const char*>(flat.raw());
    const std::size_t item = itemsize(b.dtype);
    std::int64_t off = 0;
    for (std::size_t k = 0; k < b.params.size(); ++k) {
        Tensor& p = params[b.params[k]];
        if (flat.at(b.numel + static_cast<std::int64_t>(k)) == 0) {
            p.set_grad(Tensor());  // no rank produced one: keep none, as one process would
        } else {
            Value g = Value::empty(p.shape(), b.dtype);
            std::memcpy(g.raw(), in + off * item, static_cast<std::size_t>(p.numel()) * item);
            p.set_grad(Tensor(std::move(g)));
        }
        off += p.numel();
    }
}
}  // namespace

DistributedDataParallel::DistributedDataParallel(nn::Module& m, DistributedDataParallelOptions options)
    : module_(&m), options_(options)
{
    SPOOL_CHECK(options.bucket_cap_mb > 0, ValueError,
                "DistributedDataParallel: bucket_cap_mb must be > 0; got ", options.bucket_cap_mb);
    init();
    for (auto& [name, p] : m.named_parameters()) broadcast(p, 0);
    if (options.broadcast_buffers)
        for (auto& [name, b] : m.named_buffers()) broadcast(b, 0);

    for (const Tensor& p : m.parameters())
        if (p.requires_grad()) params_.push_back(p);
    // reverse registration order: the last layers' gradients are final first in backward
    const double cap = options.bucket_cap_mb * 1024 * 1024;
    for (int i = static_cast<int>(params_.size()) - 1; i >= 0; --i) {
        const DType dt = params_[i].dtype();
        Bucket* open = nullptr;
        for (Bucket& b : buckets_)  // the newest bucket of this dtype, if it still has room
            if (b.dtype == dt) open = &b;
        if (!open || static_cast<double>(open->numel) * itemsize(dt) >= cap) {
            buckets_.push_back(Bucket{.dtype = dt, .params = {}, .numel = 0});
            open = &buckets_.back();
        }
        open->params.push_back(i);
        open->numel += params_[i].numel();
        SPOOL_CHECK(open->numel + static_cast<std::int64_t>(open->params.size()) <= detail::max_count, ValueError,
                    "DistributedDataParallel: a bucket would hold ", open->numel,
                    " elements, more than one MPI call takes; lower bucket_cap_mb");
    }
}

void DistributedDataParallel::finish_gradient_sync()
{
    if (!sync_) return;
    const auto t0 = steady::now();
    MPI_Comm c = detail::comm("finish_gradient_sync");
    const int world = world_size();
    stats_ = SyncStats{};
    std::vector<Value> flats(buckets_.size());
    std::vector<MPI_Request> reqs(buckets_.size(), MPI_REQUEST_NULL);
    // bucket k+1 is packed while bucket k's all-reduce is in flight
    for (std::size_t k = 0; k < buckets_.size(); ++k) {
        const Bucket& b = buckets_[k];
        flats[k] = Value::empty(Shape{b.numel + static_cast<std::int64_t>(b.params.size())}, b.dtype);
        pack(b, params_, flats[k]);
        detail::check(MPI_Iallreduce(MPI_IN_PLACE, flats[k].raw(), static_cast<int>(flats[k].numel()),
                                     detail::mpi_type(b.dtype), MPI_SUM, c, &reqs[k]),
                      "finish_gradient_sync");
        stats_.bytes += flats[k].nbytes();
    }
    stats_.buckets = buckets_.size();
    const auto w = steady::now();
    detail::wait_all(reqs.data(), static_cast<int>(reqs.size()), "finish_gradient_sync",
                     ::spool::detail::cat("gradient all-reduce, ", buckets_.size(), " buckets, ", stats_.bytes,
                                          " bytes"));
    stats_.wait_seconds = since(w);
    for (std::size_t k = 0; k < buckets_.size(); ++k) unpack(buckets_[k], params_, flats[k], world);
    stats_.seconds = since(t0);
}

}  // namespace spool::dist
