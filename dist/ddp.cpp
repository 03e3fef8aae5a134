// DistributedDataParallel: bucket planning, the gradient-ready hooks and the sync.
// A bucket's flat buffer is [gradients of its parameters..., one flag per parameter]: the
// flag is 1 where this rank has a gradient, so after the sum it counts the ranks that had
// one, and a parameter no rank touched keeps no gradient everywhere. Buckets start strictly
// in bucket order (MPI wants every rank to start collectives in the same order).
#include "dist/ddp.hpp"

#include <algorithm>
#include <chrono>

#include "autograd/tape.hpp"
#include "dist/comm.hpp"
#include "nn/module.hpp"
#include "tensor/errors.hpp"
#include "tensor/value.hpp"

namespace spool::dist {

struct DistributedDataParallel::Requests {
    std::vector<MPI_Request> r;
};

namespace {
using steady = std::chrono::steady_clock;

double since(steady::time_point t) { return std::chrono::duration<double>(steady::now() - t).count(); }

/// out = a + b, elementwise: what backward's commit computes.
template <class T>
void add_into(T* out, const T* a, const T* b, std::int64_t n)
{
    for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
}  // namespace

DistributedDataParallel::DistributedDataParallel(nn::Module& m, DistributedDataParallelOptions options)
    : module_(&m), options_(options), requests_(std::make_unique<Requests>())
{
    SPOOL_CHECK(options.bucket_cap_mb > 0 && options.first_bucket_mb > 0, ValueError,
                "DistributedDataParallel: bucket_cap_mb and first_bucket_mb must be > 0; got ", options.bucket_cap_mb,
                " and ", options.first_bucket_mb);
    init();
    for (auto& [name, p] : m.named_parameters()) broadcast(p, 0);
    if (options.broadcast_buffers)
        for (auto& [name, b] : m.named_buffers()) broadcast(b, 0);

    for (const Tensor& p : m.parameters())
        if (p.requires_grad()) params_.push_back(p);
    const int n = static_cast<int>(params_.size());
    bucket_of_.assign(n, 0);
    slot_of_.assign(n, 0);
    offset_of_.assign(n, 0);
    written_.assign(n, 0);
    // reverse registration order: the last layers' gradients are complete first in backward
    const double cap = options.bucket_cap_mb * 1024 * 1024, first_cap = options.first_bucket_mb * 1024 * 1024;
    for (int i = n - 1; i >= 0; --i) {
        const DType dt = params_[i].dtype();
        int open = -1;  // the newest bucket of this dtype, if it still has room
        for (int b = 0; b < static_cast<int>(buckets_.size()); ++b)
            if (buckets_[b].dtype == dt) open = b;
        if (open < 0 || static_cast<double>(buckets_[open].numel) * itemsize(dt) >= (open == 0 ? first_cap : cap)) {
            buckets_.push_back(Bucket{.dtype = dt, .params = {}, .numel = 0});
            open = static_cast<int>(buckets_.size()) - 1;
        }
        Bucket& b = buckets_[open];
        bucket_of_[i] = open;
        slot_of_[i] = static_cast<int>(b.params.size());
        offset_of_[i] = b.numel;
        b.params.push_back(i);
        b.numel += params_[i].numel();
        SPOOL_CHECK(b.numel + static_cast<std::int64_t>(b.params.size()) <= detail::max_count, ValueError,
                    "DistributedDataParallel: a bucket would hold ", b.numel,
                    " elements, more than one MPI call takes; lower bucket_cap_mb");
    }
    for (const Bucket& b : buckets_)
        flat_.push_back(Value::zeros(Shape{b.numel + static_cast<std::int64_t>(b.params.size())}, b.dtype));
    n_written_.assign(buckets_.size(), 0);
    requests_->r.assign(buckets_.size(), MPI_REQUEST_NULL);
    for (int i = 0; i < n; ++i)
        hook_ids_.push_back(add_grad_ready_hook(params_[i], [this, i](const Value& g) { on_grad_ready(i, g); }));
}

DistributedDataParallel::~DistributedDataParallel()
{
    for (std::size_t i = 0; i < params_.size(); ++i) remove_grad_ready_hook(params_[i], hook_ids_[i]);
}

// ---- during backward -----------------------------------------------------------------------

void DistributedDataParallel::on_grad_ready(int i, const Value& pass_grad)
{
    if (!sync_) return;  // no_sync: backward only accumulates
    SPOOL_CHECK(!written_[i], DistError, "DistributedDataParallel: parameter ", i,
                " received a second gradient before finish_gradient_sync(); run all but the last backward "
                "of a step inside no_sync()");
    write_grad(i, &pass_grad);
    start_complete_buckets();
    // Open MPI progresses non-blocking collectives only inside MPI calls: poke the started ones
    int done = 0;
    detail::check(MPI_Testall(static_cast<int>(started_), requests_->r.data(), &done, MPI_STATUSES_IGNORE),
                  "finish_gradient_sync");
}

/// Parameter i's gradient for this step into its bucket: grad() plus this backward's pass_grad
/// (what backward will commit), grad() alone without a pass, zeros and flag 0 without either.
void DistributedDataParallel::write_grad(int i, const Value* pass_grad)
{
    const Tensor g = params_[i].grad();
    const Value* a = pass_grad ? pass_grad : (g.defined() ? &g.value() : nullptr);
    const Value* b = pass_grad && g.defined() ? &g.value() : nullptr;
    Value& flat = flat_[bucket_of_[i]];
    const std::int64_t n = params_[i].numel(), off = offset_of_[i];
    if (!a || !b) {
        detail::write_flat(flat, off, a, n);  // a copy, or zeros without a gradient
    } else if (flat.dtype() == DType::f32) {
        add_into(flat.data<float>() + off, a->data<float>(), b->data<float>(), n);
    } else {
        add_into(flat.data<double>() + off, a->data<double>(), b->data<double>(), n);
    }
    const Bucket& bk = buckets_[bucket_of_[i]];
    flat.set(bk.numel + slot_of_[i], a ? 1.0 : 0.0);
    written_[i] = 1;
    ++n_written_[bucket_of_[i]];
}

void DistributedDataParallel::start_bucket(std::size_t k)
{
    Value& flat = flat_[k];
    detail::check(MPI_Iallreduce(MPI_IN_PLACE, flat.raw(), static_cast<int>(flat.numel()),
                                 detail::mpi_type(flat.dtype()), MPI_SUM, detail::comm("finish_gradient_sync"),
                                 &requests_->r[k]),
                  "finish_gradient_sync");
}

void DistributedDataParallel::start_complete_buckets()
{
    while (started_ < buckets_.size() && n_written_[started_] == buckets_[started_].params.size()) {
        start_bucket(started_);
        ++started_;
        ++started_in_backward_;
    }
}

// ---- after backward ------------------------------------------------------------------------

void DistributedDataParallel::finish_gradient_sync()
{
    if (!sync_) return;
    const auto t0 = steady::now();
    const int world = world_size();
    stats_ = SyncStats{};
    stats_.buckets_in_backward = started_in_backward_;
    // what backward did not reach: unused parameters, or gradients set without a backward
    for (std::size_t k = started_; k < buckets_.size(); ++k) {
        for (int i : buckets_[k].params)
            if (!written_[i]) write_grad(i, nullptr);
        start_bucket(k);
    }
    started_ = buckets_.size();
    for (const Value& f : flat_) stats_.bytes += f.nbytes();
    stats_.buckets = buckets_.size();
    const auto w = steady::now();
    auto& reqs = requests_->r;
    detail::wait_all(reqs.data(), static_cast<int>(reqs.size()), "finish_gradient_sync",
                     ::spool::detail::cat("gradient all-reduce, ", buckets_.size(), " buckets, ", stats_.bytes,
                                          " bytes"));
    stats_.wait_seconds = since(w);

    // divide by the number of ranks and hand each parameter its average
    for (std::size_t k = 0; k < buckets_.size(); ++k) {
        const Bucket& b = buckets_[k];
        Value& flat = flat_[k];
        detail::divide(flat, b.numel, world);
        for (std::size_t s = 0; s < b.params.size(); ++s) {
            Tensor& p = params_[b.params[s]];
            if (flat.at(b.numel + static_cast<std::int64_t>(s)) == 0) {
                p.set_grad(Tensor());  // no rank produced one: keep none, as one process would
                continue;
            }
            Value g = Value::empty(p.shape(), b.dtype);
            detail::read_flat(flat, offset_of_[b.params[s]], g, p.numel());
            p.set_grad(Tensor(std::move(g)));
        }
    }
    std::fill(written_.begin(), written_.end(), 0);
    std::fill(n_written_.begin(), n_written_.end(), 0);
    started_ = 0;
    started_in_backward_ = 0;
    stats_.seconds = since(t0);
}

}  // namespace spool::dist
