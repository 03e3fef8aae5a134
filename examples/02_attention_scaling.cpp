// Tutorial 02 — why attention divides by √d_k: a measurement, not an argument.
//
// For d_k = 16 … 1024, random Q, K, V [L, d_k] with unit-variance entries go through
// softmax(Q Kᵀ · scale) V on a tape, with scale = 1 (dot-product attention) and
// scale = 1/√d_k (scaled dot-product attention). Averaged over seeds it prints the logits'
// spread, the softmax entropy, the largest weight per row and the gradient norm that
// reaches Q and K, and plots them against d_k. Then it checks that spool's fused
// scaled_dot_product_attention gives what the composed ops give.
//
// Run: build/examples/02_attention_scaling   (docs/tutorials/02_attention_scaling.md)
// Letters: L queries = keys, D = d_k the query/key width.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>

#include "autograd/xtensor.hpp"
#include "spool.hpp"
#include "train/plot.hpp"

using namespace spool;
namespace fs = std::filesystem;

namespace {

struct Measure {
    double logit_std = 0;  ///< standard deviation of the entries of Q Kᵀ · scale
    double entropy = 0;    ///< mean over rows of −Σ a log a, in nats (uniform: log L)
    double max_weight = 0; ///< mean over rows of max_j a_ij
    double saturated = 0;  ///< fraction of rows whose largest weight exceeds 0.99
    double dq = 0, dk = 0; ///< ‖dloss/dQ‖, ‖dloss/dK‖ (Frobenius)
    double ds = 0;         ///< ‖dloss/dS‖, the gradient reaching the logits
    std::vector<double> dq_rows, dk_rows;  ///< ‖dQ_i‖ per query, ‖dK_j‖ per key
};

double norm(const Tensor& t) { return std::sqrt(sum(t * t).item()); }

// One attention forward and backward at width D with the given scale, seeded.
//   S = Q Kᵀ · scale   [L, L]      A = softmax(S)    O = A V   [L, D]
//   loss = Σ O ⊙ P with P a fixed random projection, entries N(0, 1/D), so that the loss
//   (and the gradient arriving at O) has the same size at every D.
Measure measure(std::int64_t L, std::int64_t D, double scale, std::uint64_t seed, Tensor* weights_out = nullptr)
{
    manual_seed(seed);
    Tensor Q = randn({L, D}, {.requires_grad = true});
    Tensor K = randn({L, D}, {.requires_grad = true});
    Tensor V = randn({L, D});
    Tensor P = randn({L, D}) * (1.0 / std::sqrt(static_cast<double>(D)));

    Measure m;
    Tensor S, A;
    {
        Tape tape;
        S = matmul(Q, transpose(K, 0, 1)) * scale;
        A = softmax(S, -1);
        Tensor O = matmul(A, V);
        tape.backward(sum(O * P));
    }
    m.dq = norm(Q.grad());
    m.dk = norm(K.grad());
    m.dq_rows = sqrt(sum(Q.grad() * Q.grad(), {1})).tolist();  // query i: ‖dQ_i‖
    m.dk_rows = sqrt(sum(K.grad() * K.grad(), {1})).tolist();  // key j: ‖dK_j‖
    {
        // the gradient at the logits: the same forward again, from S as a leaf
        Tensor S_leaf = S.detach().requires_grad_();
        Tape tape;
        tape.backward(sum(matmul(softmax(S_leaf, -1), V) * P));
        m.ds = norm(S_leaf.grad());
    }
    // statistics of the forward pass (no tape is live: nothing is recorded)
    m.logit_std = std::sqrt(var(S).item());
    m.entropy = mean(-sum(A * log_softmax(S, -1), {-1})).item();  // log_softmax: no log(0)
    // the weights through an xtensor view of A's buffer (no copy): per-row max, its mean
    // and the share of rows above 0.99
    xt::xtensor<double, 1> row_max = xt::cast<double>(xt::amax(as_xtensor<float>(A), {1}));
    m.max_weight = xt::mean(row_max)();
    m.saturated = xt::mean(xt::cast<double>(row_max > 0.99))();
    if (weights_out) *weights_out = A.detach();
    return m;
}

std::vector<std::vector<double>> rows_of(const Tensor& a)
{
    const auto L = a.size(0), S = a.size(1);
    auto flat = a.tolist();
    std::vector<std::vector<double>> rows(L);
    for (std::int64_t i = 0; i < L; ++i) rows[i].assign(flat.begin() + i * S, flat.begin() + (i + 1) * S);
    return rows;
}

double median(std::vector<double> v)
{
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
}

double max_abs_diff(const Tensor& a, const Tensor& b) { return max(abs(a - b)).item(); }

}  // namespace

int main(int argc, char** argv)
{
    std::int64_t L = 32;
    int seeds = 32, threads = 0;
    std::vector<std::int64_t> widths = {16, 32, 64, 128, 256, 512, 1024};
    std::string out = "runs/02_attention_scaling";
    bool smoke = false;

    CLI::App app{"spool tutorial 02: dot-product vs scaled dot-product attention as d_k grows"};
    app.option_defaults()->always_capture_default();
    app.add_option("--length", L, "queries = keys per sequence (L)")->check(CLI::Range(2, 4096));
    app.add_option("--seeds", seeds, "random draws averaged per point")->check(CLI::Range(1, 10000));
    app.add_option("--dk", widths, "the widths d_k to measure")->check(CLI::PositiveNumber);
    app.add_option("--threads", threads, "threads (0: all cores)");
    app.add_option("--out", out, "run directory for the plots");
    app.add_flag("--smoke", smoke, "two widths, two seeds (tests)");
    CLI11_PARSE(app, argc, argv);
    if (smoke) {
        widths = {16, 64};
        seeds = 2;
    }
    if (threads > 0) set_num_threads(threads);
    fs::create_directories(out);

    // ---- 1. the sweep ---------------------------------------------------------------------
    std::printf("L = %lld queries and keys, entries of Q, K, V ~ N(0, 1), %d seeds per row; "
                "uniform attention has entropy log L = %.2f nats\n\n",
                static_cast<long long>(L), seeds, std::log(static_cast<double>(L)));
    // median |dQ_i|: the typical query's gradient; small: share of queries with |dQ_i| < 1e-3
    std::printf("%5s  %-9s  %6s  %7s  %5s  %6s  %8s  %8s  %8s  %8s  %8s  %6s\n", "d_k", "scale", "logit", "entropy",
                "max", "rows", "|dS|", "|dQ|", "median", "|dK|", "median", "small");
    std::printf("%5s  %-9s  %6s  %7s  %5s  %6s  %8s  %8s  %8s  %8s  %8s  %6s\n", "", "", "std", "(nats)", "w",
                ">0.99", "", "", "|dQ_i|", "", "|dK_j|", "|dQ_i|");
    const char* names[2] = {"1", "1/sqrt(d)"};
    std::vector<double> xs;
    std::vector<double> ent[2], maxw[2], gq[2], mq[2];  // per scale, per width: what the plots show
    for (auto D : widths) {
        xs.push_back(static_cast<double>(D));
        for (int scaled = 0; scaled < 2; ++scaled) {
            const double scale = scaled ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0;
            Measure avg;  // means over seeds; per-row norms pooled over seeds
            for (int s = 0; s < seeds; ++s) {
                Measure m = measure(L, D, scale, 1000 + s);
                avg.logit_std += m.logit_std / seeds;
                avg.entropy += m.entropy / seeds;
                avg.max_weight += m.max_weight / seeds;
                avg.saturated += m.saturated / seeds;
                avg.dq += m.dq / seeds;
                avg.dk += m.dk / seeds;
                avg.ds += m.ds / seeds;
                avg.dq_rows.insert(avg.dq_rows.end(), m.dq_rows.begin(), m.dq_rows.end());
                avg.dk_rows.insert(avg.dk_rows.end(), m.dk_rows.begin(), m.dk_rows.end());
            }
            const double small = static_cast<double>(std::count_if(avg.dq_rows.begin(), avg.dq_rows.end(),
                                                                   [](double g) { return g < 1e-3; })) /
                                 static_cast<double>(avg.dq_rows.size());
            const double med_q = median(avg.dq_rows), med_k = median(avg.dk_rows);
            std::printf("%5lld  %-9s  %6.2f  %7.3f  %5.3f  %5.1f%%  %8.2e  %8.2e  %8.2e  %8.2e  %8.2e  %5.1f%%\n",
                        static_cast<long long>(D), names[scaled], avg.logit_std, avg.entropy, avg.max_weight,
                        100 * avg.saturated, avg.ds, avg.dq, med_q, avg.dk, med_k, 100 * small);
            ent[scaled].push_back(avg.entropy);
            maxw[scaled].push_back(avg.max_weight);
            gq[scaled].push_back(avg.dq);
            mq[scaled].push_back(med_q);
        }
    }

    // ---- 2. the fused primitive agrees with the composed ops --------------------------------
    // softmax(Q Kᵀ / √d_k) V written out above vs scaled_dot_product_attention (default scale
    // 1/√E): outputs and both input gradients.
    {
        const std::int64_t D = widths.back();
        manual_seed(7);
        Tensor Q = randn({L, D}, {.requires_grad = true});
        Tensor K = randn({L, D}, {.requires_grad = true});
        Tensor V = randn({L, D}, {.requires_grad = true});
        Tensor P = randn({L, D});
        Tensor O1, O2, dQ1, dK1, dV1;
        {
            Tape tape;
            O1 = matmul(softmax(matmul(Q, transpose(K, 0, 1)) * (1.0 / std::sqrt(static_cast<double>(D))), -1), V);
            tape.backward(sum(O1 * P));
            dQ1 = Q.grad().detach(), dK1 = K.grad().detach(), dV1 = V.grad().detach();
            Q.zero_grad(), K.zero_grad(), V.zero_grad();
        }
        {
            Tape tape;
            O2 = scaled_dot_product_attention(Q, K, V).output;
            tape.backward(sum(O2 * P));
        }
        std::printf("\nscaled_dot_product_attention vs the composed ops at d_k = %lld (float32): max |difference| "
                    "output %.1e, dQ %.1e, dK %.1e, dV %.1e\n",
                    static_cast<long long>(D), max_abs_diff(O1, O2), max_abs_diff(dQ1, Q.grad()),
                    max_abs_diff(dK1, K.grad()), max_abs_diff(dV1, V.grad()));
    }

    // ---- 3. plots ---------------------------------------------------------------------------
    if (!train::gnuplot_available()) {
        std::printf("gnuplot not found: no plots written\n");
        return 0;
    }
    auto series = [&](std::vector<double>* ys, const std::string& what) {
        return std::vector<train::Series>{{what + "scale 1 (dot-product)", xs, ys[0]},
                                          {what + "scale 1/sqrt(d_k) (scaled)", xs, ys[1]}};
    };
    auto ent_series = series(ent, "");
    ent_series.push_back({"uniform: log L", xs, std::vector<double>(xs.size(), std::log(static_cast<double>(L)))});
    train::plot_lines(out + "/entropy.png", {.title = "Softmax entropy per row (L = " + std::to_string(L) + " keys)",
                                             .xlabel = "d_k", .ylabel = "entropy (nats)", .series = ent_series,
                                             .logx = true, .points = true, .key = "center right"});
    train::plot_lines(out + "/max_weight.png", {.title = "Largest attention weight per row", .xlabel = "d_k",
                                                .ylabel = "mean of max_j a_ij", .series = series(maxw, ""),
                                                .logx = true, .points = true, .key = "center right"});
    auto grad_series = series(gq, "|dQ|, ");
    for (auto& g : series(mq, "median |dQ_i|, ")) grad_series.push_back(g);
    train::plot_lines(out + "/grad_norm.png", {.title = "Gradient reaching Q: all queries, and the typical query",
                                               .xlabel = "d_k", .ylabel = "norm", .series = grad_series, .logx = true,
                                               .logy = true, .points = true, .key = "bottom left"});
    // one draw's attention matrix at a large width, both ways
    const std::int64_t D = widths.back();
    for (int scaled = 0; scaled < 2; ++scaled) {
        Tensor A;
        measure(L, D, scaled ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0, 1000, &A);
        const std::string file = scaled ? "/weights_scaled.png" : "/weights_unscaled.png";
        train::plot_heatmap(out + file, {.title = std::string("Attention weights, d_k = ") + std::to_string(D) +
                                                  ", scale " + names[scaled],
                                         .xlabel = "key", .ylabel = "query", .values = rows_of(A), .xtics = {}, .ytics = {},
                                         .width = 520, .height = 480});
    }
    std::printf("plots: %s/{entropy,max_weight,grad_norm,weights_unscaled,weights_scaled}.png\n", out.c_str());
    return 0;
}
