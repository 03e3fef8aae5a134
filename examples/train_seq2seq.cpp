// The flagship: train an encoder–decoder Transformer end to end on a generated task and
// watch it learn. Default task: date normalisation ("26 Nov 2026", "11/26/26",
// "November 26th, 2026", … → "2026-11-26"), evaluated on dates it never saw in training.
//
//   build/examples/train_seq2seq                      # defaults: ≥ 99% exact match in a few minutes
//   build/examples/train_seq2seq --help               # every option
//   build/examples/train_seq2seq --loss cross_entropy label_smoothing=0.1 --align-weight 0.5
//   mpirun -np 2 build/examples/train_seq2seq --distributed --threads 1   # data-parallel (MPI)
//
// Writes a run directory (--out, default runs/<task>): config.json, metrics.csv, plots
// (loss, lr, accuracy, attention heatmap) and index.html that shows them on one page.
// Walkthrough: docs/train_seq2seq.md.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "spool.hpp"
#include "train/progress.hpp"
#include "train/seq2seq.hpp"
#include "tutorial_util.hpp"
#ifdef SPOOL_HAVE_DIST
#include "dist/ddp.hpp"
#endif

using namespace spool;

namespace {

struct Cli {
    train::Seq2SeqConfig c;
    std::vector<std::string> loss = {"cross_entropy", "label_smoothing=0.1"};
    std::string out;
    int threads = 0;
    std::int64_t save_every = 0;
    std::string resume;
    double target = 0.99;
    double bucket_mb = 25;  // DistributedDataParallel's gradient buckets (PyTorch's default)
    bool smoke = false, plots = true, anomaly = false, require_target = false, distributed = false;
};

// Started by mpirun (or another MPI launcher) with more than one process?
bool launched_by_mpi()
{
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
        if (const char* s = std::getenv(v); s && std::atoi(s) > 1) return true;
    return false;
}

nlohmann::json config_json(const Cli& a)
{
    const auto& c = a.c;
    return {{"task", c.task},
            {"model", {{"d_model", c.d_model}, {"nhead", c.nhead}, {"num_encoder_layers", c.num_layers},
                       {"num_decoder_layers", c.num_layers}, {"dim_feedforward", c.dim_feedforward},
                       {"dropout", c.dropout}, {"norm_first", c.norm_first}, {"tie_weights", true}}},
            {"optim", {{"optimizer", "Adam"}, {"betas", {c.beta1, c.beta2}}, {"eps", c.eps},
                       {"weight_decay", c.weight_decay}, {"schedule", c.schedule}, {"peak_lr", c.lr},
                       {"warmup", c.warmup}, {"clip", c.clip}}},
            {"loss", a.loss},
            {"align_weight", c.align_weight},
            {"steps", c.steps}, {"batch_size", c.batch_size}, {"train_size", c.train_size}, {"seed", c.seed}, {"threads", get_num_threads()},
            {"eval_every", c.eval_every}, {"eval_size", c.eval_size}, {"beam", c.beam}};
}

}  // namespace

int main(int argc, char** argv)
{
    Cli a;
    auto& c = a.c;
    CLI::App app{"spool flagship: train a Transformer end to end on a generated seq2seq task"};
    app.option_defaults()->always_capture_default();
    tutorial::add_config_options(app, c);  // task, steps, lr, warmup, d-model, layers, dropout, train-size, eval-size
    app.add_option("--batch-size", c.batch_size, "sequences per step")->check(CLI::PositiveNumber);
    app.add_option("--heads", c.nhead, "attention heads");
    app.add_option("--ff", c.dim_feedforward, "feed-forward width");
    app.add_flag("--norm-first", c.norm_first, "pre-norm layers (default: post-norm, as the paper)");
    app.add_option("--schedule", c.schedule, "lr schedule: noam, constant, cosine, linear")
        ->check(CLI::IsMember({"noam", "constant", "cosine", "linear"}));
    app.add_option("--clip", c.clip, "gradient-norm clipping limit (0: off)");
    app.add_option("--weight-decay", c.weight_decay, "Adam's L2 weight decay");
    app.add_option("--loss", a.loss, "token-level loss and its options: NAME key=value … (cross_entropy, "
                                     "label_smoothing_kl, focal_loss, nll_loss)")
        ->expected(1, 16);
    app.add_option("--align-weight", c.align_weight, "weight λ of the attention-alignment loss (0: off)");
    app.add_option("--eval-every", c.eval_every, "evaluate every N steps");
    app.add_option("--beam", c.beam, "beam width of the sample decodes");
    app.add_option("--seed", c.seed, "seed of weights, dropout and data");
    app.add_option("--threads", a.threads, "threads (0: all cores)");
    app.add_option("--out", a.out, "run directory (default runs/<task>)");
    app.add_option("--save-every", a.save_every, "write a checkpoint every N steps (0: only at the end)");
    app.add_option("--resume", a.resume, "resume from a checkpoint file, or a run directory (its newest checkpoint)");
    app.add_option("--target", a.target, "held-out exact match the run reports reaching");
    app.add_flag("--no-plots", [&](std::int64_t) { a.plots = false; }, "write no plots");
    app.add_flag("--anomaly", a.anomaly, "anomaly mode: name the op whose output is NaN or whose gradient is NaN/Inf");
    app.add_flag("--require-target", a.require_target, "exit with status 3 when the target is not reached (tests)");
    app.add_flag("--smoke", a.smoke, "a few steps with a tiny model (tests)");
    app.add_flag("--distributed", a.distributed,
                 "data-parallel over MPI: run under mpirun -np N; each rank trains on its part of every batch "
                 "(on by itself when mpirun starts more than one process)");
    app.add_option("--bucket-mb", a.bucket_mb, "--distributed: MiB per gradient all-reduce bucket (smaller: more overlap "
                                               "with backward, more messages)")
        ->check(CLI::PositiveNumber);
    CLI11_PARSE(app, argc, argv);

    if (a.smoke) train::shrink_for_smoke(c);
    if (a.threads > 0) set_num_threads(a.threads);
    if (a.anomaly) detect_anomaly(true);
    c.loss = a.loss.front();
    c.loss_args.assign(a.loss.begin() + 1, a.loss.end());
    if (a.out.empty()) a.out = "runs/" + c.task;

    a.distributed = a.distributed || launched_by_mpi();
    try {
        train::Seq2SeqTrainer trainer(c);
        int rank = 0, world = 1;
#ifdef SPOOL_HAVE_DIST
        std::unique_ptr<dist::DistributedDataParallel> ddp;
        if (a.distributed) {
            dist::init(&argc, &argv);
            rank = dist::rank();
            world = dist::world_size();
        }
        if (world > 1) {  // one rank (mpirun -np 1) trains as one process
            ddp = std::make_unique<dist::DistributedDataParallel>(  // rank 0's weights everywhere
                trainer.model(), dist::DistributedDataParallelOptions{.bucket_cap_mb = a.bucket_mb});
            trainer.set_data_parallel({.rank = rank, .world = world,
                                       .sync_gradients = [&] { ddp->finish_gradient_sync(); },
                                       .sum = [](double v) {
                                           Tensor t = full({1}, v, {.dtype = DType::f64});
                                           dist::all_reduce(t);
                                           return t.item();
                                       },
                                       .barrier = [] { dist::barrier(); }});
        }
#else
        if (a.distributed)
            throw std::runtime_error("--distributed: this build has no spool_dist (Open MPI was not found when it "
                                     "was configured; see docs/distributed.md)");
#endif
        if (rank == 0)
            std::printf("spool train_seq2seq: task '%s', %lld parameters, %d threads%s, run directory %s\n",
                        c.task.c_str(), static_cast<long long>(trainer.model().num_parameters()), get_num_threads(),
                        world > 1 ? (" per rank x " + std::to_string(world) + " ranks").c_str() : "", a.out.c_str());
        auto json = config_json(a);
        json["ranks"] = world;
        const auto sum = train::run(trainer, {.out_dir = a.out, .config_json = json.dump(2), .plots = a.plots,
                                              .target = a.target, .save_every = a.save_every, .resume = a.resume});
        if (rank != 0) return 0;  // rank 0 reports (and alone evaluated)
        std::printf("done: %lld steps in %s; held-out exact match %.1f%%, token accuracy %.2f%%\n",
                    static_cast<long long>(trainer.steps_done()), train::format_duration(sum.seconds).c_str(),
                    100 * sum.last.exact, 100 * sum.last.token_acc);
        if (sum.reached_seconds >= 0)
            std::printf("target reached: held-out exact match >= %.0f%% at step %lld (%s)\n", 100 * a.target,
                        static_cast<long long>(sum.reached_step), train::format_duration(sum.reached_seconds).c_str());
        else
            std::printf("target NOT reached: held-out exact match %.1f%% < %.0f%%\n", 100 * sum.last.exact, 100 * a.target);
        std::printf("report: %s/index.html\n", a.out.c_str());
        return a.require_target && sum.reached_seconds < 0 ? 3 : 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "train_seq2seq: %s\n", e.what());
        return 1;
    }
}
