// Fused optimizer kernels (docs/optim.md): each update reads and writes a
// parameter's memory once — SGD (momentum, dampening, nesterov, weight decay), Adam and
// AdamW (amsgrad, coupled or decoupled decay) — and the gradient utilities that clipping
// and the non-finite guard need (sum of squares, max |x|, finite check, in-place scale
// and clamp). Multi-tensor: one call covers a list of tensors and splits their total
// length across threads in one parallel region. float32 and float64. No options, no
// state, no validation of hyperparameters: optim/ owns those.
#pragma once
#include <cstdint>
#include <span>

#include "tensor/value.hpp"

namespace spool::kernels {

// ---- SGD -------------------------------------------------------------------------------

/// torch.optim.SGD's update for one tensor (d = g, or -g when maximize):
///   d = d + weight_decay * θ                      (if weight_decay != 0)
///   buf = d (first step) | momentum * buf + (1 - dampening) * d   (if momentum != 0)
///   d = d + momentum * buf (nesterov) | buf
///   θ = θ - lr * d
struct SgdSlot {
    Value* param = nullptr;
    const Value* grad = nullptr;
    Value* momentum_buffer = nullptr;  ///< nullptr when momentum == 0
    bool init_buffer = false;          ///< first step: buf = d instead of the running average
    double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
    bool nesterov = false, maximize = false;
};
void sgd_step(std::span<const SgdSlot> slots);

// ---- Adam / AdamW ----------------------------------------------------------------------

/// torch.optim.Adam / AdamW's update for one tensor at step t (already incremented, t >= 1):
///   θ = θ * (1 - lr * weight_decay)                    (decoupled: AdamW)
///   g = g + weight_decay * θ                           (coupled: Adam, weight_decay != 0)
///   m = β1 m + (1 - β1) g ;  v = β2 v + (1 - β2) g²
///   v̂ = max(v̂, v) (amsgrad) | v
///   θ = θ - lr / (1 - β1^t) * m / (sqrt(v̂) / sqrt(1 - β2^t) + eps)
struct AdamSlot {
    Value* param = nullptr;
    const Value* grad = nullptr;
    Value* exp_avg = nullptr;
    Value* exp_avg_sq = nullptr;
    Value* max_exp_avg_sq = nullptr;  ///< amsgrad only
    std::int64_t step = 1;
    double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
    bool decoupled = false, maximize = false;
};
void adam_step(std::span<const AdamSlot> slots);

// ---- gradient utilities (undefined Values in the list are skipped) -------------------

/// Σ x² over all elements of all xs, accumulated in double; the same for any thread count.
double sum_squares(std::span<const Value* const> xs);
/// Σ |x|^p (p > 0, finite), accumulated in double.
double sum_abs_pow(std::span<const Value* const> xs, double p);
/// max |x| over all xs (NaN if any element is NaN; 0 for no elements).
double max_abs(std::span<const Value* const> xs);
/// True when no element of any x is NaN or ±Inf.
bool all_finite(std::span<const Value* const> xs);
/// x *= s in place.
void scale_(std::span<Value* const> xs, double s);
/// x = min(max(x, lo), hi) in place; NaN stays NaN.
void clamp_(std::span<Value* const> xs, double lo, double hi);

}  // namespace spool::kernels
