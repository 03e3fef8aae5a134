// Every loss function has two spellings, spool::name and spool::losses::name (docs/losses.md,
// "Where the losses live"): the same function (using-declarations), so the same values and
// gradients. Compiling this file is half the test.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "spool.hpp"

using spool::Tensor;

namespace {

// one function behind both names: the addresses are equal at compile time
constexpr bool same_function(auto* a, auto* b) { return a == b; }
static_assert(same_function(&spool::cross_entropy, &spool::losses::cross_entropy));
static_assert(same_function(&spool::nll_loss, &spool::losses::nll_loss));
static_assert(same_function(&spool::kl_div, &spool::losses::kl_div));
static_assert(same_function(&spool::mse_loss, &spool::losses::mse_loss));
static_assert(same_function(&spool::binary_cross_entropy_with_logits, &spool::losses::binary_cross_entropy_with_logits));
static_assert(same_function(&spool::label_smoothing_kl, &spool::losses::label_smoothing_kl));
static_assert(same_function(&spool::focal_loss, &spool::losses::focal_loss));
static_assert(same_function(&spool::z_loss, &spool::losses::z_loss));
static_assert(same_function(&spool::attention_alignment_loss, &spool::losses::attention_alignment_loss));
static_assert(std::is_same_v<spool::KLDivLossOptions, spool::losses::KLDivLossOptions>);
static_assert(std::is_same_v<spool::CrossEntropyOptions, spool::losses::CrossEntropyOptions>);
static_assert(std::is_same_v<spool::AlignmentForm, spool::losses::AlignmentForm>);

/// Value and input gradient of loss(x) for a fresh float64 leaf copy of x0.
template <class F>
std::pair<double, std::vector<double>> value_and_grad(const Tensor& x0, F loss)
{
    Tensor x = x0.detach().requires_grad_();
    spool::Tape tape;
    Tensor l = loss(x);
    tape.backward(l);
    return {l.item(), x.grad().tolist()};
}

template <class F, class G>
void check_same(const char* name, const Tensor& x, F flat, G nested)
{
    const auto a = value_and_grad(x, flat), b = value_and_grad(x, nested);
    const double va = a.first, vb = b.first;  // named, not bound: doctest's lambdas cannot capture bindings (clang 14)
    CHECK_MESSAGE(va == vb, name, ": ", va, " vs ", vb);
    CHECK_MESSAGE(a.second == b.second, name);
    CHECK_MESSAGE(va != 0, name, ": a zero loss would prove little");
}

}  // namespace

TEST_CASE("spool::name and spool::losses::name give the same loss and gradient, with options")
{
    spool::manual_seed(11);
    const spool::TensorOptions d{.dtype = spool::f64};
    Tensor logits = spool::randn({4, 5}, d);
    Tensor y = spool::from_vector(std::vector<std::int64_t>{0, 3, 4, 1}, {4});
    Tensor p = spool::softmax(spool::randn({4, 5}, d), 1), t = spool::rand({4, 5}, d);

    check_same("cross_entropy", logits, [&](const Tensor& x) { return spool::cross_entropy(x, y, {.label_smoothing = 0.1}); },
               [&](const Tensor& x) { return spool::losses::cross_entropy(x, y, {.label_smoothing = 0.1}); });
    check_same("nll_loss", logits, [&](const Tensor& x) { return spool::nll_loss(spool::log_softmax(x, 1), y); },
               [&](const Tensor& x) { return spool::losses::nll_loss(spool::log_softmax(x, 1), y); });
    check_same("kl_div", logits,
               [&](const Tensor& x) { return spool::kl_div(spool::log_softmax(x, 1), p, {.reduction = spool::Reduction::batchmean}); },
               [&](const Tensor& x) {
                   return spool::losses::kl_div(spool::log_softmax(x, 1), p, {.reduction = spool::Reduction::batchmean});
               });
    check_same("mse_loss", logits, [&](const Tensor& x) { return spool::mse_loss(x, t); },
               [&](const Tensor& x) { return spool::losses::mse_loss(x, t); });
    check_same("binary_cross_entropy_with_logits", logits,
               [&](const Tensor& x) { return spool::binary_cross_entropy_with_logits(x, t); },
               [&](const Tensor& x) { return spool::losses::binary_cross_entropy_with_logits(x, t); });
    check_same("label_smoothing_kl", logits,
               [&](const Tensor& x) { return spool::label_smoothing_kl(x, y, {.padding_idx = 2, .smoothing = 0.1}); },
               [&](const Tensor& x) { return spool::losses::label_smoothing_kl(x, y, {.padding_idx = 2, .smoothing = 0.1}); });
    check_same("focal_loss", logits, [&](const Tensor& x) { return spool::focal_loss(x, y, {.gamma = 1.5}); },
               [&](const Tensor& x) { return spool::losses::focal_loss(x, y, {.gamma = 1.5}); });
    check_same("z_loss", logits, [&](const Tensor& x) { return spool::z_loss(x, y, {.coefficient = 0.1}); },
               [&](const Tensor& x) { return spool::losses::z_loss(x, y, {.coefficient = 0.1}); });
    Tensor gold = spool::from_vector(std::vector<std::int64_t>{1, 0, 4, 2}, {1, 4});
    check_same("attention_alignment_loss", spool::reshape(logits, {1, 4, 5}),
               [&](const Tensor& x) {
                   return spool::attention_alignment_loss(spool::softmax(x, -1), gold, {}, {.form = spool::AlignmentForm::ce});
               },
               [&](const Tensor& x) {
                   return spool::losses::attention_alignment_loss(spool::softmax(x, -1), gold, {},
                                                                  {.form = spool::losses::AlignmentForm::ce});
               });
}

TEST_CASE("unqualified calls under `using namespace spool` and `spool::losses` are not ambiguous")
{
    using namespace spool;
    using namespace spool::losses;
    Tensor x = from_vector(std::vector<double>{0.5, -1.0}, {2}, {.dtype = f64});
    Tensor t = from_vector(std::vector<double>{1.5, 1.0}, {2}, {.dtype = f64});
    CHECK(mse_loss(x, t).item() == doctest::Approx((1.0 + 4.0) / 2));
    CHECK(kl_div(x, t, {.reduction = Reduction::sum}).item() ==
          doctest::Approx(1.5 * (std::log(1.5) - 0.5) + 1.0 * (0.0 + 1.0)));
}
