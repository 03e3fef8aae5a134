// The flagship trainer (train/seq2seq.hpp) data-parallel over MPI, as examples/train_seq2seq
// --distributed wires it: 2 ranks take the steps one process takes on the whole batch, rank
// 0 alone writes the run directory, and a checkpoint resumes with 1 or 2 ranks whichever
// wrote it. Part of the test_dist executable (2 ranks under mpirun).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "dist/ddp.hpp"
#include "dist/dist.hpp"
#include "spool.hpp"
#include "tolerances.hpp"
#include "train/seq2seq.hpp"

using namespace spool;
namespace fs = std::filesystem;

namespace {

/// A small, dropout-free run (dropout masks differ per rank by design), batch rows unevenly
/// padded (dates of every format), several Adam steps.
train::Seq2SeqConfig small_config(std::int64_t steps, std::int64_t batch)
{
    train::Seq2SeqConfig c;
    train::shrink_for_smoke(c);
    c.dropout = 0;
    c.steps = steps;
    c.batch_size = batch;
    c.eval_every = 1000;  // run() evaluates at the last step only
    c.eval_size = 8;
    c.show = 0;
    return c;
}

/// The trainer made data-parallel over the ranks, as examples/train_seq2seq does it.
struct Parallel {
    explicit Parallel(const train::Seq2SeqConfig& c) : trainer(c)
    {
        ddp = std::make_unique<dist::DistributedDataParallel>(trainer.model());
        trainer.set_data_parallel({.rank = dist::rank(), .world = dist::world_size(),
                                   .sync_gradients = [this] { ddp->finish_gradient_sync(); },
                                   .sum = [](double v) {
                                       Tensor t = full({1}, v, {.dtype = DType::f64});
                                       dist::all_reduce(t);
                                       return t.item();
                                   },
                                   .barrier = [] { dist::barrier(); }});
    }
    train::Seq2SeqTrainer trainer;
    std::unique_ptr<dist::DistributedDataParallel> ddp;
};

/// The largest |a - b| / (atol + rtol |b|) over every parameter element: <= 1 is a match.
/// Except the key part of each attention's in_proj_bias (elements [E, 2E)): its gradient is
/// exactly zero in exact arithmetic (softmax ignores a shift shared by a row), so both runs
/// compute rounding noise there, which Adam (float32, eps 1e-9) divides by its own size into
/// steps of about lr that differ between the runs and change no output. Checked instead: it
/// stays within the bound such steps give.
double worst_mismatch(train::Seq2SeqTrainer& got, train::Seq2SeqTrainer& want, test::Tolerance tol)
{
    const auto a = got.model().named_parameters(), b = want.model().named_parameters();
    REQUIRE(a.size() == b.size());
    const std::int64_t E = got.config().d_model;
    const double key_bias_bound = 2 * got.config().lr * static_cast<double>(got.steps_done());
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const bool in_proj_bias = a[i].first.ends_with("in_proj_bias");
        const std::vector<double> x = a[i].second.tolist(), y = b[i].second.tolist();
        for (std::size_t j = 0; j < x.size(); ++j) {
            const auto k = static_cast<std::int64_t>(j);
            if (in_proj_bias && k >= E && k < 2 * E) {
                CHECK(std::abs(x[j]) <= key_bias_bound);
                continue;
            }
            const double m = std::abs(x[j] - y[j]) / (tol.atol + tol.rtol * std::abs(y[j]));
            if (m > 1) MESSAGE(a[i].first, "[", j, "]: ", x[j], " against ", y[j]);
            worst = std::max(worst, m);
        }
    }
    return worst;
}

bool same_on_all_ranks(const Tensor& t)
{
    Tensor root(t.value().clone());
    dist::broadcast(root, 0);
    return root.tolist() == t.tolist();
}

/// A directory every rank agrees on (rank 0's pid), emptied.
std::string shared_dir(const std::string& name)
{
    Tensor id = full({1}, static_cast<double>(getpid()), {.dtype = DType::i64});
    dist::broadcast(id, 0);
    const fs::path d = fs::temp_directory_path() / ("spool_test_" + name + "_" + std::to_string(id.item<std::int64_t>()));
    dist::barrier();
    if (dist::rank() == 0) {
        fs::remove_all(d);
        fs::create_directories(d);
    }
    dist::barrier();
    return d.string();
}

std::int64_t csv_rows(const std::string& path)
{
    std::ifstream f(path);
    std::int64_t n = -1;  // the header
    for (std::string line; std::getline(f, line);) ++n;
    return n;
}

}  // namespace

TEST_CASE("the trainer on 2 ranks takes the steps one process takes on the whole batch (even and odd batches)")
{
    dist::init();
    set_num_threads(1);
    for (const std::int64_t batch : {8, 7}) {  // 7: ranks get 4 and 3 rows
        CAPTURE(batch);
        const auto c = small_config(5, batch);
        Parallel par(c);
        train::Seq2SeqTrainer one(c);  // this rank, alone, on every row
        for (int k = 0; k < 5; ++k) {
            const train::StepRecord p = par.trainer.step(), o = one.step();
            CAPTURE(k);
            CHECK(p.tokens == o.tokens);  // the whole batch's tokens
            // the logged loss is the whole batch's token mean, summed over the ranks
            CHECK(test::close(p.loss, o.loss, test::ddp_f32));
            CHECK(test::close(p.grad_norm, o.grad_norm, test::ddp_trainer_f32));
        }
        const double worst = worst_mismatch(par.trainer, one, test::ddp_trainer_f32);
        if (dist::rank() == 0) MESSAGE("batch ", batch, ": worst parameter mismatch / ddp_trainer_f32 tolerance ", worst);
        CHECK(worst <= 1.0);
        for (auto& [name, p] : par.trainer.model().named_parameters()) {
            CAPTURE(name);
            CHECK(same_on_all_ranks(p));  // bit-identical on every rank after every step
        }
    }
}

TEST_CASE("a data-parallel run writes its files on rank 0 only")
{
    dist::init();
    set_num_threads(1);
    const std::string dir = shared_dir("rank0_files");
    Parallel par(small_config(4, 8));
    const train::RunSummary s =
        train::run(par.trainer, {.out_dir = dir, .plots = false, .quiet = true, .save_every = 2});
    // written once, by rank 0: one header and one row per step (two writers would interleave)
    CHECK(csv_rows(dir + "/metrics.csv") == 4);
    CHECK(fs::exists(dir + "/checkpoints/ckpt-2.safetensors"));
    CHECK(fs::exists(dir + "/checkpoints/ckpt-4.safetensors"));
    CHECK(fs::exists(dir + "/index.html"));
    if (dist::rank() == 0) CHECK(s.evals.size() == 1);  // rank 0 evaluated, at the last step
    else CHECK(s.evals.empty());
    dist::barrier();
    if (dist::rank() == 0) fs::remove_all(dir);
}

TEST_CASE("a checkpoint of a 2-rank run resumes in 1 rank, and one of a 1-rank run in 2 ranks")
{
    dist::init();
    set_num_threads(1);
    const std::int64_t total = 6, at = 3;
    // the reference: every step in one process
    train::Seq2SeqTrainer ref(small_config(total, 8));
    for (std::int64_t k = 0; k < total; ++k) ref.step();

    SUBCASE("2 ranks, then 1")
    {
        const std::string dir = shared_dir("two_then_one");
        {
            Parallel par(small_config(at, 8));
            train::run(par.trainer, {.out_dir = dir + "/two", .plots = false, .quiet = true});
        }
        // every rank resumes alone, into its own directory, from the 2-rank run's checkpoint
        train::Seq2SeqTrainer one(small_config(total, 8));
        train::run(one, {.out_dir = dir + "/one-" + std::to_string(dist::rank()), .plots = false, .quiet = true,
                         .resume = dir + "/two"});
        CHECK(one.steps_done() == total);
        const double worst = worst_mismatch(one, ref, test::ddp_trainer_f32);
        if (dist::rank() == 0) MESSAGE("2 ranks to step ", at, ", 1 to ", total, ": worst mismatch / tolerance ", worst);
        CHECK(worst <= 1.0);
        dist::barrier();
        if (dist::rank() == 0) fs::remove_all(dir);
    }
    SUBCASE("1 rank, then 2")
    {
        const std::string dir = shared_dir("one_then_two");
        if (dist::rank() == 0) {
            train::Seq2SeqTrainer one(small_config(at, 8));
            train::run(one, {.out_dir = dir + "/one", .plots = false, .quiet = true});
        }
        dist::barrier();
        Parallel par(small_config(total, 8));
        train::run(par.trainer, {.out_dir = dir + "/two", .plots = false, .quiet = true, .resume = dir + "/one"});
        CHECK(par.trainer.steps_done() == total);
        CHECK(csv_rows(dir + "/two/metrics.csv") == total - at);  // a new directory: the resumed steps
        const double worst = worst_mismatch(par.trainer, ref, test::ddp_trainer_f32);
        if (dist::rank() == 0) MESSAGE("1 rank to step ", at, ", 2 to ", total, ": worst mismatch / tolerance ", worst);
        CHECK(worst <= 1.0);
        dist::barrier();
        if (dist::rank() == 0) fs::remove_all(dir);
    }
}

TEST_CASE("ranks other than 0 draw their own dropout masks")
{
    dist::init();
    auto c = small_config(1, 8);
    c.dropout = 0.5;
    Parallel par(c);
    Tensor draw = rand({64});
    Tensor root(draw.value().clone());
    dist::broadcast(root, 0);
    CHECK((dist::rank() == 0) == (root.tolist() == draw.tolist()));
    CHECK_THROWS_WITH_AS(par.trainer.set_data_parallel({.rank = 0, .world = 2}),
                         doctest::Contains("needs sync_gradients, sum and barrier"), ValueError);
    CHECK_THROWS_WITH_AS(train::Seq2SeqTrainer(small_config(1, 1)).set_data_parallel(
                             {.rank = 0, .world = 2, .sync_gradients = [] {}, .sum = [](double v) { return v; },
                              .barrier = [] {}}),
                         doctest::Contains("batch_size 1 is smaller than the 2 ranks"), ValueError);
}
