// Tutorial 07 — a character-level language model on a text every Debian machine has.
//
// A decoder-only nn::TransformerLM learns to predict the next character of a licence from
// /usr/share/common-licenses (GPL-3 by default, --text for another file). The first 90%
// of the text trains, the last 10% is held out; both losses are reported in bits per
// character. Then the model writes: greedy (nn::generate) and sampled with a temperature
// and top-k, implemented here on the logits of model.step() with a KV cache.
//
// Run: build/examples/07_char_lm        (docs/tutorials/07_char_lm.md walks through it)
// Letters: N batch, T context (characters per window), V vocabulary (distinct characters).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <xtensor/xsort.hpp>

#include "autograd/xtensor.hpp"
#include "spool.hpp"
#include "train/plot.hpp"
#include "train/progress.hpp"

using namespace spool;
namespace fs = std::filesystem;

namespace {

const double ln2 = std::log(2.0);

// ---- the text as ids ------------------------------------------------------------------

struct Corpus {
    std::string chars;                 ///< id -> character, sorted
    std::vector<int> id_of;            ///< character (as unsigned char) -> id, −1 if absent
    std::vector<std::int64_t> train, heldout;
};

Corpus load_corpus(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f) throw IoError("07_char_lm: cannot read the text '" + path + "'" +
                          (fs::exists(path) ? "" : " (no such file; Debian ships the licences in "
                                                   "/usr/share/common-licenses, or pass --text PATH)"));
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    if (text.size() < 1000)
        throw ValueError("07_char_lm: the text '" + path + "' is too short to train on; got " +
                         std::to_string(text.size()) + " bytes, need at least 1000");
    Corpus c;
    c.id_of.assign(256, -1);
    for (unsigned char ch : text) c.id_of[ch] = 0;
    for (int ch = 0; ch < 256; ++ch)
        if (c.id_of[ch] == 0) {
            c.id_of[ch] = static_cast<int>(c.chars.size());
            c.chars.push_back(static_cast<char>(ch));
        }
    // the last 10% is held out: text the model never trains on
    const std::size_t cut = text.size() * 9 / 10;
    for (std::size_t i = 0; i < text.size(); ++i)
        (i < cut ? c.train : c.heldout).push_back(c.id_of[static_cast<unsigned char>(text[i])]);
    return c;
}

std::string decode(const Corpus& c, const std::vector<std::int64_t>& ids)
{
    std::string s;
    for (auto i : ids) s += c.chars[static_cast<std::size_t>(i)];
    return s;
}

// ---- batches and evaluation ---------------------------------------------------------------

/// N random windows of the training text: inputs [N, T] and next-character targets [N, T].
std::pair<Tensor, Tensor> random_batch(const std::vector<std::int64_t>& ids, std::int64_t N, std::int64_t T,
                                       std::mt19937_64& rng)
{
    std::uniform_int_distribution<std::size_t> start(0, ids.size() - static_cast<std::size_t>(T) - 1);
    std::vector<std::int64_t> x, y;
    for (std::int64_t n = 0; n < N; ++n) {
        const auto s = start(rng);
        x.insert(x.end(), ids.begin() + s, ids.begin() + s + T);
        y.insert(y.end(), ids.begin() + s + 1, ids.begin() + s + T + 1);
    }
    return {from_vector(x, {N, T}), from_vector(y, {N, T})};
}

/// Bits per character over every character of ids but the first. Windows of T advance by
/// T/2 and each scores only the targets no earlier window scored, so every prediction
/// after the first window sees at least T/2 characters of context.
double bits_per_char(const nn::TransformerLM& model, const std::vector<std::int64_t>& ids, std::int64_t T,
                     std::int64_t max_windows = 0)
{
    const auto n = static_cast<std::int64_t>(ids.size());
    T = std::min(T, n - 1);
    std::vector<std::int64_t> starts;
    for (std::int64_t s = 0; s + T + 1 <= n; s += T / 2) starts.push_back(s);
    if (starts.back() + T + 1 < n) starts.push_back(n - T - 1);  // a last window ending at the text's end
    if (max_windows > 0 && static_cast<std::int64_t>(starts.size()) > max_windows) {
        // a probe: max_windows windows spread evenly over the text (each scores all its targets)
        std::vector<std::int64_t> spread;
        for (std::int64_t k = 0; k < max_windows; ++k) spread.push_back(starts[k * starts.size() / max_windows]);
        starts = spread;
    }

    double nats = 0;
    std::int64_t counted = 0, scored_upto = 0;  // targets at positions <= scored_upto are done
    const std::int64_t B = 32;
    for (std::size_t b = 0; b < starts.size(); b += B) {
        const auto nb = static_cast<std::int64_t>(std::min<std::size_t>(B, starts.size() - b));
        std::vector<std::int64_t> x, y;
        for (std::int64_t k = 0; k < nb; ++k) {
            const auto s = starts[b + k];
            for (std::int64_t j = 0; j < T; ++j) {
                x.push_back(ids[s + j]);
                const bool fresh = s + j + 1 > scored_upto;
                y.push_back(fresh ? ids[s + j + 1] : -100);  // −100: cross_entropy's ignore_index
                counted += fresh;
            }
            scored_upto = s + T;
        }
        Tensor logits = model(from_vector(x, {nb, T}));
        Tensor loss = cross_entropy(reshape(logits, {nb * T, -1}), from_vector(y, {nb * T}),
                                    {.reduction = Reduction::sum});
        nats += loss.item();
    }
    return nats / static_cast<double>(counted) / ln2;
}

/// Cross-entropy of a character-frequency model (counts of the training text, add-one
/// smoothed) on ids, in bits: what a model that ignores context can reach.
double unigram_bits(const Corpus& c, const std::vector<std::int64_t>& ids)
{
    std::vector<double> count(c.chars.size(), 1.0);
    for (auto i : c.train) count[static_cast<std::size_t>(i)] += 1;
    double total = 0;
    for (double k : count) total += k;
    double bits = 0;
    for (auto i : ids) bits -= std::log2(count[static_cast<std::size_t>(i)] / total);
    return bits / static_cast<double>(ids.size());
}

/// The share of the letters in ids that are capitals.
double capital_share(const Corpus& c, const std::vector<std::int64_t>& ids)
{
    double upper = 0, letters = 0;
    for (auto i : ids) {
        const auto ch = static_cast<unsigned char>(c.chars[static_cast<std::size_t>(i)]);
        upper += std::isupper(ch) != 0;
        letters += std::isalpha(ch) != 0;
    }
    return letters > 0 ? upper / letters : 0;
}

// ---- sampling ---------------------------------------------------------------------------

/// One id drawn from softmax(logits / temperature) restricted to the top_k largest logits
/// (top_k 0: all). logits [1, V]. temperature 0 takes the argmax.
std::int64_t sample_next(const Tensor& logits, double temperature, std::int64_t top_k, std::mt19937_64& rng)
{
    if (temperature <= 0) return static_cast<std::int64_t>(argmax(logits, -1).item());
    Tensor z = logits / temperature;
    const std::int64_t V = z.size(-1);
    if (top_k > 0 && top_k < V) {
        // keep the k largest: everything below the k-th largest logit gets −inf
        auto v = z.tolist();
        std::nth_element(v.begin(), v.begin() + (top_k - 1), v.end(), std::greater<>());
        const double kth = v[static_cast<std::size_t>(top_k - 1)];
        std::vector<bool> drop;
        for (double zi : z.tolist()) drop.push_back(zi < kth);
        z = masked_fill(z, from_vector(drop, z.shape()), -std::numeric_limits<double>::infinity());
    }
    const auto p = softmax(z, -1).tolist();
    double u = std::uniform_real_distribution<double>(0, 1)(rng), acc = 0;
    for (std::int64_t i = 0; i < V; ++i) {
        acc += p[static_cast<std::size_t>(i)];
        if (u < acc) return i;
    }
    return V - 1;  // u within rounding of 1
}

/// Continue prompt by n characters. Each new character costs one model.step over the KV
/// cache. The model knows positions 0..T−1 only, so when the cache is full it restarts
/// from the last T/2 characters (one step over them refills the cache).
std::vector<std::int64_t> sample(const nn::TransformerLM& model, std::vector<std::int64_t> prompt, std::int64_t n,
                                 std::int64_t T, double temperature, std::int64_t top_k, std::mt19937_64& rng)
{
    auto ids_tensor = [](const std::vector<std::int64_t>& v, std::size_t from) {
        std::vector<std::int64_t> part(v.begin() + static_cast<std::ptrdiff_t>(from), v.end());
        return from_vector(part, {1, static_cast<std::int64_t>(part.size())});  // [N = 1, len]
    };
    std::vector<std::int64_t> text = prompt;
    std::vector<nn::KVCache> caches;
    std::size_t from = text.size() > static_cast<std::size_t>(T) ? text.size() - T : 0;
    Tensor logits = model.step(ids_tensor(text, from), caches, 0);
    std::int64_t position = static_cast<std::int64_t>(text.size() - from);
    std::vector<std::int64_t> out;
    for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t next = sample_next(logits, temperature, top_k, rng);
        text.push_back(next);
        out.push_back(next);
        if (position == T) {  // cache full: re-read the last T/2 characters
            caches.clear();
            logits = model.step(ids_tensor(text, text.size() - T / 2), caches, 0);
            position = T / 2;
        } else {
            logits = model.step(from_vector(std::vector<std::int64_t>{next}, {1, 1}), caches, position);
            ++position;
        }
    }
    return out;
}

std::string printable(const std::string& s)
{
    std::string o;
    for (char ch : s) o += ch == '\n' ? std::string("\n    ") : std::string(1, ch);
    return o;
}

}  // namespace

int main(int argc, char** argv)
{
    std::string text = "/usr/share/common-licenses/GPL-3", out = "runs/07_char_lm", prompt = "You may ";
    std::int64_t T = 128, N = 16, d_model = 128, heads = 4, layers = 2, ff = 512, steps = 1000, warmup = 50;
    std::int64_t eval_every = 50, sample_chars = 300, top_k = 10;
    double lr = 6e-3, dropout = 0.1, weight_decay = 0.1, clip = 1.0;
    std::vector<double> temperatures = {0.5, 0.8, 1.0};
    std::uint64_t seed = 0;
    int threads = 0;
    bool smoke = false;

    CLI::App app{"spool tutorial 07: a character-level Transformer language model"};
    app.option_defaults()->always_capture_default();
    app.add_option("--text", text, "the text to learn (a plain-text file)");
    app.add_option("--context", T, "characters per training window (T)")->check(CLI::Range(4, 4096));
    app.add_option("--batch-size", N, "windows per step (N)")->check(CLI::PositiveNumber);
    app.add_option("--d-model", d_model, "model width")->check(CLI::PositiveNumber);
    app.add_option("--heads", heads, "attention heads")->check(CLI::PositiveNumber);
    app.add_option("--layers", layers, "Transformer layers")->check(CLI::PositiveNumber);
    app.add_option("--ff", ff, "feed-forward width")->check(CLI::PositiveNumber);
    app.add_option("--dropout", dropout, "dropout probability")->check(CLI::Range(0.0, 0.9));
    app.add_option("--steps", steps, "training steps")->check(CLI::PositiveNumber);
    app.add_option("--lr", lr, "peak learning rate (AdamW, linear warmup, cosine decay to 10%)");
    app.add_option("--warmup", warmup, "warmup steps");
    app.add_option("--weight-decay", weight_decay, "AdamW's decoupled weight decay");
    app.add_option("--clip", clip, "gradient-norm clipping limit");
    app.add_option("--eval-every", eval_every, "measure train and held-out bits/char every N steps")
        ->check(CLI::PositiveNumber);
    app.add_option("--prompt", prompt, "the text the samples continue");
    app.add_option("--sample-chars", sample_chars, "characters per sample");
    app.add_option("--temperature", temperatures, "sampling temperatures");
    app.add_option("--top-k", top_k, "sample among the k most likely characters (0: all)");
    app.add_option("--seed", seed, "seed of weights, dropout, batches and sampling");
    app.add_option("--threads", threads, "threads (0: all cores)");
    app.add_option("--out", out, "run directory (metrics.csv, loss.png)");
    app.add_flag("--smoke", smoke, "a few steps with a tiny model (tests)");
    CLI11_PARSE(app, argc, argv);
    if (smoke) {
        T = 16, N = 4, d_model = 16, heads = 2, layers = 1, ff = 32, steps = 4, warmup = 1, eval_every = 2;
        sample_chars = 20;
    }
    if (threads > 0) set_num_threads(threads);
    fs::create_directories(out);

    try {
        const Corpus c = load_corpus(text);
        const auto V = static_cast<std::int64_t>(c.chars.size());
        if (static_cast<std::int64_t>(c.train.size()) <= T + 1)
            throw ValueError("07_char_lm: --context must be shorter than the training text; got context " +
                             std::to_string(T) + " and " + std::to_string(c.train.size()) + " training characters");
        std::vector<std::int64_t> prompt_ids;
        for (unsigned char ch : prompt) {
            if (c.id_of[ch] < 0) throw ValueError(std::string("07_char_lm: the prompt holds '") +
                                                  static_cast<char>(ch) + "', which the text never uses");
            prompt_ids.push_back(c.id_of[ch]);
        }

        // ---- the model and its optimizer ----------------------------------------------------
        manual_seed(seed);
        nn::TransformerLM model({.vocab = V, .d_model = d_model, .nhead = heads, .num_layers = layers,
                                 .dim_feedforward = ff, .dropout = dropout, .batch_first = true, .max_len = T});
        optim::AdamW opt(model.named_parameters(), {.lr = lr, .betas = {0.9, 0.99}, .weight_decay = weight_decay});
        optim::WarmupLR schedule(opt, {.warmup_steps = warmup, .total_steps = steps, .decay = optim::Decay::cosine,
                                       .min_lr_ratio = 0.1});
        const auto params = model.parameters();
        const double unigram = unigram_bits(c, c.heldout);
        std::printf("spool 07_char_lm: %s, %zu characters (%zu train, %zu held out), %lld distinct\n"
                    "TransformerLM: %lld layers, d_model %lld, %lld heads, context %lld, %lld parameters; "
                    "%lld steps of %lld windows; %d threads\n"
                    "baselines on the held-out text: uniform %.2f bits/char, character frequencies %.2f bits/char\n",
                    text.c_str(), c.train.size() + c.heldout.size(), c.train.size(), c.heldout.size(),
                    static_cast<long long>(V), static_cast<long long>(layers), static_cast<long long>(d_model),
                    static_cast<long long>(heads), static_cast<long long>(T),
                    static_cast<long long>(model.num_parameters()), static_cast<long long>(steps),
                    static_cast<long long>(N), get_num_threads(), std::log2(static_cast<double>(V)), unigram);
        std::printf("capitals among the letters: %.1f%% of the training text, %.1f%% of the held-out text\n\n",
                    100 * capital_share(c, c.train), 100 * capital_share(c, c.heldout));

        // ---- training -----------------------------------------------------------------------
        std::mt19937_64 rng(seed);
        train::CsvWriter csv(out + "/metrics.csv", {"step", "loss_bits", "lr", "train_bits", "heldout_bits"});
        train::Progress progress({.total_steps = steps, .live = train::stdout_is_terminal()});
        const std::int64_t train_probe = std::max<std::int64_t>(1, static_cast<std::int64_t>(c.heldout.size()) / (T / 2));
        auto evaluate = [&](std::int64_t step) {
            model.eval();
            // train: as many windows as the held-out text has, so the two cost the same
            const double tr = bits_per_char(model, c.train, T, train_probe);
            const double ho = bits_per_char(model, c.heldout, T);
            csv.set("train_bits", tr);
            csv.set("heldout_bits", ho);
            char line[160];
            std::snprintf(line, sizeof line, "step %5lld  train %.3f bits/char  held-out %.3f bits/char",
                          static_cast<long long>(step), tr, ho);
            progress.message(line);
        };
        {
            // the untrained model: how often is its most likely next character the current one?
            auto [x0, y0] = random_batch(c.train, N, T, rng);
            model.eval();
            // on xtensor views of the logits [N, T, V] and the inputs [N, T] (no copies)
            const Tensor logits = model(x0);
            auto pred = xt::cast<std::int64_t>(xt::argmax(as_xtensor<float>(logits), 2));
            const double same = xt::mean(xt::cast<double>(xt::equal(pred, as_xtensor<std::int64_t>(x0))))();
            std::printf("untrained: the most likely next character is the current one at %.1f%% of positions\n",
                        100 * same);
        }
        csv.set("step", 0);
        evaluate(0);
        csv.commit();
        for (std::int64_t step = 1; step <= steps; ++step) {
            auto [x, y] = random_batch(c.train, N, T, rng);
            const double lr_now = opt.lr(0);
            model.train();
            double loss_value;
            {
                Tape tape;
                Tensor logits = model(x);  // [N, T, V]
                Tensor loss = cross_entropy(reshape(logits, {N * T, V}), reshape(y, {N * T}));
                loss_value = loss.item();
                tape.backward(loss);
            }
            optim::clip_grad_norm(params, clip);
            opt.step();
            schedule.step();
            opt.zero_grad();

            const std::int64_t passes = step * N * T / static_cast<std::int64_t>(c.train.size());  // over the text
            progress.update(step, passes, loss_value / ln2, lr_now, N * T);
            csv.set("step", static_cast<double>(step));
            csv.set("loss_bits", loss_value / ln2);
            csv.set("lr", lr_now);
            if (step % eval_every == 0 || step == steps) evaluate(step);
            csv.commit();
        }
        progress.finish();
        model.eval();
        const double train_bits = bits_per_char(model, c.train, T), heldout_bits = bits_per_char(model, c.heldout, T);
        std::printf("\nafter %lld steps (%s): train %.3f bits/char, held-out %.3f bits/char (whole texts)\n",
                    static_cast<long long>(steps), train::format_duration(progress.elapsed_seconds()).c_str(),
                    train_bits, heldout_bits);

        // ---- writing --------------------------------------------------------------------------
        const std::int64_t greedy_n = std::max<std::int64_t>(0, T - static_cast<std::int64_t>(prompt_ids.size()));
        Tensor greedy = nn::generate(model, from_vector(prompt_ids, {1, static_cast<std::int64_t>(prompt_ids.size())}),
                                     {.max_new_tokens = std::min(greedy_n, sample_chars), .eos_id = -1});
        std::vector<std::int64_t> g;
        for (double v : greedy.tolist()) g.push_back(static_cast<std::int64_t>(v));
        std::printf("\ngreedy (nn::generate):\n    %s%s\n", printable(prompt).c_str(), printable(decode(c, g)).c_str());
        for (double temp : temperatures) {
            std::mt19937_64 srng(seed + 1);
            auto ids = sample(model, prompt_ids, sample_chars, T, temp, top_k, srng);
            std::printf("\ntemperature %.1f, top-k %lld:\n    %s%s\n", temp, static_cast<long long>(top_k),
                        printable(prompt).c_str(), printable(decode(c, ids)).c_str());
        }
        {
            std::mt19937_64 srng(seed + 1);
            auto ids = sample(model, prompt_ids, sample_chars, T, 1.0, 0, srng);
            std::printf("\ntemperature 1.0, no top-k:\n    %s%s\n", printable(prompt).c_str(),
                        printable(decode(c, ids)).c_str());
        }

        // ---- the loss curve ---------------------------------------------------------------------
        if (train::gnuplot_available()) {
            const std::string m = out + "/metrics.csv";
            auto col = [&](const char* name) { return train::read_csv_column(m, name); };
            const auto x = col("step");
            auto sparse = [&](const char* name) {  // the evaluation rows only
                train::Series s{name, {}, {}};
                const auto y = col(name);
                for (std::size_t i = 0; i < x.size(); ++i)
                    if (std::isfinite(y[i])) s.x.push_back(x[i]), s.y.push_back(y[i]);
                return s;
            };
            auto tr = sparse("train_bits"), ho = sparse("heldout_bits");
            tr.label = "train text (eval mode)";
            ho.label = "held-out text (last 10%)";
            train::plot_lines(out + "/loss.png",
                              {.title = "Character-level LM on " + fs::path(text).filename().string(),
                               .xlabel = "step", .ylabel = "bits per character",
                               .series = {{"training batches (dropout on)", x, col("loss_bits")}, tr, ho,
                                          {"character frequencies, held-out", {0, x.back()}, {unigram, unigram}}}});
            std::printf("\nplot: %s/loss.png\n", out.c_str());
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
