// Tutorial 05 — learning-rate warmup: a post-norm Transformer trained with Adam at a fixed
// rate, and at the same peak rate reached through Noam warmup and through linear warmup +
// cosine decay. Loss curves, gradient norms, loss spikes and held-out accuracy on one page.
//
// Run: build/examples/05_warmup   (docs/tutorials/05_warmup.md)
// Writes runs/05_warmup/: loss.png, grad_norm.png, lr.png, accuracy.png and one run
// directory per schedule (metrics.csv, plots, index.html).
#include <chrono>

#include "tutorial_util.hpp"

using namespace spool;
using tutorial::format;
using tutorial::percent;

namespace {

struct Stability {
    std::int64_t spikes = 0;      ///< steps whose loss exceeds 1.5 × the running average before them
    double max_grad = 0;          ///< largest gradient norm (before clipping)
    double early_grad = 0;        ///< mean gradient norm over the first `early` steps
    double worst_late_loss = 0;   ///< the largest loss in the second half of training
};

Stability stability(const std::vector<double>& loss, const std::vector<double>& grad, std::int64_t early)
{
    Stability s;
    double avg = NAN;
    for (std::size_t i = 0; i < loss.size(); ++i) {
        if (std::isfinite(avg) && i >= 20 && loss[i] > 1.5 * avg) ++s.spikes;
        avg = std::isfinite(avg) ? avg + 0.05 * (loss[i] - avg) : loss[i];
        if (i >= loss.size() / 2) s.worst_late_loss = std::max(s.worst_late_loss, loss[i]);
    }
    const auto n = std::min<std::size_t>(grad.size(), static_cast<std::size_t>(early));
    for (std::size_t i = 0; i < grad.size(); ++i) {
        s.max_grad = std::max(s.max_grad, grad[i]);
        if (i < n) s.early_grad += grad[i] / static_cast<double>(n);
    }
    return s;
}

}  // namespace

int main(int argc, char** argv)
{
    const auto start = std::chrono::steady_clock::now();
    tutorial::Common common{.out = "runs/05_warmup"};
    train::Seq2SeqConfig c = tutorial::base_config();  // post-norm, as the paper: the variant that needs warmup
    c.steps = 800; c.lr = 1e-2;
    c.clip = 0;            // no clipping: what warmup does on its own
    c.eval_every = 100; c.eval_size = 256; c.show = 0;

    CLI::App app{"spool tutorial 05: Adam at a fixed rate vs the same peak with warmup (post-norm)"};
    app.option_defaults()->always_capture_default();
    tutorial::add_config_options(app, c);
    app.add_option("--clip", c.clip, "gradient-norm clipping limit (0: off)");
    app.add_flag("--norm-first", c.norm_first, "pre-norm layers instead (warmup matters less)");
    tutorial::add_common_options(app, common);
    CLI11_PARSE(app, argc, argv);
    tutorial::apply_common(common, c);

    // ---- three schedules, one peak --------------------------------------------------------
    train::Seq2SeqConfig constant = c, noam = c, cosine = c;
    constant.schedule = "constant";  // lr = peak from step 1
    noam.schedule = "noam";          // linear rise to the peak at `warmup`, then ∝ 1/√step
    cosine.schedule = "cosine";      // linear rise to the peak at `warmup`, then cosine to 0
    std::printf("tutorial 05: task '%s', %s d_model %lld, %lld+%lld layers, %lld steps of %lld, Adam (β2 %.2f) peak "
                "lr %g, warmup %lld, clip %s, %d threads\n\n",
                c.task.c_str(), c.norm_first ? "pre-norm" : "post-norm", static_cast<long long>(c.d_model),
                static_cast<long long>(c.num_layers), static_cast<long long>(c.num_layers),
                static_cast<long long>(c.steps), static_cast<long long>(c.batch_size), c.beta2, c.lr,
                static_cast<long long>(c.warmup), c.clip > 0 ? format("%g", c.clip).c_str() : "off",
                get_num_threads());
    const auto runs = tutorial::run_variants({{"constant", "constant (no warmup)", constant},
                                              {"noam", "Noam warmup", noam},
                                              {"cosine", "linear warmup + cosine", cosine}},
                                             common.out);

    // ---- the table ------------------------------------------------------------------------
    tutorial::Table table{{"schedule", "exact match", "token acc", "NLL", "loss spikes", "late max loss",
                           format("mean |g|, steps 1-%lld", static_cast<long long>(c.warmup)), "max |g|",
                           "skipped"},
                          {}};
    for (const auto& r : runs) {
        const auto& e = r.summary.last;
        const std::string csv = r.dir + "/metrics.csv";
        const Stability s = stability(train::read_csv_column(csv, "loss"), train::read_csv_column(csv, "grad_norm"),
                                      c.warmup);
        table.rows.push_back({r.variant.label, percent(e.exact), format("%.2f%%", 100 * e.token_acc),
                              format("%.4f", e.nll), format("%lld", static_cast<long long>(s.spikes)),
                              format("%.3f", s.worst_late_loss), format("%.2f", s.early_grad),
                              format("%.1f", s.max_grad),
                              format("%lld", static_cast<long long>(r.summary.skipped_steps))});
    }
    std::printf("\nheld-out after %lld steps; a spike is a step whose loss exceeds 1.5x the running average; "
                "|g| is the global gradient norm before clipping:\n",
                static_cast<long long>(c.steps));
    table.print();

    // exact match at each evaluation, one column per schedule
    tutorial::Table curve{{"step"}, {}};
    for (const auto& r : runs) curve.header.push_back(r.variant.label);
    for (std::size_t k = 0; k < runs.front().summary.evals.size(); ++k) {
        std::vector<std::string> row = {format("%lld", static_cast<long long>(runs.front().summary.evals[k].step))};
        for (const auto& r : runs) row.push_back(k < r.summary.evals.size() ? percent(r.summary.evals[k].exact) : "");
        curve.rows.push_back(std::move(row));
    }
    std::printf("\nheld-out exact match during training:\n");
    curve.print();

    // ---- plots ----------------------------------------------------------------------------
    std::printf("\n");
    const std::string& out = common.out;
    tutorial::plot_column(out + "/loss.png", runs, {.title = "Training loss (moving average), same peak learning rate",
                                                    .ylabel = "loss", .column = "loss", .smooth = true, .logy = true});
    tutorial::plot_column(out + "/grad_norm.png", runs, {.title = "Global gradient norm (moving average)",
                                                         .ylabel = "gradient norm", .column = "grad_norm",
                                                         .smooth = true, .logy = true});
    tutorial::plot_column(out + "/lr.png", runs, {.title = "Learning rate", .ylabel = "lr", .column = "lr"});
    tutorial::plot_column(out + "/accuracy.png", runs, {.title = "Held-out exact match (greedy decode)",
                                                        .ylabel = "exact match", .column = "eval_exact", .points = true});

    std::printf("%s\n", tutorial::time_line(start).c_str());
    return 0;
}
