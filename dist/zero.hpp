// ZeroRedundancyOptimizer: ZeRO stage 1, optimizer-state sharding. The trainable parameters
// are laid end to end in one flat buffer per dtype, padded to a multiple of the number of
// ranks; rank r owns the r-th contiguous shard. A step reduce-scatters the gradients (each
// rank receives the average of its shard only), runs an ordinary spool optimizer over the
// shard, so only 1/N of Adam's moments live on each rank, and all-gathers the updated
// parameters. Not here: sharded gradients or parameters (ZeRO-2/3). Guide: docs/distributed.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.hpp"
#include "dist/dist.hpp"
#include "optim/optimizer.hpp"

namespace spool::dist {

/// Builds the inner optimizer over the tensors it is given, e.g.
/// `[](std::vector<Tensor> p) { return std::make_unique<optim::Adam>(std::move(p), opts); }`.
using OptimizerFactory = std::function<std::unique_ptr<optim::Optimizer>(std::vector<Tensor>)>;

/// One contiguous piece of a parameter inside this rank's shard.
struct ShardPiece {
    int param = 0;                  ///< index into parameters()
    std::int64_t begin = 0, end = 0;  ///< the parameter's flat elements [begin, end)
};

class ZeroRedundancyOptimizer {
public:
    /// Broadcasts params from rank 0 (every rank starts from rank 0's weights), lays them out
    /// in flat buffers and builds the inner optimizer with make(shard tensors): per ShardPiece, in
    /// order, a 1-d view of that piece of its parameter (the optimizer updates the model in
    /// place). params must be float32 or float64 and the same (count, sizes, dtypes) on every
    /// rank; they must outlive this object. Calls dist::init() if needed.
    ZeroRedundancyOptimizer(std::vector<Tensor> params, const OptimizerFactory& make);
    ~ZeroRedundancyOptimizer();
    ZeroRedundancyOptimizer(const ZeroRedundancyOptimizer&) = delete;
    ZeroRedundancyOptimizer& operator=(const ZeroRedundancyOptimizer&) = delete;

    /// Average the parameters' gradients over the ranks into this rank's shard (a ring
    /// reduce-scatter); step() and clip_grad_norm() call it when needed, once per step. A
    /// missing gradient counts as zeros; a parameter without a gradient on every rank keeps
    /// none in the shard, so the inner optimizer skips it, as it would in one process.
    void reduce_gradients();
    /// clip_grad_norm over the whole model's averaged gradients (each rank's shard, the norm
    /// all-reduced); returns the total norm, the same on every rank.
    double clip_grad_norm(double max_norm, double norm_type = 2.0, bool error_if_nonfinite = false);
    /// reduce_gradients() if not done, the inner optimizer's step over the shard, then all-gather
    /// the parameters into the model (in place). Returns false when the inner optimizer's
    /// non-finite guard is on and some rank's shard gradient holds NaN or Inf: then no rank
    /// changes anything.
    bool step();
    /// Drop (or zero) the model's gradients and the shard's.
    void zero_grad(bool set_to_none = true);

    /// The inner optimizer: its lr and options, and what schedules attach to
    /// (`optim::NoamLR sched(zero.optimizer(), ...)`).
    optim::Optimizer& optimizer() const { return *inner_; }
    const std::vector<Tensor>& parameters() const { return params_; }
    const std::vector<ShardPiece>& pieces() const { return pieces_; }
    /// Bytes of optimizer state on this rank (the inner optimizer's state_bytes()).
    std::size_t state_bytes() const { return inner_->state_bytes(); }

    /// Collective: on rank `to`, the state_dict that one process's optimizer made by the same
    /// factory over parameters() would have ("state.<i>.exp_avg" in parameter i's shape, ...);
    /// empty on the other ranks. Load it into such an optimizer to write a checkpoint.
    optim::StateDict consolidate_state_dict(int to = 0);
    /// Load a single-process state_dict (consolidate_state_dict's layout) on every rank: each
    /// takes its shard's slices.
    void load_state_dict(const optim::StateDict& full);

private:
    struct Space;  ///< the flat buffers of one dtype (zero.cpp)
    void follow_parameters();
    void gather_parameters();
    std::string describe(const char* what) const;  ///< what a collective carried, for DistError

    std::vector<Tensor> params_;
    std::vector<Space> spaces_;
    std::vector<int> space_of_;               ///< per parameter
    std::vector<std::int64_t> offset_of_;     ///< per parameter: its first element in its space
    std::vector<std::int64_t> numel_of_;      ///< per parameter: its size when laid out
    std::vector<ShardPiece> pieces_;
    std::vector<Tensor> shard_;               ///< per piece: the inner optimizer's tensor, a view of the parameter
    std::vector<int> piece_space_;            ///< per piece: its space
    std::vector<std::int64_t> piece_at_;      ///< per piece: where it starts in the space's shard
    std::unique_ptr<optim::Optimizer> inner_;
    bool reduced_ = false;                    ///< reduce_gradients() ran this step
};

namespace detail {
/// Tests only: the reduce-scatter's message size in elements (default 2^20), for optimizers
/// built afterwards; returns the previous one.
std::int64_t set_reduce_scatter_chunk(std::int64_t elements);
}  // namespace detail

}  // namespace spool::dist
