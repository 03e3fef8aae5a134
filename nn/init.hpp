// Parameter initialisation as torch.nn.init: in place on a tensor's value, from the seeded
// generator (spool::manual_seed). Fans follow PyTorch: for a weight [out, in, ...],
// fan_in = in * receptive field, fan_out = out * receptive field.
#pragma once
#include <cstdint>
#include <utility>

#include "autograd/tensor.hpp"

namespace spool::nn::init {

std::pair<std::int64_t, std::int64_t> fan_in_and_fan_out(const Tensor& t);
void uniform_(Tensor& t, double a, double b);
void normal_(Tensor& t, double mean = 0.0, double std = 1.0);
void constant_(Tensor& t, double v);
void zeros_(Tensor& t);
void ones_(Tensor& t);
/// U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, double gain = 1.0);
/// U(-b, b) with b = sqrt(6 / ((1 + a²) fan_in)) — leaky-ReLU gain, fan_in mode.
void kaiming_uniform_(Tensor& t, double a = 0.0);

}  // namespace spool::nn::init
