// Training checkpoints: model state, optimizer state (moments, step counts), schedule
// state, the global RNG (dropout draws from it), step and epoch counters and user JSON,
// in one safetensors file written atomically (io/safetensors.hpp). Loading checks the
// whole file against the model and optimizer before changing either: a rejected file
// leaves them exactly as they were. Layout and resume recipe: docs/io.md. Not here: the
// training loop itself, data-loader position (keep it in `user`), multi-file sharding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "nn/module.hpp"
#include "optim/optimizer.hpp"
#include "optim/schedule.hpp"
#include "tensor/random.hpp"

namespace spool::io {

/// What a checkpoint holds besides tensors: counters, the RNG and the caller's JSON.
struct TrainingState {
    std::int64_t step = 0;    ///< optimizer steps taken (names the file in save_checkpoint_in)
    std::int64_t epoch = 0;
    std::string user = "{}";  ///< a JSON object as text (config, metrics, data position); checked on save
    RngState rng = {};        ///< ignored by save (it records get_rng_state()); what load restored
};

/// Save model (all of state_dict()), optimizer and schedule (either may be null), the global
/// RNG state and `state` to path, atomically: a crash, kill or full disk leaves the previous
/// file whole. A bad `state.user` is a ValueError before anything is written.
void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* optimizer,
                     const optim::LRScheduler* schedule, const TrainingState& state = {});

/// Restore a checkpoint into objects built as when it was saved (same model options,
/// optimizer kind and parameter groups, schedule kind). Every name, shape and dtype of
/// model and optimizer is checked first; IoError for a malformed file, ValueError for one
/// that does not fit the objects, and then nothing has changed. Restores the RNG state.
/// A null optimizer or schedule is not loaded (weights only); the file may still hold one.
TrainingState load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer* optimizer,
                              optim::LRScheduler* schedule);

struct CheckpointOptions {
    std::size_t keep_last = 0;  ///< after a save, delete all but the newest N checkpoints in dir; 0 keeps all
};

/// dir + "/ckpt-<step>.safetensors".
std::string checkpoint_path(const std::string& dir, std::int64_t step);

/// save_checkpoint to checkpoint_path(dir, state.step) (dir is created if missing), then
/// rotation: keeps the newest opts.keep_last checkpoints, and removes temporary files
/// that killed writers (processes no longer alive) left in dir. Returns the path written.
std::string save_checkpoint_in(const std::string& dir, const nn::Module& model, const optim::Optimizer* optimizer,
                               const optim::LRScheduler* schedule, const TrainingState& state,
                               const CheckpointOptions& opts = {});

/// The checkpoint with the highest step in dir (`ckpt-<step>.safetensors`), if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);

}  // namespace spool::io
