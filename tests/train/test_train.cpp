// train/: vocabulary and batching (the target shift), the generated tasks and their held-out
// split, loss specs, CSV and report files, and the seq2seq trainer learning a small task.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <set>
#include <sstream>

#include "messages.hpp"
#include "spool.hpp"
#include "train/plot.hpp"
#include "train/progress.hpp"
#include "train/report.hpp"
#include "train/seq2seq.hpp"

using namespace spool;
using namespace spool::train;
using spool::test::message_of;

namespace {
std::filesystem::path temp_dir(const std::string& name)
{
    auto p = std::filesystem::temp_directory_path() / ("spool_test_train_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(p);
    std::filesystem::create_directories(p);
    return p;
}
std::string slurp(const std::filesystem::path& p)
{
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}
}  // namespace

TEST_CASE("CharVocab: specials first, round trip, unknown characters")
{
    CharVocab v("abca");
    CHECK(v.size() == 4 + 3);  // duplicates count once
    CHECK(v.id('a') == 4);
    CHECK(v.id('c') == 6);
    CHECK(v.id('z') == CharVocab::unk);
    auto ids = v.encode("cab");
    CHECK(ids == std::vector<std::int64_t>{6, 4, 5});
    std::vector<std::int64_t> with_specials = {CharVocab::bos, 6, 4, CharVocab::pad, 5, CharVocab::eos, 4};
    CHECK(v.decode(with_specials.data(), 7) == "cab");  // stops at EOS, skips BOS/PAD
    CHECK(v.symbol(CharVocab::eos) == "</s>");
}

TEST_CASE("make_batch: padded source, target shifted by one, masks and alignments")
{
    CharVocab v("0123456789");
    Batch b = make_batch({{"123", "321", {2, 1, 0}}, {"45", "54", {}}}, v);
    REQUIRE(b.src.shape() == Shape{2, 3});
    REQUIRE(b.tgt_in.shape() == Shape{2, 4});
    const auto id = [&](char c) { return static_cast<double>(v.id(c)); };
    // row 0: tgt_in = BOS 3 2 1, tgt_out = 3 2 1 EOS
    CHECK(b.tgt_in.at({0, 0}) == CharVocab::bos);
    CHECK(b.tgt_in.at({0, 1}) == id('3'));
    CHECK(b.tgt_out.at({0, 0}) == id('3'));
    CHECK(b.tgt_out.at({0, 3}) == CharVocab::eos);
    // row 1 is shorter: PAD after EOS, masks true there
    CHECK(b.tgt_out.at({1, 2}) == CharVocab::eos);
    CHECK(b.tgt_out.at({1, 3}) == CharVocab::pad);
    CHECK(b.tgt_pad.at({1, 3}) == 1);
    CHECK(b.tgt_pad.at({1, 2}) == 0);
    CHECK(b.src_pad.at({1, 2}) == 1);
    CHECK(b.src.at({1, 2}) == CharVocab::pad);
    CHECK(b.tokens == 4 + 3);
    REQUIRE(b.align.defined());
    CHECK(b.align.at({0, 0}) == 2);
    CHECK(b.align.at({0, 3}) == -100);  // EOS has no source
    CHECK(b.align.at({1, 0}) == -100);  // no alignment given
}

TEST_CASE("shard_rows: contiguous, as even as can be, disjoint and covering")
{
    for (const std::int64_t n : {0, 1, 7, 8, 64}) {
        for (const int world : {1, 2, 3, 5}) {
            std::int64_t next = 0;
            for (int r = 0; r < world; ++r) {
                const RowRange rr = shard_rows(n, r, world);
                CHECK(rr.begin == next);  // contiguous and in rank order: disjoint, covering
                CHECK(rr.end - rr.begin == n / world + (r < n % world ? 1 : 0));
                next = rr.end;
            }
            CHECK(next == n);
        }
    }
    CHECK(message_of<ValueError>([] { shard_rows(8, 2, 2); }) == "shard_rows: rank 2 of world 2 over 8 rows: need 0 <= rank < world and n >= 0");
}

TEST_CASE("DistributedSampler: PyTorch's padding and dropping, disjoint shuffled parts per epoch")
{
    auto part = [](std::int64_t size, DistributedSamplerOptions o) { return DistributedSampler(size, o).indices(); };
    using V = std::vector<std::int64_t>;
    // without shuffle: rank r takes positions r, r + world, ...; 10 over 3 ranks pads with 0, 1
    CHECK(part(10, {.world = 3, .rank = 0, .shuffle = false}) == V{0, 3, 6, 9});
    CHECK(part(10, {.world = 3, .rank = 1, .shuffle = false}) == V{1, 4, 7, 0});
    CHECK(part(10, {.world = 3, .rank = 2, .shuffle = false}) == V{2, 5, 8, 1});
    // drop_last cuts the tail that does not fill a round: 9 of 10
    CHECK(part(10, {.world = 3, .rank = 0, .shuffle = false, .drop_last = true}) == V{0, 3, 6});
    CHECK(part(10, {.world = 3, .rank = 2, .shuffle = false, .drop_last = true}) == V{2, 5, 8});
    // padding longer than the dataset repeats it: 2 examples over 5 ranks
    CHECK(part(2, {.world = 5, .rank = 4, .shuffle = false}) == V{0});
    CHECK(part(2, {.world = 5, .rank = 3, .shuffle = false}) == V{1});
    // shuffled: each epoch a permutation split into disjoint parts; seeded; epochs differ
    const std::int64_t n = 1000;
    for (const std::int64_t epoch : {0, 1}) {
        std::set<std::int64_t> all;
        for (int r = 0; r < 4; ++r) {
            DistributedSampler s(n, {.world = 4, .rank = r, .seed = 7});
            s.set_epoch(epoch);
            const V mine = s.indices();
            CHECK(static_cast<std::int64_t>(mine.size()) == s.num_samples());
            CHECK(s.num_samples() == 250);
            all.insert(mine.begin(), mine.end());
        }
        CHECK(all.size() == static_cast<std::size_t>(n));  // disjoint and covering
    }
    DistributedSampler a(n, {.world = 2, .rank = 0, .seed = 7}), b(n, {.world = 2, .rank = 0, .seed = 7});
    CHECK(a.indices() == b.indices());
    b.set_epoch(1);
    CHECK(a.indices() != b.indices());
    CHECK(a.indices() != part(n, {.world = 2, .rank = 0, .seed = 8}));
    const V first = a.indices();
    CHECK(!std::is_sorted(first.begin(), first.end()));
    CHECK(message_of<ValueError>([] { DistributedSampler(10, {.world = 2, .rank = 2}); }) ==
          "DistributedSampler: rank 2 of world 2: need 0 <= rank < world");
    CHECK(message_of<ValueError>([] { DistributedSampler(1, {.world = 2, .drop_last = true}); }) ==
          "DistributedSampler: drop_last with 1 examples over 2 ranks leaves none for some rank");
}

TEST_CASE("dates: calendar round trip and the formats with their alignments")
{
    for (std::int64_t d = days_from_civil({1950, 1, 1}); d <= days_from_civil({2049, 12, 31}); ++d) {
        Date c = civil_from_days(d);
        REQUIRE(days_from_civil(c) == d);
    }
    CHECK(days_from_civil({1970, 1, 1}) == 0);
    CHECK(days_from_civil({2026, 11, 26}) == 20783);

    const Date d{2026, 11, 26};
    std::vector<std::string> expected = {"26 Nov 2026",       "11/26/26",   "November 26th, 2026",
                                         "26.11.2026",        "2026/11/26", "Nov 26, 2026",
                                         "26 NOVEMBER 2026",  "Thu, 26 Nov 2026", "thursday november 26 2026"};
    REQUIRE(date_formats() == static_cast<int>(expected.size()));
    for (int f = 0; f < date_formats(); ++f) {
        Example e = format_date(d, f);
        CAPTURE(f);
        CHECK(e.src == expected[static_cast<std::size_t>(f)]);
        CHECK(e.tgt == "2026-11-26");
        REQUIRE(e.align.size() == e.tgt.size());
        // every aligned target digit reads the same digit in the source, or a month name
        for (std::size_t t = 0; t < e.tgt.size(); ++t) {
            const auto a = e.align[t];
            if (a < 0) continue;
            const char s = e.src[static_cast<std::size_t>(a)];
            if (t == 5 || t == 6) CHECK((s == e.tgt[t] || std::isalpha(static_cast<unsigned char>(s))));
            else CHECK(s == e.tgt[t]);
        }
    }
    // 2-digit years: the century has no source character; single-digit months align right
    Example us = format_date({1999, 3, 7}, 1);
    CHECK(us.src == "3/7/99");
    CHECK(us.align == std::vector<std::int64_t>{-1, -1, 4, 5, -1, -1, 0, -1, -1, 2});
    CHECK(format_date({2001, 1, 2}, 2).src == "January 2nd, 2001");
    CHECK(format_date({2001, 1, 13}, 2).src == "January 13th, 2001");
    CHECK(message_of<ValueError>([] { format_date({2001, 1, 1}, 99); }).find("format_date: format 99") == 0);
}

TEST_CASE("tasks: held-out dates and strings never appear in training")
{
    for (const std::string name : {"dates", "reverse"}) {
        auto task = make_task(name);
        std::set<std::string> heldout;
        for (const auto& e : sample_set(*task, 2000, 7, Split::heldout)) heldout.insert(e.tgt);
        std::int64_t overlap = 0;
        for (const auto& e : sample_set(*task, 4000, 8, Split::train)) overlap += heldout.count(e.tgt);
        CAPTURE(name);
        CHECK(heldout.size() > 500);
        CHECK(overlap == 0);
    }
    auto rev = make_task("reverse");
    std::mt19937_64 rng(3);
    Example e = rev->sample(rng, Split::train);
    CHECK(e.tgt == std::string(e.src.rbegin(), e.src.rend()));
    CHECK(e.align.front() == static_cast<std::int64_t>(e.src.size()) - 1);
    CHECK(message_of<ValueError>([] { make_task("sort"); }) == "make_task: unknown task 'sort'; known: copy, dates, reverse");
}

TEST_CASE("token_loss_spec: padding is ignored unless said otherwise; only token-level losses")
{
    CHECK(token_loss_spec("cross_entropy", {"label_smoothing=0.1"}) == "cross_entropy(label_smoothing=0.1, ignore_index=0)");
    CHECK(token_loss_spec("cross_entropy", {}) == "cross_entropy(ignore_index=0)");
    CHECK(token_loss_spec("label_smoothing_kl", {"smoothing=0.1"}) == "label_smoothing_kl(smoothing=0.1, padding_idx=0)");
    CHECK(token_loss_spec("focal_loss", {"ignore_index=5"}) == "focal_loss(ignore_index=5)");
    CHECK(message_of<ValueError>([] { token_loss_spec("mse_loss", {}); }).find("--loss: 'mse_loss' is not a token-level loss") == 0);
    CHECK(message_of<ValueError>([] { token_loss_spec("cross_entropy", {"smooth"}); }) ==
          "--loss: option 'smooth' is not key=value");
}

TEST_CASE("CsvWriter and read_csv_column: empty cells read back as NaN")
{
    auto dir = temp_dir("csv");
    {
        CsvWriter w((dir / "m.csv").string(), {"step", "loss", "acc"});
        w.set("step", 1);
        w.set("loss", 2.5);
        w.commit();
        w.set("step", 2);
        w.set("acc", 0.75);
        w.commit();
        CHECK(message_of<ValueError>([&] { w.set("nope", 1); }) == "CsvWriter: no column 'nope'");
    }
    CHECK(slurp(dir / "m.csv") == "step,loss,acc\n1,2.5,\n2,,0.75\n");
    auto loss = read_csv_column((dir / "m.csv").string(), "loss");
    REQUIRE(loss.size() == 2);
    CHECK(loss[0] == 2.5);
    CHECK(std::isnan(loss[1]));
    CHECK(read_csv_column((dir / "m.csv").string(), "acc")[1] == 0.75);
    std::filesystem::remove_all(dir);
}

TEST_CASE("HtmlReport: escaped text, images and links only when the file exists")
{
    auto dir = temp_dir("html");
    std::ofstream(dir / "a.png") << "x";
    HtmlReport page("a <b> & c");
    page.image(dir.string(), "a.png", "first");
    page.image(dir.string(), "missing.png", "second");
    page.link(dir.string(), "a.png", "data");
    page.paragraph("x < y");
    page.write((dir / "index.html").string());
    const std::string html = slurp(dir / "index.html");
    CHECK(html.find("<title>a &lt;b&gt; &amp; c</title>") != std::string::npos);
    CHECK(html.find("x &lt; y") != std::string::npos);
    CHECK(referenced_files(html) == std::vector<std::string>{"a.png", "a.png"});
    CHECK(referenced_files("<a href=\"#top\"></a><a href=\"https://x\"></a><img src=\"p.svg\">") ==
          std::vector<std::string>{"p.svg"});
    std::filesystem::remove_all(dir);
}

TEST_CASE("Progress: plain lines when not a terminal, ETA and rate")
{
    auto dir = temp_dir("progress");
    std::FILE* f = std::fopen((dir / "out.txt").c_str(), "w");
    {
        Progress p({.total_steps = 3, .live = false, .plain_every_seconds = 1000, .out = f});
        p.update(1, 0, 2.0, 1e-3, 100);
        p.update(2, 0, 1.0, 1e-3, 100);  // within plain_every_seconds: not printed
        p.message("eval");
        p.update(3, 0, 1.0, 1e-3, 100);  // the last step always is
        p.finish();
    }
    std::fclose(f);
    const std::string out = slurp(dir / "out.txt");
    CHECK(out.find("step 1/3  epoch 0  loss 2.0000  lr 1.00e-03") == 0);
    CHECK(out.find("step 2/3") == std::string::npos);
    // the line shows a smoothed loss: 2, then 0.9·2 + 0.1·1 = 1.9, then 0.9·1.9 + 0.1·1 = 1.81
    CHECK(out.find("\neval\nstep 3/3  epoch 0  loss 1.8100") != std::string::npos);
    CHECK(out.find('\r') == std::string::npos);
    CHECK(format_duration(65) == "1m05s");
    CHECK(format_duration(7380) == "2h03m");
    std::filesystem::remove_all(dir);
}

TEST_CASE("Seq2SeqTrainer: same seed, same losses; batches are a function of (seed, step)")
{
    Seq2SeqConfig c{.task = "copy", .d_model = 16, .nhead = 2, .num_layers = 1, .dim_feedforward = 32,
                    .steps = 3, .batch_size = 4, .warmup = 2, .eval_size = 8};
    // one after the other: the trainer seeds spool's global generator, which dropout draws from
    std::vector<double> first, second;
    {
        Seq2SeqTrainer a(c);
        for (int i = 0; i < 3; ++i) first.push_back(a.step().loss);
    }
    {
        Seq2SeqTrainer b(c);
        for (int i = 0; i < 3; ++i) second.push_back(b.step().loss);
    }
    CHECK(first == second);
    CHECK(first[0] != first[1]);
    auto t = make_task("copy");
    CHECK(training_batch(*t, 1, 5, 4).src.tolist() == training_batch(*t, 1, 5, 4).src.tolist());
    CHECK(training_batch(*t, 1, 5, 4).src.tolist() != training_batch(*t, 1, 6, 4).src.tolist());
    c.schedule = "exponential";
    CHECK(message_of<ValueError>([&] { Seq2SeqTrainer bad(c); }).find("Seq2SeqTrainer: unknown schedule 'exponential'") == 0);
}

TEST_CASE("Seq2SeqTrainer learns to copy: loss falls, accuracy rises (with the alignment loss on)")
{
    Seq2SeqConfig c{.task = "copy", .d_model = 32, .nhead = 2, .num_layers = 1, .dim_feedforward = 64,
                    .dropout = 0.0, .steps = 150, .batch_size = 32, .lr = 3e-3, .warmup = 20,
                    .align_weight = 0.5, .eval_size = 64, .show = 2, .beam = 2};
    Seq2SeqTrainer tr(c);
    const EvalResult before = tr.evaluate();
    double first = 0, last = 0;
    for (std::int64_t i = 0; i < c.steps; ++i) {
        const StepRecord r = tr.step();
        CHECK_FALSE(r.skipped);
        if (i < 10) first += r.loss / 10;
        if (i >= c.steps - 10) last += r.loss / 10;
    }
    const EvalResult after = tr.evaluate();
    CAPTURE(first);
    CAPTURE(last);
    CHECK(last < 0.5 * first);
    CHECK(after.token_acc > before.token_acc + 0.3);
    CHECK(after.nll < before.nll);
    REQUIRE(after.samples.size() == 2);
    CHECK(after.samples[0].ref == tr.heldout()[0].tgt);
    // the attention map of a pair is [T + 1 rows (BOS … ), S columns], rows summing to 1
    auto map = tr.attention_map(tr.heldout()[0]);
    REQUIRE(map.size() == tr.heldout()[0].tgt.size() + 1);
    REQUIRE(map[0].size() == tr.heldout()[0].src.size());
    double row = 0;
    for (double v : map[0]) row += v;
    CHECK(row == doctest::Approx(1.0).epsilon(1e-5));
}

TEST_CASE("run: metrics.csv has every step, index.html references only files that exist")
{
    auto dir = temp_dir("run");
    Seq2SeqConfig c{.task = "dates", .d_model = 16, .nhead = 2, .num_layers = 1, .dim_feedforward = 32,
                    .steps = 4, .batch_size = 4, .warmup = 2, .eval_every = 2, .eval_size = 8, .show = 2, .beam = 2};
    Seq2SeqTrainer tr(c);
    RunSummary s = run(tr, {.out_dir = dir.string(), .config_json = "{\"task\": \"dates\"}", .quiet = true});
    CHECK(s.evals.size() == 2);
    CHECK(s.evals[1].step == 4);
    CHECK(s.last.samples.size() == 2);
    auto steps = read_csv_column((dir / "metrics.csv").string(), "step");
    CHECK(steps == std::vector<double>{1, 2, 3, 4});
    auto exact = read_csv_column((dir / "metrics.csv").string(), "eval_exact");
    CHECK(std::isnan(exact[0]));
    CHECK(exact[1] == s.evals[0].exact);
    const std::string html = slurp(dir / "index.html");
    const auto files = referenced_files(html);
    CHECK(files.size() >= 2);  // metrics.csv and config.json at least; the plots when gnuplot is installed
    for (const auto& f : files) {
        CAPTURE(f);
        CHECK(std::filesystem::exists(dir / f));
    }
    if (gnuplot_available()) CHECK(std::find(files.begin(), files.end(), "attention.png") != files.end());
    CHECK(slurp(dir / "config.json") == "{\"task\": \"dates\"}\n");
    std::filesystem::remove_all(dir);
}

TEST_CASE("run: resuming from a checkpoint gives the same losses as never stopping")
{
    auto straight = temp_dir("straight"), split = temp_dir("split");
    Seq2SeqConfig c{.task = "reverse", .d_model = 16, .nhead = 2, .num_layers = 1, .dim_feedforward = 32,
                    .steps = 6, .batch_size = 4, .warmup = 2, .eval_every = 3, .eval_size = 8, .show = 0};
    {
        Seq2SeqTrainer t(c);
        run(t, {.out_dir = straight.string(), .plots = false, .quiet = true});
    }
    {
        auto first = c;
        first.steps = 4;  // stop early, as a killed run would after its checkpoint at step 4
        Seq2SeqTrainer t(first);
        run(t, {.out_dir = split.string(), .plots = false, .quiet = true, .save_every = 2});
        CHECK(std::filesystem::exists(split / "checkpoints" / "ckpt-2.safetensors"));
        CHECK(std::filesystem::exists(split / "checkpoints" / "ckpt-4.safetensors"));
    }
    {
        manual_seed(12345);  // whatever the generator holds now, the checkpoint restores it
        Seq2SeqTrainer t(c);
        auto s = run(t, {.out_dir = split.string(), .plots = false, .quiet = true, .resume = split.string()});
        CHECK(t.steps_done() == 6);
        REQUIRE(s.evals.size() == 1);  // only step 6 ran an evaluation after the resume
    }
    const auto a = read_csv_column((straight / "metrics.csv").string(), "loss");
    const auto b = read_csv_column((split / "metrics.csv").string(), "loss");
    CHECK(read_csv_column((split / "metrics.csv").string(), "step") == std::vector<double>{1, 2, 3, 4, 5, 6});
    REQUIRE(a.size() == 6);
    CHECK(a == b);  // bit for bit (as printed with 9 significant digits: a float's every bit)
    CHECK(a[0] != a[5]);
    CHECK(message_of<IoError>([&] {
              Seq2SeqTrainer t(c);
              run(t, {.out_dir = straight.string(), .quiet = true, .resume = (split / "nothing").string()});
          }) == "safetensors: " + (split / "nothing").string() + ": cannot open for reading: No such file or directory");
    std::filesystem::remove_all(straight);
    std::filesystem::remove_all(split);
}

TEST_CASE("Seq2SeqTrainer trains under anomaly mode: the causal mask's −inf is not an anomaly")
{
    Seq2SeqConfig c{.task = "copy", .d_model = 16, .nhead = 2, .num_layers = 1, .dim_feedforward = 32,
                    .steps = 2, .batch_size = 4, .warmup = 2, .eval_size = 4, .show = 1, .beam = 2};
    Seq2SeqTrainer t(c);
    detect_anomaly(true);
    StepRecord r;
    CHECK_NOTHROW(r = t.step());
    CHECK_NOTHROW(t.evaluate());
    detect_anomaly(false);
    CHECK(std::isfinite(r.loss));
    CHECK_FALSE(r.skipped);
}
