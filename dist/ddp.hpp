// DistributedDataParallel: every rank holds the whole model and trains on its own part of
// the batch, and each parameter's gradient is averaged over the ranks, in buckets of about
// bucket_cap_mb, by non-blocking MPI_Iallreduce. A bucket starts during backward, from the
// tape's gradient-ready hook, as soon as all its gradients are complete, so communication
// overlaps the rest of backward; finish_gradient_sync() starts what backward did not reach,
// waits, and hands out the averages, before the optimizer step. Guide: docs/distributed.md.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "autograd/tensor.hpp"
#include "dist/dist.hpp"

namespace spool::nn {
class Module;
}

namespace spool::dist {

struct DistributedDataParallelOptions {
    double bucket_cap_mb = 25;     ///< PyTorch's default; a bucket closes once it holds this many MiB
    /// The first bucket (the last layers' gradients, complete first in backward) closes at
    /// this many MiB, as PyTorch's 1 MiB first bucket: communication starts early in
    /// backward even when the whole model fits one bucket_cap_mb bucket.
    double first_bucket_mb = 1;
    bool broadcast_buffers = true; ///< broadcast buffers with the parameters at construction
};

/// One bucket: parameters (indices into parameters()) of one dtype, in reverse registration
/// order (roughly the order backward finishes them), reduced by one MPI_Iallreduce.
struct Bucket {
    DType dtype = DType::f32;
    std::vector<int> params;
    std::int64_t numel = 0;  ///< gradient elements (not counting the per-parameter flags)
};

/// What the last finish_gradient_sync() did.
struct SyncStats {
    std::size_t buckets = 0;      ///< all-reduces started
    std::size_t buckets_in_backward = 0;  ///< of which backward started (overlapped)
    std::size_t bytes = 0;        ///< bytes all-reduced (gradients and flags)
    double seconds = 0;           ///< wall time of the whole sync
    double wait_seconds = 0;      ///< of which waiting for MPI
};

class DistributedDataParallel {
public:
    /// Wraps m (which must outlive this object): broadcasts its parameters (and buffers) from
    /// rank 0, so every rank starts from rank 0's weights, and plans the buckets over the
    /// parameters that require grad. Calls dist::init() if needed.
    explicit DistributedDataParallel(nn::Module& m, DistributedDataParallelOptions options = {});
    ~DistributedDataParallel();
    DistributedDataParallel(const DistributedDataParallel&) = delete;  // its hooks point at it
    DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

    nn::Module& module() const { return *module_; }
    const std::vector<Tensor>& parameters() const { return params_; }
    const std::vector<Bucket>& buckets() const { return buckets_; }

    /// Average every parameter's gradient over the ranks; call after backward and before the
    /// optimizer step, on every rank, once per backward (several backward passes per step:
    /// all but the last inside no_sync()). A parameter without a gradient counts as zeros; one
    /// that has no gradient on any rank keeps none (so optimizers skip it on every rank, as in
    /// one process). Does nothing inside no_sync(). Throws DistError on an MPI error or timeout.
    void finish_gradient_sync();
    const SyncStats& last_sync() const { return stats_; }

    /// While alive, finish_gradient_sync() does nothing: gradients accumulate locally
    /// (gradient accumulation); the first sync after it averages the accumulated sums.
    class NoSync {
    public:
        explicit NoSync(DistributedDataParallel& d) : d_(d), was_(d.sync_) { d_.sync_ = false; }
        ~NoSync() { d_.sync_ = was_; }
        NoSync(const NoSync&) = delete;
        NoSync& operator=(const NoSync&) = delete;

    private:
        DistributedDataParallel& d_;
        bool was_;
    };
    [[nodiscard]] NoSync no_sync() { return NoSync(*this); }
    bool sync_enabled() const { return sync_; }

private:
    void on_grad_ready(int i, const Value& pass_grad);
    void write_grad(int i, const Value* pass_grad);
    void start_bucket(std::size_t b);
    void start_complete_buckets();

    nn::Module* module_;
    DistributedDataParallelOptions options_;
    std::vector<Tensor> params_;
    std::vector<Bucket> buckets_;
    std::vector<Value> flat_;            ///< per bucket: [gradients..., one flag per parameter]
    std::vector<int> bucket_of_;         ///< per parameter: its bucket
    std::vector<int> slot_of_;           ///< per parameter: its index in the bucket
    std::vector<std::int64_t> offset_of_;  ///< per parameter: where its gradient starts in flat_
    std::vector<char> written_;          ///< per parameter: its gradient is in flat_ this step
    std::vector<std::size_t> n_written_; ///< per bucket
    struct Requests;                     ///< per bucket: its MPI_Request (ddp.cpp: no <mpi.h> here)
    std::unique_ptr<Requests> requests_;
    std::size_t started_ = 0;            ///< buckets started this step (always in bucket order)
    std::size_t started_in_backward_ = 0;
    std::vector<std::uint64_t> hook_ids_;
    SyncStats stats_;
    bool sync_ = true;
};

}  // namespace spool::dist
