// A whole seq2seq run (train/seq2seq.hpp: run, write_run_report): the loop with progress
// line, metrics.csv, evaluations, checkpoints, and the report page at the end.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "io/checkpoint.hpp"
#include "tensor/errors.hpp"
#include "train/plot.hpp"
#include "train/progress.hpp"
#include "train/report.hpp"
#include "train/seq2seq.hpp"

namespace spool::train {
namespace {

std::string percent(double v)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f%%", 100 * v);
    return buf;
}

std::string fixed(double v, int digits)
{
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

// Resuming into a run directory: keep the metrics rows up to the resumed step, drop the
// rows of steps that will be run again.
void truncate_metrics(const std::string& path, std::int64_t step)
{
    std::ifstream in(path);
    if (!in) return;
    std::string header, line, kept;
    std::getline(in, header);
    while (std::getline(in, line))
        if (std::strtoll(line.c_str(), nullptr, 10) <= step) kept += line + "\n";
    in.close();
    std::ofstream out(path, std::ios::trunc);
    out << header << "\n" << kept;
}

}  // namespace

std::string checkpoint_dir(const std::string& out_dir) { return out_dir + "/checkpoints"; }

RunSummary run(Seq2SeqTrainer& trainer, const RunOptions& o)
{
    SPOOL_CHECK(!o.out_dir.empty(), ValueError, "train::run: out_dir is empty");
    const DataParallel& dp = trainer.data_parallel();
    const bool primary = dp.rank == 0;  // data-parallel: rank 0 alone prints, evaluates and writes
    if (primary) {
        std::filesystem::create_directories(o.out_dir);
        std::ofstream f(o.out_dir + "/config.json");
        f << o.config_json << "\n";
        SPOOL_CHECK(f.good(), IoError, "train::run: cannot write '", o.out_dir, "/config.json'");
    }
    const auto& c = trainer.config();
    const std::string metrics = o.out_dir + "/metrics.csv";
    const bool quiet = o.quiet || !primary;
    std::FILE* out = quiet ? nullptr : stdout;
    Progress progress({.total_steps = c.steps, .live = !quiet && stdout_is_terminal(), .out = out});
    auto say = [&](const std::string& line) { progress.message(line); };  // quiet: prints nothing
    auto save = [&] {
        if (!primary) return;
        const std::string path =
            io::save_checkpoint_in(checkpoint_dir(o.out_dir), trainer.model(), &trainer.optimizer(), &trainer.schedule(),
                                   {.step = trainer.steps_done(), .epoch = trainer.epoch(), .user = o.config_json},
                                   {.keep_last = 3});
        say("checkpoint: " + path);
    };
    bool resumed = false;
    if (!o.resume.empty()) {
        // a directory resumes from its newest checkpoint (a run directory: from its checkpoints/)
        std::string path = o.resume;
        if (std::filesystem::is_directory(path)) {
            auto latest = io::latest_checkpoint(path);
            if (!latest) latest = io::latest_checkpoint(checkpoint_dir(path));
            SPOOL_CHECK(latest, IoError, "train::run: no checkpoint (ckpt-<step>.safetensors) in '", path, "'");
            path = *latest;
        }
        const io::TrainingState st =
            io::load_checkpoint(path, trainer.model(), &trainer.optimizer(), &trainer.schedule());
        trainer.set_steps_done(st.step);
        trainer.split_rng_by_rank();  // the file holds rank 0's generator state
        if (primary) truncate_metrics(metrics, st.step);
        resumed = true;
        say("resumed from " + path + " at step " + std::to_string(st.step));
    }
    // every rank has read the checkpoint before rank 0 writes the next one (keep_last deletes old ones)
    if (dp.world > 1) dp.barrier();
    std::optional<CsvWriter> csv_file;
    if (primary)
        csv_file.emplace(metrics,
                         std::vector<std::string>{"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "eval_nll",
                                                  "eval_token_acc", "eval_exact", "eval_ece"},
                         resumed && std::filesystem::exists(metrics));
    CsvWriter* csv = csv_file ? &*csv_file : nullptr;
    auto put = [&](const char* column, double v) {
        if (csv) csv->set(column, v);
    };
    RunSummary sum;
    while (trainer.steps_done() < c.steps) {
        const StepRecord r = trainer.step();
        progress.update(r.step, r.epoch, r.loss, r.lr, r.tokens);  // quiet runs still measure tokens/s
        put("step", static_cast<double>(r.step));
        put("epoch", static_cast<double>(r.epoch));
        put("loss", r.loss);
        put("lr", r.lr);
        put("grad_norm", r.grad_norm);
        put("tokens_per_s", progress.tokens_per_second());
        if (r.skipped) {
            ++sum.skipped_steps;
            say("step " + std::to_string(r.step) + ": " + trainer.optimizer().last_skip()->message);
        }
        if (!std::isfinite(r.loss)) sum.diverged = true;
        if (primary && (r.step % c.eval_every == 0 || r.step == c.steps)) {
            EvalResult e = trainer.evaluate();
            put("eval_nll", e.nll);
            put("eval_token_acc", e.token_acc);
            put("eval_exact", e.exact);
            put("eval_ece", e.ece);
            char buf[256];
            std::snprintf(buf, sizeof buf,
                          "eval @ step %lld: held-out exact match %.1f%%, token accuracy %.2f%%, NLL %.4f, ECE %.4f",
                          static_cast<long long>(r.step), 100 * e.exact, 100 * e.token_acc, e.nll, e.ece);
            say(buf);
            for (const auto& s : e.samples)
                say("    " + s.src + "  ->  greedy '" + s.greedy + "'  beam '" + s.beam + "'  (ref '" + s.ref + "')" +
                    (s.greedy == s.ref ? "" : "  (wrong)"));
            if (sum.reached_seconds < 0 && e.exact >= o.target) {
                sum.reached_seconds = progress.elapsed_seconds();
                sum.reached_step = r.step;
            }
            sum.last = e;
            e.samples.clear();
            sum.evals.push_back(std::move(e));
        }
        if (csv) csv->commit();
        if (o.save_every > 0 && r.step % o.save_every == 0 && r.step != c.steps) save();
    }
    save();
    progress.finish();
    sum.seconds = progress.elapsed_seconds();
    if (primary) write_run_report(o.out_dir, o.config_json, trainer, sum, o.plots);
    if (dp.world > 1) dp.barrier();  // the files are complete when run() returns on any rank
    return sum;
}

void write_run_report(const std::string& dir, const std::string& config_json, Seq2SeqTrainer& trainer,
                      const RunSummary& sum, bool plots)
{
    const auto& c = trainer.config();
    const std::string csv = dir + "/metrics.csv";
    auto col = [&](const char* name) { return read_csv_column(csv, name); };
    const auto step = col("step");
    if (plots && gnuplot_available()) {
        plot_lines(dir + "/loss.png", {.title = "Loss", .xlabel = "step", .ylabel = "loss",
                                       .series = {{"training loss: " + token_loss_spec(c.loss, c.loss_args), step, col("loss")},
                                                  {"held-out NLL", step, col("eval_nll")}},
                                       .logy = true});
        plot_lines(dir + "/lr.png",
                   {.title = "Learning rate", .xlabel = "step", .ylabel = "lr", .series = {{c.schedule, step, col("lr")}}});
        plot_lines(dir + "/accuracy.png", {.title = "Held-out accuracy", .xlabel = "step", .ylabel = "accuracy",
                                           .series = {{"token accuracy (teacher forced)", step, col("eval_token_acc")},
                                                      {"exact match (greedy decode)", step, col("eval_exact")}},
                                           .points = true, .key = "bottom right"});
        const Example& e = trainer.heldout().front();
        std::vector<std::string> xt, yt = {"<s>"};
        for (char ch : e.src) xt.emplace_back(1, ch);
        for (char ch : e.tgt) yt.emplace_back(1, ch);
        // row t is the decoder query that reads tgt_in[t] (BOS, y1, …) and predicts tgt_out[t]
        plot_heatmap(dir + "/attention.png",
                     {.title = "Cross-attention, last decoder layer (heads averaged): '" + e.src + "' -> '" + e.tgt + "'",
                      .xlabel = "source", .ylabel = "decoder input", .values = trainer.attention_map(e), .xtics = xt,
                      .ytics = yt});
    }
    const EvalResult& last = sum.last;
    HtmlReport page("spool: train_seq2seq on '" + c.task + "'");
    page.paragraph("Held-out exact match " + percent(last.exact) + ", token accuracy " + percent(last.token_acc) +
                   ", NLL " + fixed(last.nll, 4) + ", ECE " + fixed(last.ece, 4) + " after " +
                   std::to_string(trainer.steps_done()) + " steps in " + format_duration(sum.seconds) + "." +
                   (sum.reached_seconds >= 0 ? " Exact match first reached its target at step " +
                                                   std::to_string(sum.reached_step) + " (" +
                                                   format_duration(sum.reached_seconds) + ")."
                                             : ""));
    page.heading("Curves");
    page.image(dir, "loss.png", "training loss and held-out NLL");
    page.image(dir, "accuracy.png", "held-out token accuracy and exact match");
    page.image(dir, "lr.png", "learning rate per step");
    page.heading("Attention");
    page.image(dir, "attention.png", "cross-attention of one held-out example");
    page.heading("Sample decodes (held-out)");
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : last.samples) rows.push_back({s.src, s.ref, s.greedy, s.beam});
    page.table({"source", "reference", "greedy", "beam"}, rows);
    page.heading("Evaluations");
    std::vector<std::vector<std::string>> evals;  // from metrics.csv: includes the steps before a resume
    const auto exact = col("eval_exact"), acc = col("eval_token_acc"), nll = col("eval_nll"), ece = col("eval_ece");
    for (std::size_t i = 0; i < step.size(); ++i)
        if (!std::isnan(exact[i]))
            evals.push_back({std::to_string(static_cast<std::int64_t>(step[i])), percent(exact[i]), percent(acc[i]),
                             fixed(nll[i], 4), fixed(ece[i], 4)});
    page.table({"step", "exact match", "token accuracy", "NLL", "ECE"}, evals);
    page.heading("Configuration");
    page.preformatted(config_json);
    page.heading("Data");
    page.link(dir, "metrics.csv", "metrics.csv: every step's loss, lr, gradient norm; the evaluations");
    page.link(dir, "config.json", "config.json: the options of this run");
    if (auto latest = io::latest_checkpoint(checkpoint_dir(dir)))
        page.link(dir, "checkpoints/" + std::filesystem::path(*latest).filename().string(),
                  "the last checkpoint (model, optimizer, schedule, RNG, step): resume with --resume " + dir);
    page.write(dir + "/index.html");
}

}  // namespace spool::train
