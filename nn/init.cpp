#include "nn/init.hpp"

#include <cmath>

#include "tensor/kernels.hpp"

namespace spool::nn::init {

std::pair<std::int64_t, std::int64_t> fan_in_and_fan_out(const Tensor& t)
{
    SPOOL_CHECK(t.dim() >= 2, ValueError,
                "init: fan in and fan out can not be computed for a tensor with fewer than 2 dimensions; got shape ",
                to_string(t.shape()));
    std::int64_t receptive = t.shape().prod(2, t.dim());
    return {t.shape()[1] * receptive, t.shape()[0] * receptive};
}

void uniform_(Tensor& t, double a, double b)
{
    t.impl()->value = uniform(t.shape(), a, b, {.dtype = t.dtype()}).value();
}

void normal_(Tensor& t, double mean, double std)
{
    Value n = randn(t.shape(), {.dtype = t.dtype()}).value();
    t.impl()->value = kernels::add_scalar(kernels::mul_scalar(n, std), mean);
}

void constant_(Tensor& t, double v) { t.impl()->value = Value::full(t.shape(), v, t.dtype()); }
void zeros_(Tensor& t) { constant_(t, 0.0); }
void ones_(Tensor& t) { constant_(t, 1.0); }

void xavier_uniform_(Tensor& t, double gain)
{
    auto [fi, fo] = fan_in_and_fan_out(t);
    double b = gain * std::sqrt(6.0 / static_cast<double>(fi + fo));
    uniform_(t, -b, b);
}

void kaiming_uniform_(Tensor& t, double a)
{
    auto [fi, fo] = fan_in_and_fan_out(t);
    double gain = std::sqrt(2.0 / (1 + a * a));
    double b = gain * std::sqrt(3.0 / static_cast<double>(fi));
    uniform_(t, -b, b);
}

}  // namespace spool::nn::init
