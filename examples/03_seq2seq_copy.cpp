// Tutorial 03 — a sequence-to-sequence Transformer on the Annotated Transformer's toy task:
// copy (or reverse) a string of digits. Shows what one batch looks like (BOS/EOS/PAD, the
// shifted target, the padding masks), trains the model at a few peak learning rates with
// Noam warmup (the small-model learning-rate recipe, measured), and decodes held-out strings
// greedily and with beam search.
//
// Run: build/examples/03_seq2seq_copy   (docs/tutorials/03_seq2seq_copy.md)
// Writes runs/03_seq2seq_copy/: accuracy.png, loss.png, lr.png and one run directory per
// learning rate (metrics.csv, plots, attention heatmap, index.html).
#include <chrono>
#include <map>

#include "nn/decoding.hpp"
#include "tutorial_util.hpp"

using namespace spool;
using tutorial::format;
using tutorial::percent;

namespace {

// ---- 1. one batch, printed ----------------------------------------------------------------

std::string row_of(const Tensor& t, std::int64_t n, const train::CharVocab& vocab, bool ids)
{
    std::string s;
    const auto values = t.tolist();
    const std::int64_t L = t.size(1);
    for (std::int64_t j = 0; j < L; ++j) {
        const auto v = static_cast<std::int64_t>(values[static_cast<std::size_t>(n * L + j)]);
        s += (j ? " " : "") + (ids ? format("%2lld", static_cast<long long>(v)) : format("%5s", vocab.symbol(v).c_str()));
    }
    return s;
}

void show_batch(const train::Task& task)
{
    const auto& vocab = task.vocab();
    const std::vector<train::Example> pairs = {{"4711", task.name() == "reverse" ? "1174" : "4711", {}},
                                               {"90210", task.name() == "reverse" ? "01209" : "90210", {}}};
    const train::Batch b = train::make_batch(pairs, vocab);
    std::printf("one batch of two pairs, batch-first [N, S] / [N, T] (PAD %lld, BOS %lld, EOS %lld):\n",
                static_cast<long long>(train::CharVocab::pad), static_cast<long long>(train::CharVocab::bos),
                static_cast<long long>(train::CharVocab::eos));
    for (std::int64_t n = 0; n < 2; ++n) {
        std::printf("  pair %lld: '%s' -> '%s'\n", static_cast<long long>(n), pairs[n].src.c_str(), pairs[n].tgt.c_str());
        std::printf("    src      %s\n", row_of(b.src, n, vocab, false).c_str());
        std::printf("    src_pad  %s\n", row_of(b.src_pad, n, vocab, true).c_str());
        std::printf("    tgt_in   %s   (decoder input: BOS + y)\n", row_of(b.tgt_in, n, vocab, false).c_str());
        std::printf("    tgt_out  %s   (what each position predicts: y + EOS)\n", row_of(b.tgt_out, n, vocab, false).c_str());
        std::printf("    tgt_pad  %s\n", row_of(b.tgt_pad, n, vocab, true).c_str());
    }
    std::printf("\n");
}

// ---- 3. decoding ------------------------------------------------------------------------------

/// Exact match of greedy and beam-search decodes over the first n held-out pairs.
std::pair<double, double> decode_exact(train::Seq2SeqTrainer& trainer, std::size_t n, std::int64_t beam)
{
    auto& model = trainer.model();
    model.eval();
    const auto& vocab = trainer.task().vocab();
    std::vector<train::Example> part(trainer.heldout().begin(),
                                     trainer.heldout().begin() + static_cast<std::ptrdiff_t>(std::min(n, trainer.heldout().size())));
    const train::Batch b = train::make_batch(part, vocab);
    nn::GenerationOptions g{.max_new_tokens = b.tgt_out.size(1) + 2, .bos_id = train::CharVocab::bos,
                            .eos_id = train::CharVocab::eos, .pad_id = train::CharVocab::pad};
    const Tensor greedy = nn::greedy_decode(model, b.src, b.src_pad, g);
    g.beam_width = beam;
    const Tensor beamed = nn::beam_search(model, b.src, b.src_pad, g);
    double hit_g = 0, hit_b = 0;
    for (std::size_t i = 0; i < part.size(); ++i) {
        const auto k = static_cast<std::int64_t>(i);
        hit_g += vocab.decode(greedy.data<std::int64_t>() + k * greedy.size(1), greedy.size(1)) == part[i].tgt;
        hit_b += vocab.decode(beamed.data<std::int64_t>() + k * beamed.size(1), beamed.size(1)) == part[i].tgt;
    }
    model.train();
    return {hit_g / static_cast<double>(part.size()), hit_b / static_cast<double>(part.size())};
}

}  // namespace

int main(int argc, char** argv)
{
    const auto start = std::chrono::steady_clock::now();
    tutorial::Common common{.out = "runs/03_seq2seq_copy"};
    train::Seq2SeqConfig c = tutorial::base_config();
    c.steps = 1000;
    c.eval_every = 100; c.eval_size = 256; c.show = 4; c.beam = 4;
    // peak rates: the textbook Noam factor 1 (d_model^-0.5 · warmup^-0.5), and two smaller
    std::vector<double> peaks = {optim::noam_rate(200, 64, 200), 3e-3, 1e-3};

    CLI::App app{"spool tutorial 03: a seq2seq Transformer copies / reverses digit strings"};
    app.option_defaults()->always_capture_default();
    tutorial::add_config_options(app, c);
    app.add_option("--peaks", peaks, "peak learning rates to compare (Noam warmup to each)")->expected(1, 8);
    app.add_option("--beam", c.beam, "beam width");
    tutorial::add_common_options(app, common);
    CLI11_PARSE(app, argc, argv);
    tutorial::apply_common(common, c);
    if (common.smoke) peaks.resize(1);

    std::printf("tutorial 03: task '%s', d_model %lld, %lld+%lld layers, %lld heads, %lld steps of %lld, Adam + Noam "
                "(warmup %lld), label smoothing 0.1, %d threads\n\n",
                c.task.c_str(), static_cast<long long>(c.d_model), static_cast<long long>(c.num_layers),
                static_cast<long long>(c.num_layers), static_cast<long long>(c.nhead), static_cast<long long>(c.steps),
                static_cast<long long>(c.batch_size), static_cast<long long>(c.warmup), get_num_threads());
    const auto task = train::make_task(c.task);
    show_batch(*task);

    // ---- 2. the learning-rate recipe: one run per peak ---------------------------------------
    std::vector<tutorial::Variant> variants;
    for (double peak : peaks) {
        train::Seq2SeqConfig v = c;
        v.lr = peak;
        variants.push_back({format("lr_%g", peak), format("peak lr %.4g", peak), v});
    }
    std::map<std::string, std::pair<double, double>> decoded;  // greedy, beam exact match per variant
    const std::size_t n_decode = common.smoke ? 8 : 256;
    const auto runs = tutorial::run_variants(variants, common.out, [&](train::Seq2SeqTrainer& t, tutorial::Outcome& o) {
        decoded[o.variant.name] = decode_exact(t, n_decode, c.beam);
    });

    tutorial::Table table{{"peak lr", "Noam factor", format("exact @%lld", static_cast<long long>(c.steps / 2)),
                           format("exact @%lld", static_cast<long long>(c.steps)), "token acc", "NLL",
                           format("greedy (%zu)", n_decode), format("beam %lld", static_cast<long long>(c.beam)),
                           "first ≥ 90%"},
                          {}};
    const double factor1 = optim::noam_rate(c.warmup, c.d_model, c.warmup);  // the peak of factor 1
    for (const auto& r : runs) {
        const auto& s = r.summary;
        double half = NAN;
        for (const auto& e : s.evals)
            if (e.step <= c.steps / 2) half = e.exact;
        const auto reached = tutorial::steps_to(s, 0.9);
        const auto [g, bm] = decoded[r.variant.name];
        table.rows.push_back({format("%.4g", r.variant.config.lr), format("%.2f", r.variant.config.lr / factor1),
                              percent(half), percent(s.last.exact), format("%.2f%%", 100 * s.last.token_acc),
                              format("%.4f", s.last.nll), percent(g), percent(bm),
                              reached < 0 ? "never" : format("step %lld", static_cast<long long>(reached))});
    }
    std::printf("\nheld-out (digit strings never seen in training):\n");
    table.print();

    // the best run's sample decodes, greedy and beam, beside the reference
    const auto best = std::max_element(runs.begin(), runs.end(), [](const auto& a, const auto& b) {
        return a.summary.last.exact < b.summary.last.exact;
    });
    std::printf("\nsample decodes, %s:\n", best->variant.label.c_str());
    for (const auto& s : best->summary.last.samples)
        std::printf("  %-14s -> greedy %-14s beam %-14s (reference %s)\n", s.src.c_str(), s.greedy.c_str(),
                    s.beam.c_str(), s.ref.c_str());

    // ---- plots ----------------------------------------------------------------------------------
    std::printf("\n");
    const std::string& out = common.out;
    tutorial::plot_column(out + "/accuracy.png", runs, {.title = "Held-out exact match (greedy decode) by peak learning rate",
                                                        .ylabel = "exact match", .column = "eval_exact", .points = true});
    tutorial::plot_column(out + "/loss.png", runs, {.title = "Training loss (label-smoothed CE, moving average)",
                                                    .ylabel = "loss", .column = "loss", .smooth = true, .logy = true});
    tutorial::plot_column(out + "/lr.png", runs, {.title = "Noam schedule to each peak", .ylabel = "lr", .column = "lr"});
    std::printf("attention heatmap of the best run: %s/attention.png\n", best->dir.c_str());
    std::printf("%s\n", tutorial::time_line(start).c_str());
    return 0;
}
