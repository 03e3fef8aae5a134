// The losses beyond cross-entropy, and the registry: identities between losses (focal with
// γ = 0 is cross-entropy, the Annotated Transformer's label smoothing against cross-entropy's,
// alignment CE against nll_loss of log A), extreme inputs, masks, parse(), and error messages.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "messages.hpp"
#include "spool.hpp"

using namespace spool;

namespace {

using test::message_of;

Tensor labels(const std::vector<std::int64_t>& v, const Shape& s) { return from_vector(v, s); }
Tensor f64s(const std::vector<double>& v, const Shape& s) { return from_vector(v, s, {.dtype = f64}); }

/// The gradient of fn at x (a fresh float64 leaf), as a list.
template <class F>
std::vector<double> grad_of(const Tensor& x0, F fn)
{
    Tensor x = x0.detach().requires_grad_();
    Tape tape;
    tape.backward(fn(x));
    return x.grad().tolist();
}

void check_all_close(const std::vector<double>& a, const std::vector<double>& b, double tol)
{
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK_MESSAGE(std::abs(a[i] - b[i]) <= tol, "[", i, "] ", a[i], " vs ", b[i]);
}

}  // namespace

// ---- registry ------------------------------------------------------------------------------

TEST_CASE("registry: make by name with PyTorch-named options, as docs/losses.md shows")
{
    manual_seed(21);
    const Tensor z = randn({4, 6});
    const Tensor y = labels({1, 5, 0, 2}, {4});
    const auto loss = losses::make("cross_entropy", {.label_smoothing = 0.1});
    CHECK(loss->name() == "cross_entropy");
    CHECK((*loss)(z, y).item() == cross_entropy(z, y, {.label_smoothing = 0.1}).item());
    for (const char* name : {"cross_entropy", "nll_loss", "kl_div", "mse_loss", "binary_cross_entropy_with_logits",
                             "label_smoothing_kl", "focal_loss", "z_loss", "attention_alignment"})
        CHECK(losses::make(name)->name() == name);
    const std::string msg = message_of<ValueError>([] { losses::make("crossentropy"); });
    CHECK(msg.find("losses::make: no loss named 'crossentropy'; registered: attention_alignment, "
                   "binary_cross_entropy_with_logits, cross_entropy") == 0);
}

TEST_CASE("registry: parse a loss from text")
{
    auto ce = losses::parse("cross_entropy(label_smoothing=0.1, ignore_index=0, reduction=sum)");
    const auto& o = dynamic_cast<const losses::CrossEntropy&>(*ce).options();
    CHECK(o.label_smoothing == 0.1);
    CHECK(o.ignore_index == 0);
    CHECK(o.reduction == Reduction::sum);
    CHECK(losses::parse(" mse_loss ")->name() == "mse_loss");
    CHECK(dynamic_cast<const losses::KLDivLoss&>(*losses::parse("kl_div(log_target=true,reduction=batchmean)"))
              .options()
              .log_target);
    CHECK(dynamic_cast<const losses::FocalLoss&>(*losses::parse("focal_loss(gamma=0.5)")).options().gamma == 0.5);
    const auto align = losses::parse("attention_alignment(form=mse, head=1)");
    const auto& a = dynamic_cast<const losses::AttentionAlignmentLoss&>(*align);
    CHECK(a.options().form == losses::AlignmentForm::mse);
    CHECK(a.options().head == 1);
    CHECK(dynamic_cast<const losses::LabelSmoothingKL&>(*losses::parse("label_smoothing_kl(label_smoothing=0.1, padding_idx=2)"))
              .options()
              .smoothing == 0.1);

    CHECK(message_of<ValueError>([] { losses::parse("cross_entropy(gamma=2)"); }) ==
          "losses::parse: cross_entropy reads no option 'gamma'; its options are weight, ignore_index, reduction, "
          "label_smoothing");
    CHECK(message_of<ValueError>([] { losses::parse("cross_entropy(label_smoothing=lots)"); }) ==
          "losses::parse: cross_entropy: option label_smoothing expects a number; got 'lots'");
    CHECK(message_of<ValueError>([] { losses::parse("cross_entropy(weight=1)"); }) ==
          "losses::parse: cross_entropy: option weight is a tensor; set it in LossOptions and call make()");
    CHECK(message_of<ValueError>([] { losses::parse("cross_entropy(reduction=avg)"); }) ==
          "cross_entropy: reduction must be none, mean, sum or batchmean; got 'avg'");
    CHECK(message_of<ValueError>([] { losses::parse("cross_entropy(label_smoothing=1.5)"); }) ==
          "cross_entropy: label_smoothing must be in [0, 1); got 1.5");
}

TEST_CASE("registry: a user-defined loss is one register_loss call; names are unique")
{
    // cross_entropy_z is registered by test_loss_table.cpp exactly as docs/losses.md shows
    manual_seed(22);
    const Tensor z = randn({3, 5});
    const Tensor y = labels({4, 0, 2}, {3});
    const auto l = losses::make("cross_entropy_z", {.coefficient = 0.5});
    CHECK(l->name() == "cross_entropy_z");
    CHECK((*l)(z, y).item() == doctest::Approx(cross_entropy(z, y).item() + losses::z_loss(z, y, {.coefficient = 0.5}).item()));
    CHECK(message_of<ValueError>([] {
              losses::register_loss("cross_entropy", [](const losses::LossOptions&) {
                  return std::make_unique<losses::CrossEntropy>();
              });
          }) == "losses::register_loss: a loss named 'cross_entropy' is already registered");
}

TEST_CASE("a loss without a mask argument rejects one")
{
    const auto ce = losses::make("cross_entropy");
    const Tensor mask = from_vector(std::vector<bool>{true, false}, {2});
    CHECK(message_of<ValueError>([&] { (*ce)(zeros({2, 3}), labels({0, 1}, {2}), mask); }) ==
          "cross_entropy: takes no mask (attention_alignment does); got mask (2,)");
    CHECK((*ce)(zeros({2, 3}), labels({0, 1}, {2}), Tensor()).item() == doctest::Approx(std::log(3.0)));
}

// ---- label smoothing: the Annotated Transformer's KL form ------------------------------------

TEST_CASE("label_smoothing_kl: gradient (softmax - q)/ntokens with q = 1-eps, eps/(V-2), 0 on padding")
{
    manual_seed(23);
    const std::int64_t N = 5, V = 6, pad = 0;
    const double eps = 0.1;
    const std::vector<std::int64_t> y{3, 0, 5, 1, 0};  // two padding rows
    const Tensor z = randn({N, V}, {.dtype = f64});
    const auto g = grad_of(z, [&](const Tensor& x) {
        return losses::label_smoothing_kl(x, labels(y, {N}), {.padding_idx = pad, .smoothing = eps});
    });
    const Tensor p = softmax(z, 1);
    for (std::int64_t i = 0; i < N; ++i)
        for (std::int64_t c = 0; c < V; ++c) {
            const double q = c == pad ? 0.0 : c == y[i] ? 1 - eps : eps / (V - 2);
            const double want = y[i] == pad ? 0.0 : (p.at(i * V + c) - q) / 3;
            CHECK(g[i * V + c] == doctest::Approx(want).epsilon(1e-12));
        }
}

TEST_CASE("label_smoothing_kl: logits or log-probabilities give the same loss and logits gradient")
{
    manual_seed(24);
    const Tensor z = randn({4, 7}, {.dtype = f64}) * 3.0;
    const Tensor y = labels({2, 6, 0, 1}, {4});
    const losses::LabelSmoothingKLOptions o{.padding_idx = 0, .smoothing = 0.2};
    CHECK(losses::label_smoothing_kl(log_softmax(z, 1), y, o).item() ==
          doctest::Approx(losses::label_smoothing_kl(z, y, o).item()).epsilon(1e-13));
    check_all_close(grad_of(z, [&](const Tensor& x) { return losses::label_smoothing_kl(log_softmax(x, 1), y, o); }),
                    grad_of(z, [&](const Tensor& x) { return losses::label_smoothing_kl(x, y, o); }), 1e-14);
}

TEST_CASE("label_smoothing_kl is 0 at p = q (a KL divergence, also with a -inf padding logit)")
{
    // logits log q: the padding class has q = 0, so its logit is -inf
    const double eps = 0.3, V = 5;
    std::vector<double> row{-INFINITY, std::log(1 - eps), std::log(eps / (V - 2)), std::log(eps / (V - 2)),
                            std::log(eps / (V - 2))};
    Tensor z = f64s(row, {1, 5}).requires_grad_();
    Tape tape;
    const Tensor l = losses::label_smoothing_kl(z, labels({1}, {1}), {.padding_idx = 0, .smoothing = eps});
    CHECK(std::abs(l.item()) < 1e-15);
    tape.backward(l);
    for (double g : z.grad().tolist()) CHECK(std::abs(g) < 1e-15);
}

TEST_CASE("label smoothing: cross_entropy's and the Annotated Transformer's forms compared")
{
    // same logits, same eps: both gradients are (p - q)/M, with different q. PyTorch's q puts
    // 1 - eps + eps/V on the target and eps/V on every other class (padding included); the
    // Annotated form 1 - eps on the target, eps/(V-2) on the others, 0 on padding.
    manual_seed(25);
    const std::int64_t V = 8;
    const double eps = 0.1;
    const Tensor z = randn({1, V}, {.dtype = f64});
    const Tensor y = labels({3}, {1});
    const auto g_ce = grad_of(z, [&](const Tensor& x) { return cross_entropy(x, y, {.label_smoothing = eps}); });
    const auto g_kl = grad_of(z, [&](const Tensor& x) {
        return losses::label_smoothing_kl(x, y, {.padding_idx = 0, .smoothing = eps});
    });
    const Tensor p = softmax(z, 1);
    for (std::int64_t c = 0; c < V; ++c) {
        const double q_ce = (c == 3) * (1 - eps) + eps / V;
        const double q_kl = c == 0 ? 0.0 : c == 3 ? 1 - eps : eps / (V - 2);
        CHECK(g_ce[c] == doctest::Approx(p.at(c) - q_ce).epsilon(1e-12));
        CHECK(g_kl[c] == doctest::Approx(p.at(c) - q_kl).epsilon(1e-12));
    }
    // values: cross_entropy is H(q_ce, p); label_smoothing_kl is KL(q_kl || p) = H(q_kl, p) - H(q_kl)
    double h_kl = 0, cross_kl = 0;
    for (std::int64_t c = 1; c < V; ++c) {
        const double q = c == 3 ? 1 - eps : eps / (V - 2);
        h_kl -= q * std::log(q);
        cross_kl -= q * std::log(p.at(c));
    }
    CHECK(losses::label_smoothing_kl(z, y, {.padding_idx = 0, .smoothing = eps}).item() ==
          doctest::Approx(cross_kl - h_kl).epsilon(1e-12));
    // with eps = 0 both are the plain negative log-likelihood of non-padding targets
    const Tensor y2 = labels({3, 0, 5}, {3});
    const Tensor z2 = randn({3, V}, {.dtype = f64});
    CHECK(losses::label_smoothing_kl(z2, y2, {.padding_idx = 0, .smoothing = 0}).item() ==
          doctest::Approx(cross_entropy(z2, y2, {.ignore_index = 0}).item()).epsilon(1e-13));
}

TEST_CASE("label_smoothing_kl errors")
{
    CHECK(message_of<ShapeError>([] { losses::label_smoothing_kl(zeros({2, 3, 4}), labels({0, 1}, {2})); }) ==
          "label_smoothing_kl: expected input of shape (N, V) (flatten (B, T, V) first, as the Annotated Transformer "
          "does); got (2, 3, 4)");
    CHECK(message_of<ShapeError>([] { losses::label_smoothing_kl(zeros({2, 2}), labels({0, 1}, {2})); }) ==
          "label_smoothing_kl: needs more than 2 classes (ε is spread over V − 2 of them); got input (2, 2)");
    CHECK(message_of<ValueError>([] { losses::label_smoothing_kl(zeros({2, 4}), labels({0, 1}, {2}), {.padding_idx = 4}); }) ==
          "label_smoothing_kl: padding_idx must be in [0, 4); got 4");
    CHECK(message_of<ValueError>([] { losses::LabelSmoothingKL({.smoothing = 1.0}); }) ==
          "label_smoothing_kl: smoothing must be in [0, 1); got 1");
    CHECK(message_of<ValueError>([] { losses::label_smoothing_kl(zeros({2, 4}), labels({0, 7}, {2})); }) ==
          "label_smoothing_kl: target 7 at position 1 is out of bounds for 4 classes (and is not ignore_index 0); got "
          "input (2, 4) and target (2,)");
}

// ---- focal, z-loss, nll ----------------------------------------------------------------------

TEST_CASE("focal_loss: gamma 0 is cross-entropy; alpha weights; ignore_index")
{
    manual_seed(26);
    const Tensor z = randn({5, 4}, {.dtype = f64}) * 2.0;
    const Tensor y = labels({0, 3, -100, 1, 3}, {5});
    CHECK(losses::focal_loss(z, y, {.gamma = 0}).item() == doctest::Approx(cross_entropy(z, y).item()).epsilon(1e-13));
    check_all_close(grad_of(z, [&](const Tensor& x) { return losses::focal_loss(x, y, {.gamma = 0}); }),
                    grad_of(z, [&](const Tensor& x) { return cross_entropy(x, y); }), 1e-15);
    // alpha scales each term; mean divides by the number of targets (4), not by the alphas
    const Tensor alpha = f64s({0.25, 1, 1, 0.5}, {4});
    const Tensor rows = losses::focal_loss(z, y, {.gamma = 2, .reduction = Reduction::none});
    const Tensor rows_a = losses::focal_loss(z, y, {.gamma = 2, .alpha = alpha, .reduction = Reduction::none});
    const std::vector<double> a_of{0.25, 0.5, 0.0, 1, 0.5};
    double total = 0;
    for (std::int64_t i = 0; i < 5; ++i) {
        CHECK(rows_a.at(i) == doctest::Approx(a_of[i] * rows.at(i)));
        total += rows_a.at(i);
    }
    CHECK(rows.at(2) == 0.0);
    CHECK(losses::focal_loss(z, y, {.gamma = 2, .alpha = alpha}).item() == doctest::Approx(total / 4));
    // the modulating factor down-weights confident, correct targets
    const Tensor confident = f64s({6, 0, 0}, {1, 3});
    CHECK(losses::focal_loss(confident, labels({0}, {1})).item() <
          1e-3 * cross_entropy(confident, labels({0}, {1})).item());
}

TEST_CASE("focal_loss with gamma < 1 where p_y rounds to 1: finite, zero gradient")
{
    const Tensor z = f64s({1000, -1000, 0, 0, 50, 0}, {2, 3});
    for (double gamma : {0.25, 0.5, 2.0}) {
        const auto g = grad_of(z, [&](const Tensor& x) { return losses::focal_loss(x, labels({0, 1}, {2}), {.gamma = gamma}); });
        for (double v : g) CHECK(std::isfinite(v));
        CHECK(g[0] == 0.0);
    }
}

TEST_CASE("z_loss is coefficient * logsumexp^2 and composes with cross_entropy")
{
    manual_seed(27);
    const Tensor z = randn({3, 5}, {.dtype = f64}) * 4.0;
    const Tensor lse = logsumexp(z, 1);
    double want = 0;
    for (double v : lse.tolist()) want += 1e-4 * v * v;
    CHECK(losses::z_loss(z).item() == doctest::Approx(want / 3).epsilon(1e-13));
    CHECK(losses::z_loss(z, labels({1, -100, 0}, {3}), {.reduction = Reduction::sum}).item() ==
          doctest::Approx(1e-4 * (lse.at(0) * lse.at(0) + lse.at(2) * lse.at(2))).epsilon(1e-13));
    // the gradient of z-loss is 2 c lse softmax(z)
    const auto g = grad_of(z, [](const Tensor& x) { return losses::z_loss(x, {}, {.coefficient = 1, .reduction = Reduction::sum}); });
    const Tensor p = softmax(z, 1);
    for (std::int64_t i = 0; i < 15; ++i) CHECK(g[i] == doctest::Approx(2 * lse.at(i / 5) * p.at(i)).epsilon(1e-12));
    const Tensor y = labels({1, 2, 0}, {3});
    const auto combined = grad_of(z, [&](const Tensor& x) { return cross_entropy(x, y) + losses::z_loss(x, y); });
    CHECK(combined.size() == 15);
}

TEST_CASE("nll_loss: every target ignored gives 0 and zero gradients; weighted mean")
{
    const Tensor lp = log_softmax(f64s({1, 2, 3, 4, 5, 6}, {2, 3}), 1);
    const auto g = grad_of(lp, [](const Tensor& x) { return losses::nll_loss(x, labels({-100, -100}, {2})); });
    for (double v : g) CHECK(v == 0.0);
    const Tensor w = f64s({1, 2, 3}, {3});
    CHECK(losses::nll_loss(lp, labels({2, 1}, {2}), {.weight = w}).item() ==
          doctest::Approx(-(3 * lp.at(2) + 2 * lp.at(4)) / 5));
}

// ---- pointwise -------------------------------------------------------------------------------

TEST_CASE("kl_div reductions and log_target")
{
    manual_seed(28);
    const Tensor lp = log_softmax(randn({3, 4}, {.dtype = f64}), 1);
    const Tensor t = softmax(randn({3, 4}, {.dtype = f64}), 1);
    const double s = losses::kl_div(lp, t, {.reduction = Reduction::sum}).item();
    CHECK(losses::kl_div(lp, t, {.reduction = Reduction::batchmean}).item() == doctest::Approx(s / 3));
    CHECK(losses::kl_div(lp, t).item() == doctest::Approx(s / 12));
    CHECK(losses::kl_div(lp, log(t), {.reduction = Reduction::sum, .log_target = true}).item() ==
          doctest::Approx(s).epsilon(1e-13));
    // zeros in the target contribute 0
    const Tensor t0 = f64s({1, 0, 0, 0}, {1, 4});
    CHECK(losses::kl_div(slice(lp, 0, 0, 1), t0, {.reduction = Reduction::sum}).item() == doctest::Approx(-lp.at(0)));
}

TEST_CASE("binary_cross_entropy_with_logits: smooth at 0, exact at +-1000")
{
    // at x = 0 the gradient is sigmoid(0) - y = 0.5 - y (a composite with |x| would give 0 or -1 there)
    const auto g = grad_of(f64s({0, 0}, {2}), [](const Tensor& x) {
        return losses::binary_cross_entropy_with_logits(x, f64s({1, 0.25}, {2}), {.reduction = Reduction::sum});
    });
    CHECK(g[0] == doctest::Approx(-0.5));
    CHECK(g[1] == doctest::Approx(0.25));
    const Tensor x = from_vector(std::vector<double>{1000, -1000, 1000, -1000}, {4});
    const Tensor l = losses::binary_cross_entropy_with_logits(x, from_vector(std::vector<double>{0, 1, 1, 0}, {4}),
                                                              {.reduction = Reduction::none});
    CHECK(l.at(0) == doctest::Approx(1000));
    CHECK(l.at(1) == doctest::Approx(1000));
    CHECK(l.at(2) == 0.0);
    CHECK(l.at(3) == 0.0);
    // pos_weight weighs the positive term only
    const Tensor xs = f64s({0.3, -0.7}, {1, 2});
    const Tensor ys = f64s({1, 0}, {1, 2});
    const Tensor pw = f64s({3, 5}, {2});
    const Tensor lw = losses::binary_cross_entropy_with_logits(xs, ys, {.reduction = Reduction::none, .pos_weight = pw});
    CHECK(lw.at(0) == doctest::Approx(-3 * std::log(1 / (1 + std::exp(-0.3)))));
    CHECK(lw.at(1) == doctest::Approx(-std::log(1 - 1 / (1 + std::exp(0.7)))));
}

TEST_CASE("every loss is finite for logits of +-1000")
{
    manual_seed(29);
    const Tensor z = (randn({4, 5}, {.dtype = f64}) * 1000.0).detach();
    const Tensor y = labels({0, 4, 2, 1}, {4});
    const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> fs = {
        {"cross_entropy", [&](const Tensor& x) { return cross_entropy(x, y, {.label_smoothing = 0.1}); }},
        {"label_smoothing_kl", [&](const Tensor& x) { return losses::label_smoothing_kl(x, y, {.smoothing = 0.1}); }},
        {"nll_loss", [&](const Tensor& x) { return losses::nll_loss(log_softmax(x, 1), y); }},
        {"focal_loss", [&](const Tensor& x) { return losses::focal_loss(x, y); }},
        {"z_loss", [&](const Tensor& x) { return losses::z_loss(x, y); }},
        {"bce", [&](const Tensor& x) { return losses::binary_cross_entropy_with_logits(x, sigmoid(z * 1e-3)); }},
        {"kl_div", [&](const Tensor& x) { return losses::kl_div(log_softmax(x, 1), softmax(z * 1e-3, 1)); }},
    };
    for (const auto& [name, f] : fs) {
        CAPTURE(name);
        Tensor x = z.detach().requires_grad_();
        Tape tape;
        const Tensor l = f(x);
        CHECK(std::isfinite(l.item()));
        tape.backward(l);
        for (double v : x.grad().tolist()) CHECK(std::isfinite(v));
    }
}

TEST_CASE("shape mismatches name the loss and both shapes")
{
    CHECK(message_of<ShapeError>([] { losses::mse_loss(zeros({2, 3}), zeros({3})); }) ==
          "mse_loss: input and target must have the same shape; got input (2, 3) and target (3,)");
    CHECK(message_of<ShapeError>([] { losses::kl_div(zeros({2, 3}), zeros({2, 4})); }) ==
          "kl_div: input and target must have the same shape; got input (2, 3) and target (2, 4)");
    CHECK(message_of<ShapeError>([] {
              losses::binary_cross_entropy_with_logits(zeros({2, 3}), zeros({2, 3}), {.pos_weight = ones({2})});
          }) == "binary_cross_entropy_with_logits: pos_weight (2,) does not broadcast to the input (2, 3)");
    CHECK(message_of<ShapeError>([] { losses::nll_loss(zeros({2, 3}), labels({0}, {1})); }) ==
          "nll_loss: expected target of shape (2,) for input (2, 3); got target (1,)");
    CHECK(message_of<ValueError>([] { losses::focal_loss(zeros({2, 3}), labels({0, 5}, {2})); }) ==
          "focal_loss: target 5 at position 1 is out of bounds for 3 classes (and is not ignore_index -100); got input "
          "(2, 3) and target (2,)");
    CHECK(message_of<ValueError>([] { losses::FocalLoss({.gamma = -1}); }) == "focal_loss: gamma must be >= 0; got -1");
    CHECK(message_of<ValueError>([] { losses::mse_loss(zeros({2}), zeros({2}), {.reduction = Reduction::batchmean}); }) ==
          "mse_loss: reduction 'batchmean' is kl_div's only; use none, mean or sum");
}

// ---- attention alignment ---------------------------------------------------------------------

TEST_CASE("attention_alignment: the ce form is nll_loss of log A over aligned positions")
{
    manual_seed(30);
    const std::int64_t B = 2, T = 3, S = 4;
    const Tensor A = softmax(randn({B, T, S}, {.dtype = f64}), -1);
    const Tensor a = labels({1, 3, -100, 0, 2, 2}, {B, T});
    const Tensor mask = from_vector(std::vector<bool>{true, true, true, false, true, true}, {B, T});
    // aligned: positions 0, 1, 4, 5 (2 is ignore_index, 3 is masked out)
    const Tensor l = losses::attention_alignment_loss(A, a, mask);
    const Tensor masked = labels({1, 3, -100, -100, 2, 2}, {B, T});
    CHECK(l.item() == doctest::Approx(losses::nll_loss(reshape(log(A), {B * T, S}), reshape(masked, {B * T})).item()));
    const Tensor none = losses::attention_alignment_loss(A, a, mask, {.reduction = Reduction::none});
    CHECK(none.shape() == Shape{B, T});
    CHECK(none.at(2) == 0.0);
    CHECK(none.at(3) == 0.0);
    CHECK(none.at(4) == doctest::Approx(-std::log(A.at(4 * S + 2))));
    // a one-hot soft alignment is the same loss
    Tensor G = zeros({B, T, S}, {.dtype = f64});
    for (std::int64_t p : {0, 1, 4, 5}) G.value().set(p * S + masked.at(p), 1.0);
    CHECK(losses::attention_alignment_loss(A, G).item() == doctest::Approx(l.item()));
}

TEST_CASE("attention_alignment: mse form, heads, zero weights")
{
    const Tensor A = f64s({0.5, 0.5, 0, 0, 0, 1, 0.25, 0.25, 0.25, 0.25, 1, 0}, {1, 2, 3, 2});  // [B, H, T, S]
    const Tensor a = labels({0, 1, 0}, {1, 3});
    const Tensor mean_heads = mean(A, {1});
    const Tensor mse = losses::attention_alignment_loss(A, a, {}, {.form = losses::AlignmentForm::mse, .reduction = Reduction::sum});
    double want = 0;
    for (std::int64_t t = 0; t < 3; ++t)
        for (std::int64_t s = 0; s < 2; ++s) {
            const double d = mean_heads.at(t * 2 + s) - (a.at(t) == s ? 1.0 : 0.0);
            want += d * d;
        }
    CHECK(mse.item() == doctest::Approx(want));
    const Tensor ce_head1 = losses::attention_alignment_loss(A, a, {}, {.head = 1, .reduction = Reduction::none});
    CHECK(ce_head1.at(0) == doctest::Approx(-std::log(0.25)));
    CHECK(ce_head1.at(2) == doctest::Approx(-std::log(1.0)));
    // a zero weight at the aligned position: finite, -log(eps)
    const Tensor ce_head0 = losses::attention_alignment_loss(A, a, {}, {.head = 0, .reduction = Reduction::none});
    CHECK(ce_head0.at(1) == doctest::Approx(-std::log(1e-12)));
}

TEST_CASE("attention_alignment makes the 'dot-product attention loss' precise: CE + lambda * alignment trains Q and K")
{
    // A = softmax(Q K^T / sqrt(d)); the loss -sum log A[t, a(t)] pulls each query toward its gold key
    manual_seed(31);
    const std::int64_t T = 3, S = 4, d = 8;
    Tensor Wq = (randn({d, d}, {.dtype = f64}) * 0.3).detach().requires_grad_();
    const Tensor X = randn({1, T, d}, {.dtype = f64}), Y = randn({1, S, d}, {.dtype = f64});
    const Tensor gold = labels({2, 0, 3}, {1, T});
    double first = 0, last = 0;
    for (int step = 0; step < 30; ++step) {
        Tape tape;
        const Tensor A = softmax(matmul(matmul(X, Wq), transpose(Y, 1, 2)) / std::sqrt(double(d)), -1);
        const Tensor l = 0.5 * losses::attention_alignment_loss(A, gold);
        tape.backward(l);
        if (step == 0) first = l.item();
        last = l.item();
        Wq = (Wq.detach() - Wq.grad() * 0.5).detach().requires_grad_();
    }
    CHECK(last < 0.5 * first);
}

TEST_CASE("attention_alignment errors")
{
    const Tensor A = zeros({2, 3, 4});
    CHECK(message_of<ValueError>([&] { losses::attention_alignment_loss(A, labels({0, 1, 4, 0, 0, 0}, {2, 3})); }) ==
          "attention_alignment: aligned source position 4 at target position 2 is out of range for 4 source positions "
          "(and is not ignore_index -100); got attention (2, 3, 4) and target (2, 3)");
    CHECK(message_of<ShapeError>([&] { losses::attention_alignment_loss(A, labels({0, 1, 2}, {3})); }) ==
          "attention_alignment: expected int64 target of shape (2, 3) (one source position per target position) for "
          "attention (2, 3, 4); got target (3,)");
    CHECK(message_of<ShapeError>([&] {
              losses::attention_alignment_loss(A, labels({0, 0, 0, 0, 0, 0}, {2, 3}), from_vector(std::vector<bool>{true}, {1}));
          }) == "attention_alignment: mask must be bool of shape (2, 3) for attention (2, 3, 4); got bool mask (1,)");
    CHECK(message_of<ValueError>([&] {
              losses::attention_alignment_loss(zeros({2, 2, 3, 4}), labels({0, 0, 0, 0, 0, 0}, {2, 3}), {}, {.head = 2});
          }) == "attention_alignment: head must be in [0, 2) or -1 (the mean of the heads); got 2 for attention (2, 2, 3, 4)");
    CHECK(message_of<ShapeError>([&] { losses::attention_alignment_loss(zeros({3, 4}), labels({0, 0, 0}, {3})); }) ==
          "attention_alignment: expected attention weights of shape (B, T, S) or (B, H, T, S); got (3, 4)");
}
