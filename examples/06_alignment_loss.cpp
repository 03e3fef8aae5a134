// Tutorial 06 — supervised attention: where the task knows which source character each
// target character is read from, −Σ log A[t, a(t)] on the decoder's cross-attention is a
// loss (the article's "dot-product attention loss" made into a real one). The same model
// trained with cross-entropy alone and with CE + λ · alignment loss: how fast each reaches
// held-out exact match, how often its attention points at the gold source position, and a
// heatmap of each one's attention.
//
// Run: build/examples/06_alignment_loss   (docs/tutorials/06_alignment_loss.md)
// Writes runs/06_alignment_loss/: accuracy.png, attention_<variant>.png and one run
// directory per variant (metrics.csv, plots, index.html).
#include <chrono>
#include <map>

#include "tutorial_util.hpp"

using namespace spool;
using tutorial::format;
using tutorial::percent;

namespace {

/// Share of aligned target positions whose cross-attention (last decoder layer, heads
/// averaged) peaks at the gold source position, over the first n held-out pairs.
double alignment_agreement(train::Seq2SeqTrainer& t, std::size_t n)
{
    double hit = 0, total = 0;
    for (std::size_t i = 0; i < n && i < t.heldout().size(); ++i) {
        const train::Example& e = t.heldout()[i];
        const auto map = t.attention_map(e);  // row k: the query that predicts target character k
        for (std::size_t k = 0; k < e.align.size() && k < map.size(); ++k) {
            if (e.align[k] < 0) continue;
            const auto peak = std::max_element(map[k].begin(), map[k].end()) - map[k].begin();
            hit += peak == e.align[k];
            total += 1;
        }
    }
    return total > 0 ? hit / total : NAN;
}

}  // namespace

int main(int argc, char** argv)
{
    const auto start = std::chrono::steady_clock::now();
    tutorial::Common common{.out = "runs/06_alignment_loss"};
    train::Seq2SeqConfig c = tutorial::base_config();
    c.steps = 1000; c.lr = 2e-3;
    c.eval_every = 50; c.eval_size = 256; c.show = 0;
    double lambda = 1.0;
    std::vector<double> levels = {0.5, 0.9};

    CLI::App app{"spool tutorial 06: cross-entropy alone vs CE + λ · attention-alignment loss"};
    app.option_defaults()->always_capture_default();
    tutorial::add_config_options(app, c);
    app.add_option("--lambda", lambda, "weight λ of the alignment loss in the second run")->check(CLI::PositiveNumber);
    tutorial::add_common_options(app, common);
    CLI11_PARSE(app, argc, argv);
    tutorial::apply_common(common, c);

    train::Seq2SeqConfig plain = c, aligned = c;
    plain.align_weight = 0;         // loss = CE
    aligned.align_weight = lambda;  // loss = CE + λ · (−mean log A[t, a(t)]), last decoder layer, heads averaged
    std::printf("tutorial 06: task '%s', d_model %lld, %lld+%lld layers, %lld steps of %lld, Adam + Noam to %g, "
                "label smoothing 0.1, %d threads\n\n",
                c.task.c_str(), static_cast<long long>(c.d_model), static_cast<long long>(c.num_layers),
                static_cast<long long>(c.num_layers), static_cast<long long>(c.steps),
                static_cast<long long>(c.batch_size), c.lr, get_num_threads());

    // after each run: its attention agreement and a heatmap of one held-out pair
    std::map<std::string, double> agreement;
    const std::size_t n_agree = common.smoke ? 4 : 128;
    auto after = [&](train::Seq2SeqTrainer& t, tutorial::Outcome& o) {
        agreement[o.variant.name] = alignment_agreement(t, n_agree);
        const train::Example& e = t.heldout().front();
        std::vector<std::string> xt, yt;
        for (char ch : e.src) xt.emplace_back(1, ch);
        for (char ch : e.tgt) yt.emplace_back(1, ch);
        yt.emplace_back("</s>");  // row t predicts tgt_out[t]: the target's characters, then EOS
        const std::string path = common.out + "/attention_" + o.variant.name + ".png";
        const bool drawn = train::plot_heatmap(
            path, {.title = o.variant.label + ": '" + e.src + "' -> '" + e.tgt + "'",
                   .xlabel = "source", .ylabel = "predicting", .values = t.attention_map(e), .xtics = xt, .ytics = yt,
                   .width = 560, .height = 480});
        if (!drawn) std::printf("(no heatmap: gnuplot missing) ");
    };
    const auto runs = tutorial::run_variants(
        {{"ce", "cross-entropy", plain}, {"ce_align", format("CE + %g · alignment", lambda), aligned}}, common.out, after);

    // ---- the table ------------------------------------------------------------------------
    const std::int64_t early = std::max<std::int64_t>(c.steps / 4, 1), mid = std::max<std::int64_t>(c.steps / 2, 1);
    tutorial::Table table{{"loss"}, {}};
    for (double level : levels) table.header.push_back(format("steps to %.0f%%", 100 * level));
    for (auto s : {early, mid, c.steps}) table.header.push_back(format("exact @%lld", static_cast<long long>(s)));
    table.header.insert(table.header.end(), {"token acc", "NLL", "attention on gold"});
    for (const auto& r : runs) {
        std::vector<std::string> row = {r.variant.label};
        for (double level : levels) {
            const auto s = tutorial::steps_to(r.summary, level);
            row.push_back(s < 0 ? "never" : format("%lld", static_cast<long long>(s)));
        }
        for (auto step : {early, mid, c.steps}) {
            double at = NAN;
            for (const auto& e : r.summary.evals)
                if (e.step <= step) at = e.exact;
            row.push_back(percent(at));
        }
        row.insert(row.end(), {format("%.2f%%", 100 * r.summary.last.token_acc), format("%.4f", r.summary.last.nll),
                               percent(agreement[r.variant.name])});
        table.rows.push_back(std::move(row));
    }
    std::printf("\nheld-out (evaluated every %lld steps; attention on gold: share of target characters whose "
                "attention peaks at the aligned source character, %zu pairs):\n",
                static_cast<long long>(c.eval_every), n_agree);
    table.print();

    std::printf("\n");
    const std::string& out = common.out;
    tutorial::plot_column(out + "/accuracy.png", runs, {.title = "Held-out exact match (greedy decode)",
                                                        .ylabel = "exact match", .column = "eval_exact", .points = true});
    tutorial::plot_column(out + "/loss.png", runs, {.title = "Training cross-entropy (moving average; without the "
                                                             "alignment term)",
                                                    .ylabel = "loss", .column = "loss", .smooth = true, .logy = true});
    for (const auto& r : runs) std::printf("heatmap: %s/attention_%s.png\n", out.c_str(), r.variant.name.c_str());
    std::printf("%s\n", tutorial::time_line(start).c_str());
    return 0;
}
