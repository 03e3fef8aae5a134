// Tutorial 01 — the tape, gradients, gradcheck, and a first model.
//
// 1. Build a tiny computation on a spool::Tape and read its gradients.
// 2. Check those gradients against finite differences with spool::gradcheck.
// 3. Fit a 2-layer MLP to a generated dataset with plain gradient descent and watch the
//    loss fall.
//
// Run: ./build/examples/01_autograd        (docs/tutorials/01_autograd.md walks through it)
#include <cstdio>
#include <iostream>

#include "spool.hpp"

using namespace spool;

int main()
{
    manual_seed(0);

    // ---- 1. a computation on the tape --------------------------------------------------
    // y = tanh(w * x + b), summed. While a Tape lives, every op on a tensor that requires
    // grad is recorded; backward walks the records in reverse.
    Tensor x = from_vector(std::vector<double>{0.5, -1.0, 2.0}, {3});
    Tensor w = from_vector(std::vector<double>{1.5}, {1}, {.requires_grad = true});
    Tensor b = from_vector(std::vector<double>{0.1}, {1}, {.requires_grad = true});
    {
        Tape tape;
        Tensor y = tanh(w * x + b);  // w and b broadcast over x's 3 elements
        Tensor loss = sum(y);
        std::cout << "y    = " << y << "\n";
        std::cout << "loss = " << loss.item() << "  (tape holds " << tape.stats().nodes << " ops, "
                  << tape.stats().saved_bytes << " bytes saved for backward)\n";
        tape.backward(loss);
        // dloss/dw = sum((1 - y^2) * x), dloss/db = sum(1 - y^2)
        std::cout << "dloss/dw = " << w.grad() << "\n";
        std::cout << "dloss/db = " << b.grad() << "\n";
    }  // the tape ends here: what it saved is freed

    // ---- 2. gradcheck: analytical vs numerical gradients, in float64 ----------------------
    Tensor w64 = from_vector(std::vector<double>{1.5, -0.3}, {2}, {.dtype = f64, .requires_grad = true});
    Tensor x64 = from_vector(std::vector<double>{0.5, -1.0, 2.0, 0.7, 0.2, -0.4}, {3, 2}, {.dtype = f64});
    auto f = [&](const std::vector<Tensor>& in) { return log_softmax(gelu(x64 * in[0]), -1); };
    GradcheckResult check = gradcheck(f, {w64});
    std::printf("gradcheck: %s, %d Jacobian entries compared, max |error| %.2e\n", check.ok ? "passed" : "FAILED",
                check.checked, check.max_abs_err);

    // ---- 3. a 2-layer MLP fitted with gradient descent -------------------------------------
    // Data: points in the plane, label 1 inside the unit circle, 0 outside.
    const std::int64_t N = 256, H = 32;
    Tensor pts = uniform({N, 2}, -1.5, 1.5);
    std::vector<double> labels(N);
    for (std::int64_t i = 0; i < N; ++i) {
        double px = pts.at({i, 0}), py = pts.at({i, 1});
        labels[i] = px * px + py * py < 1.0 ? 1.0 : 0.0;
    }
    Tensor target = from_vector(labels, {N, 1});

    // parameters: 2 -> H -> 1, scaled so activations start in a useful range
    Tensor w1 = (randn({2, H}) * 0.7).detach().requires_grad_();
    Tensor b1 = zeros({H}, {.requires_grad = true});
    Tensor w2 = (randn({H, 1}) * (1.0 / 6)).detach().requires_grad_();
    Tensor b2 = zeros({1}, {.requires_grad = true});
    std::vector<Tensor> params{w1, b1, w2, b2};

    const double lr = 0.5;
    for (int step = 0; step <= 400; ++step) {
        Tape tape;
        Tensor h = relu(matmul(pts, w1) + b1);
        Tensor p = sigmoid(matmul(h, w2) + b2);
        // binary cross-entropy, clamped away from log(0)
        Tensor pc = clamp(p, 1e-6, 1 - 1e-6);
        Tensor loss = -mean(target * log(pc) + (1.0 - target) * log(1.0 - pc));
        tape.backward(loss);
        {
            NoGrad ng;  // the update itself is not part of the model
            for (auto& q : params) {
                Tensor updated = q - q.grad() * lr;
                q.value() = updated.value();
                q.zero_grad();
            }
        }
        if (step % 50 == 0) {
            // accuracy: prediction > 0.5 agrees with the label
            double correct = 0;
            for (std::int64_t i = 0; i < N; ++i) correct += (p.at(i) > 0.5) == (labels[i] > 0.5);
            std::printf("step %3d  loss %.4f  accuracy %.1f%%\n", step, loss.item(), 100 * correct / N);
        }
    }
    return 0;
}
