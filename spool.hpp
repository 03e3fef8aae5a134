// spool: the whole public API in one include. Light on purpose: no xtensor or xsimd
// here (those stay in the .cpp files), so a user program compiles in a few seconds.
// For xt::xarray interop also include "autograd/xtensor.hpp".
#pragma once

#include "tensor/dtype.hpp"
#include "tensor/errors.hpp"
#include "tensor/random.hpp"
#include "tensor/shape.hpp"
#include "tensor/threads.hpp"
#include "autograd/tensor.hpp"
#include "autograd/tape.hpp"
#include "autograd/ops.hpp"
#include "autograd/ops_nn.hpp"
#include "autograd/gradcheck.hpp"
#include "autograd/ops_loss.hpp"
#include "losses/functional.hpp"
#include "losses/loss.hpp"
#include "losses/registry.hpp"
#include "nn/module.hpp"
#include "nn/init.hpp"
#include "nn/layers.hpp"
#include "nn/attention.hpp"
#include "nn/transformer.hpp"
#include "nn/seq2seq.hpp"
#include "nn/decoding.hpp"
#include "io/safetensors.hpp"
