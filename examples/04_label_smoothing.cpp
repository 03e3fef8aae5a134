// Tutorial 04 — label smoothing: the same Transformer trained with plain cross-entropy and
// with label smoothing ε = 0.1, compared on held-out data by accuracy, likelihood (NLL) and
// calibration (expected calibration error, reliability diagram).
//
// Run: build/examples/04_label_smoothing   (docs/tutorials/04_label_smoothing.md)
// Writes runs/04_label_smoothing/: reliability.png, loss.png, ece.png, and one run
// directory per variant (metrics.csv, plots, index.html).
#include <chrono>

#include "tutorial_util.hpp"

using namespace spool;
using tutorial::format;
using tutorial::percent;

int main(int argc, char** argv)
{
    const auto start = std::chrono::steady_clock::now();
    tutorial::Common common{.out = "runs/04_label_smoothing"};
    train::Seq2SeqConfig c = tutorial::base_config();
    c.steps = 1500; c.lr = 2e-3;
    c.eval_every = 100; c.eval_size = 512; c.show = 0;
    c.train_size = 1000;  // a fixed training set, revisited ~96 times in 1500 steps
    double epsilon = 0.1;
    std::int64_t min_bin = 20;

    CLI::App app{"spool tutorial 04: cross-entropy vs label smoothing — accuracy, NLL, calibration"};
    app.option_defaults()->always_capture_default();
    tutorial::add_config_options(app, c);
    app.add_option("--smoothing", epsilon, "label smoothing ε of the second run")->check(CLI::Range(0.0, 0.99));
    app.add_option("--min-bin", min_bin, "reliability diagram: leave out bins with fewer tokens");
    tutorial::add_common_options(app, common);
    CLI11_PARSE(app, argc, argv);
    tutorial::apply_common(common, c);
    if (common.smoke) min_bin = 1;

    // ---- the two runs: everything equal but the loss's target distribution ---------------
    const std::string eps = format("%g", epsilon);
    train::Seq2SeqConfig ce = c, ls = c;
    ce.loss_args = {};                                // one-hot targets
    ls.loss_args = {"label_smoothing=" + eps};        // (1 − ε)·one-hot + ε/V
    std::printf("tutorial 04: task '%s', d_model %lld, %lld+%lld layers, %lld steps of %lld, Adam + Noam to %g, "
                "%d threads\n\n",
                c.task.c_str(), static_cast<long long>(c.d_model), static_cast<long long>(c.num_layers),
                static_cast<long long>(c.num_layers), static_cast<long long>(c.steps),
                static_cast<long long>(c.batch_size), c.lr, get_num_threads());
    const auto runs = tutorial::run_variants(
        {{"cross_entropy", "cross-entropy", ce}, {"label_smoothing", "label smoothing " + eps, ls}}, common.out);

    // ---- the table ------------------------------------------------------------------------
    // mean confidence = the average of max_v p(v) over held-out tokens (from the 15 bins);
    // accuracy − confidence > 0: under-confident, < 0: over-confident
    tutorial::Table table{{"loss", "exact match", "token acc", "NLL", "ECE", "mean conf", "acc − conf", "conf > 0.93"}, {}};
    for (const auto& r : runs) {
        const auto& e = r.summary.last;
        double n = 0, conf = 0;
        for (std::size_t k = 0; k < e.bin_count.size(); ++k)
            if (e.bin_count[k] > 0) {
                n += e.bin_count[k];
                conf += e.bin_count[k] * e.bin_confidence[k];
            }
        const double mean_conf = conf / std::max(n, 1.0);
        table.rows.push_back({r.variant.label, percent(e.exact), format("%.2f%%", 100 * e.token_acc),
                              format("%.4f", e.nll), format("%.4f", e.ece), format("%.4f", mean_conf),
                              format("%+.4f", e.token_acc - mean_conf),
                              percent(e.bin_count.empty() ? 0 : e.bin_count.back() / std::max(n, 1.0))});
    }
    std::printf("\nheld-out, after %lld steps (%lld pairs never seen in training):\n",
                static_cast<long long>(c.steps), static_cast<long long>(c.eval_size));
    table.print();

    // ---- plots ----------------------------------------------------------------------------
    // reliability diagram: per confidence bin, the accuracy of the tokens in it
    train::LinePlot rel{.title = "Reliability diagram (held-out tokens, 15 bins)", .xlabel = "confidence (max probability)",
                        .ylabel = "accuracy", .series = {}, .points = true, .width = 640, .height = 560,
                        .key = "bottom right"};
    rel.series.push_back({"perfect calibration", {0, 1}, {0, 1}});
    for (const auto& r : runs) {
        const auto& e = r.summary.last;
        train::Series s{r.variant.label, {}, {}};
        for (std::size_t k = 0; k < e.bin_count.size(); ++k)
            if (e.bin_count[k] >= static_cast<double>(min_bin)) {
                s.x.push_back(e.bin_confidence[k]);
                s.y.push_back(e.bin_accuracy[k]);
            }
        rel.series.push_back(std::move(s));
    }
    std::printf("\n");
    tutorial::save_plot(common.out + "/reliability.png", rel);

    train::LinePlot loss{.title = "Loss: training (smoothed) and held-out NLL", .xlabel = "step", .ylabel = "loss",
                         .series = {}, .logy = true};
    for (const auto& r : runs) {
        auto s = tutorial::column_series(r, "loss");
        s.label = "training loss, " + r.variant.label;
        s.y = tutorial::smoothed(s.y);
        loss.series.push_back(std::move(s));
    }
    for (const auto& r : runs) {
        auto s = tutorial::column_series(r, "eval_nll");
        s.label = "held-out NLL, " + r.variant.label;
        loss.series.push_back(std::move(s));
    }
    tutorial::save_plot(common.out + "/loss.png", loss);

    train::LinePlot ece{.title = "Expected calibration error on held-out tokens", .xlabel = "step", .ylabel = "ECE",
                        .series = {}, .points = true};
    for (const auto& r : runs) ece.series.push_back(tutorial::column_series(r, "eval_ece"));
    tutorial::save_plot(common.out + "/ece.png", ece);

    std::printf("%s\n", tutorial::time_line(start).c_str());
    return 0;
}
