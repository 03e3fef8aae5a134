// What tutorials 03–06 share: each trains a few variants of one Seq2SeqConfig with
// train::run (one run directory per variant), prints a table of the outcomes and plots
// series from the variants' metrics.csv on one chart. Holds the common options (--out,
// --threads, --seed, --smoke), the smoke-size model, CPU-time measurement and a table
// printer; it does not hold any tutorial's experiment.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "spool.hpp"
#include "train/plot.hpp"
#include "train/progress.hpp"
#include "train/seq2seq.hpp"

namespace tutorial {

namespace train = spool::train;

// ---- options ----------------------------------------------------------------------------

struct Common {
    std::string out;      ///< run directory (one subdirectory per variant)
    int threads = 0;      ///< 0: all cores
    std::uint64_t seed = 1;
    bool smoke = false;   ///< a few steps with a tiny model (the test suite runs this)
};

/// The model and recipe the tutorials share, every field set here so that a change of the
/// trainer's defaults does not change them: reversing digit strings with a post-norm
/// Seq2SeqTransformer (d_model 64, 2 + 2 layers, 4 heads, feed-forward 256, dropout 0.1),
/// label-smoothed CE (0.1), Adam β 0.9/0.98 with Noam warmup over 200 steps, clipping at 1.
inline train::Seq2SeqConfig base_config()
{
    train::Seq2SeqConfig c;
    c.task = "reverse";
    c.d_model = 64; c.nhead = 4; c.num_layers = 2; c.dim_feedforward = 256; c.dropout = 0.1; c.norm_first = false;
    c.batch_size = 64; c.schedule = "noam"; c.warmup = 200; c.beta1 = 0.9; c.beta2 = 0.98; c.eps = 1e-9;
    c.weight_decay = 0; c.clip = 1.0; c.loss = "cross_entropy"; c.loss_args = {"label_smoothing=0.1"};
    c.align_weight = 0; c.train_size = 0;
    return c;
}

/// --out, --threads, --seed, --smoke.
inline void add_common_options(CLI::App& app, Common& c)
{
    app.add_option("--out", c.out, "run directory (a subdirectory per variant)");
    app.add_option("--threads", c.threads, "threads (0: all cores)");
    app.add_option("--seed", c.seed, "seed of weights, dropout and data");
    app.add_flag("--smoke", c.smoke, "a few steps with a tiny model (tests)");
}

/// The options of the model and its training every tutorial exposes (defaults: config's).
inline void add_config_options(CLI::App& app, train::Seq2SeqConfig& c)
{
    app.add_option("--task", c.task, "task: dates, reverse or copy")->check(CLI::IsMember(train::task_names()));
    app.add_option("--steps", c.steps, "training steps (per run)")->check(CLI::PositiveNumber);
    app.add_option("--lr", c.lr, "peak learning rate (noam: its factor is chosen so the peak is this)");
    app.add_option("--warmup", c.warmup, "warmup steps");
    app.add_option("--d-model", c.d_model, "model width");
    app.add_option("--layers", c.num_layers, "encoder layers = decoder layers");
    app.add_option("--dropout", c.dropout, "dropout probability");
    app.add_option("--train-size", c.train_size, "distinct training pairs (0: fresh pairs every step)");
    app.add_option("--eval-size", c.eval_size, "held-out pairs per evaluation");
}

/// Applies --threads and --seed to config; under --smoke shrinks it to seconds.
inline void apply_common(const Common& c, train::Seq2SeqConfig& config)
{
    if (c.threads > 0) spool::set_num_threads(c.threads);
    config.seed = c.seed;
    if (c.smoke) train::shrink_for_smoke(config);
}

// ---- formatting -------------------------------------------------------------------------

inline std::string format(const char* fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

inline std::string percent(double v) { return std::isfinite(v) ? format("%.1f%%", 100 * v) : "-"; }

/// A table printed with aligned columns (the first left-aligned, the rest right-aligned),
/// in Markdown's pipe syntax so it can be pasted into a page as printed.
struct Table {
    std::vector<std::string> header;
    std::vector<std::vector<std::string>> rows;

    void print(std::FILE* out = stdout) const
    {
        std::vector<std::size_t> w(header.size(), 3);
        auto width = [](const std::string& s) {  // UTF-8: count code points, not bytes
            return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char ch) { return (ch & 0xC0) != 0x80; }));
        };
        for (std::size_t j = 0; j < header.size(); ++j) w[j] = std::max(w[j], width(header[j]));
        for (const auto& r : rows)
            for (std::size_t j = 0; j < r.size() && j < w.size(); ++j) w[j] = std::max(w[j], width(r[j]));
        auto line = [&](const std::vector<std::string>& cells) {
            std::string s = "|";
            for (std::size_t j = 0; j < w.size(); ++j) {
                const std::string c = j < cells.size() ? cells[j] : "";
                const std::string pad(w[j] - width(c), ' ');
                s += " " + (j == 0 ? c + pad : pad + c) + " |";
            }
            std::fprintf(out, "%s\n", s.c_str());
        };
        line(header);
        std::string rule = "|";
        for (std::size_t j = 0; j < w.size(); ++j) rule += (j == 0 ? ":" : "-") + std::string(w[j], '-') + (j == 0 ? "-|" : ":|");
        std::fprintf(out, "%s\n", rule.c_str());
        for (const auto& r : rows) line(r);
    }
};

// ---- CPU time ---------------------------------------------------------------------------

/// User + system CPU seconds of this process so far (all threads).
inline double cpu_seconds()
{
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// ---- variants ---------------------------------------------------------------------------

struct Variant {
    std::string name;   ///< directory name under the run directory
    std::string label;  ///< what tables and legends call it
    train::Seq2SeqConfig config;
};

struct Outcome {
    Variant variant;
    std::string dir;  ///< its run directory
    train::RunSummary summary;
    double cpu = 0;   ///< CPU seconds it took
};

inline nlohmann::json config_json(const train::Seq2SeqConfig& c)
{
    return {{"task", c.task},
            {"model", {{"d_model", c.d_model}, {"nhead", c.nhead}, {"num_layers", c.num_layers},
                       {"dim_feedforward", c.dim_feedforward}, {"dropout", c.dropout}, {"norm_first", c.norm_first}}},
            {"optim", {{"optimizer", "Adam"}, {"betas", {c.beta1, c.beta2}}, {"eps", c.eps}, {"schedule", c.schedule},
                       {"peak_lr", c.lr}, {"warmup", c.warmup}, {"clip", c.clip}}},
            {"loss", c.loss}, {"loss_args", c.loss_args}, {"align_weight", c.align_weight},
            {"steps", c.steps}, {"batch_size", c.batch_size}, {"seed", c.seed},
            {"eval_every", c.eval_every}, {"eval_size", c.eval_size}};
}

/// Called after a variant's run while its trainer (and model) still exist.
using AfterRun = std::function<void(train::Seq2SeqTrainer&, Outcome&)>;

/// Trains each variant quietly into out/<name> (metrics.csv, plots, index.html), printing a
/// line as each finishes.
inline std::vector<Outcome> run_variants(const std::vector<Variant>& variants, const std::string& out,
                                         const AfterRun& after = {})
{
    std::vector<Outcome> done;
    for (std::size_t i = 0; i < variants.size(); ++i) {
        const Variant& v = variants[i];
        Outcome o{.variant = v, .dir = out + "/" + v.name, .summary = {}, .cpu = 0};
        std::printf("[%zu/%zu] %-28s ", i + 1, variants.size(), v.label.c_str());
        std::fflush(stdout);
        const double cpu0 = cpu_seconds();
        train::Seq2SeqTrainer trainer(v.config);
        o.summary = train::run(trainer, {.out_dir = o.dir, .config_json = config_json(v.config).dump(2), .quiet = true});
        o.cpu = cpu_seconds() - cpu0;
        std::printf("%5lld steps, %6.1fs wall, %6.1fs CPU: held-out exact match %5.1f%%\n",
                    static_cast<long long>(trainer.steps_done()), o.summary.seconds, o.cpu, 100 * o.summary.last.exact);
        if (after) after(trainer, o);
        done.push_back(std::move(o));
    }
    return done;
}

/// One metrics.csv column of a variant against its step (NaN where the row leaves it empty).
inline train::Series column_series(const Outcome& o, const std::string& column)
{
    const std::string csv = o.dir + "/metrics.csv";
    return {o.variant.label, train::read_csv_column(csv, "step"), train::read_csv_column(csv, column)};
}

/// An exponential moving average (NaN entries are carried over): per-step losses are noisy.
inline std::vector<double> smoothed(const std::vector<double>& y, double alpha = 0.05)
{
    std::vector<double> s(y.size());
    double m = NAN;
    for (std::size_t i = 0; i < y.size(); ++i) {
        if (std::isfinite(y[i])) m = std::isfinite(m) ? m + alpha * (y[i] - m) : y[i];
        s[i] = m;
    }
    return s;
}

/// The first evaluation at which held-out exact match reached `level` (-1: never).
inline std::int64_t steps_to(const train::RunSummary& s, double level)
{
    for (const auto& e : s.evals)
        if (e.exact >= level) return e.step;
    return -1;
}

/// "wall 1m23s, CPU 2m01s" since start (wall) and of the whole process (CPU).
inline std::string time_line(std::chrono::steady_clock::time_point start)
{
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return "wall " + train::format_duration(wall) + ", CPU " + train::format_duration(cpu_seconds());
}

/// Writes plot to path and says where (or that gnuplot is missing).
inline void save_plot(const std::string& path, const train::LinePlot& plot)
{
    if (train::plot_lines(path, plot)) std::printf("plot: %s\n", path.c_str());
    else std::printf("plot: %s not written (gnuplot missing)\n", path.c_str());
}

/// One metrics.csv column of every variant on one chart (x: step).
struct ColumnPlot {
    std::string title, ylabel, column;
    bool smooth = false;  ///< moving average (per-step values are noisy)
    bool logy = false, points = false;
};

inline void plot_column(const std::string& path, const std::vector<Outcome>& runs, const ColumnPlot& c)
{
    train::LinePlot p{.title = c.title, .xlabel = "step", .ylabel = c.ylabel, .series = {}, .logy = c.logy,
                      .points = c.points};
    for (const auto& r : runs) {
        auto s = column_series(r, c.column);
        if (c.smooth) s.y = smoothed(s.y, 0.1);
        p.series.push_back(std::move(s));
    }
    save_plot(path, p);
}

}  // namespace tutorial
