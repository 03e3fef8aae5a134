// A program outside spool's tree, built by each route of scripts/consumers.sh: spool as a
// Meson subproject, through the installed spool.pc, and through find_package(spool CONFIG).
// It checks real values, so a route that compiles but links the wrong thing still fails:
// a matmul's loss and gradient, one SGD step, and a safetensors round trip (spool_io comes
// first in the link order). Prints what differs and exits 1 on any mismatch.
#include <cmath>
#include <cstdio>
#include <vector>

#include "spool.hpp"

using namespace spool;

static int failures = 0;

static void expect(const char* what, const Tensor& got, const std::vector<double>& want)
{
    std::vector<double> g = got.tolist();
    bool same = g.size() == want.size();
    for (std::size_t i = 0; same && i < g.size(); ++i) same = std::abs(g[i] - want[i]) <= 1e-6;
    if (same) return;
    ++failures;
    std::printf("consumer: %s: got", what);
    for (double v : g) std::printf(" %g", v);
    std::printf("; want");
    for (double v : want) std::printf(" %g", v);
    std::printf("\n");
}

int main()
{
    // loss = sum(x @ w), so dloss/dw[i][j] = sum over rows k of x[k][i]
    Tensor x = from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
    Tensor w = from_vector(std::vector<float>{0.5f, -1, 2, 1}, {2, 2}, {.requires_grad = true});
    {
        Tape tape;
        Tensor loss = sum(matmul(x, w));
        tape.backward(loss);
        expect("loss", loss, {16});
    }
    expect("dw", w.grad(), {4, 4, 6, 6});

    optim::SGD opt({w}, {.lr = 0.5});
    opt.step();  // w -= 0.5 * dw
    expect("w after SGD", w, {-1.5, -3, -1, -2});

    io::SafetensorsFile back = io::from_safetensors_bytes(io::to_safetensors_bytes({{"w", w}}));
    expect("w from safetensors", back.tensors.at(0).second, {-1.5, -3, -1, -2});

    if (failures == 0) std::printf("consumer: ok\n");
    return failures == 0 ? 0 : 1;
}
