// Training a Seq2SeqTransformer on a generated task, end to end: what the flagship trainer
// (examples/train_seq2seq) runs and what tutorials 03–06 call with one setting changed.
// One step: a fresh batch from the task's training split, teacher-forced logits, the chosen
// token-level loss (+ λ · attention-alignment loss), backward, global-norm clipping, Adam,
// the schedule. Evaluation on held-out pairs: teacher-forced NLL, token accuracy, expected
// calibration error, greedy exact match, and sample greedy / beam decodes.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/seq2seq.hpp"
#include "optim/schedule.hpp"
#include "train/tasks.hpp"

namespace spool::train {

struct Seq2SeqConfig {
    std::string task = "dates";
    // model (nn::Seq2SeqOptions; source and target share one embedding, tied to the generator)
    std::int64_t d_model = 64, nhead = 4, num_layers = 2, dim_feedforward = 256;
    double dropout = 0.1;
    bool norm_first = false;  ///< post-norm, as "Attention Is All You Need"
    // optimisation
    std::int64_t steps = 3000, batch_size = 64;  ///< defaults measured: docs/train_seq2seq.md
    std::string schedule = "noam";  ///< noam | constant | cosine | linear
    double lr = 3e-3;               ///< peak learning rate (noam: its factor is set so the peak is lr)
    std::int64_t warmup = 200;      ///< warmup steps (noam, cosine, linear)
    double beta1 = 0.9, beta2 = 0.98, eps = 1e-9, weight_decay = 0;
    double clip = 1.0;              ///< global gradient-norm limit (0: off)
    std::string loss = "cross_entropy";
    std::vector<std::string> loss_args = {"label_smoothing=0.1"};  ///< key=value options of the loss
    double align_weight = 0;        ///< λ of the attention-alignment loss (last decoder layer, heads averaged)
    // evaluation
    std::int64_t eval_every = 250, eval_size = 512, show = 4, beam = 4;
    std::uint64_t seed = 1;
    std::int64_t epoch_size = 10000;  ///< examples per epoch (the data are generated: an epoch is a count)
    std::int64_t train_size = 0;      ///< a fixed training set of this many pairs, batches drawn from it (0: fresh pairs every step)
};

/// Shrinks config to a tiny model and a few steps (the examples' --smoke runs in tests).
void shrink_for_smoke(Seq2SeqConfig& config);

/// The loss spec the trainer parses: "name(k=v, …)" with ignore_index (padding_idx for
/// label_smoothing_kl) set to PAD unless given; throws ValueError for a loss that is not
/// token-level (cross_entropy, label_smoothing_kl, focal_loss, nll_loss).
std::string token_loss_spec(const std::string& name, const std::vector<std::string>& args);

struct DecodeSample {
    std::string src, ref, greedy, beam;
};

struct EvalResult {
    std::int64_t step = 0;
    double nll = 0;        ///< teacher-forced mean −log p(target) per token (no smoothing)
    double token_acc = 0;  ///< teacher-forced argmax == target, per non-padding token
    double exact = 0;      ///< greedy decode equals the reference, per sequence
    double ece = 0;        ///< expected calibration error of the token predictions, 15 bins
    std::vector<double> bin_confidence, bin_accuracy, bin_count;  ///< the reliability diagram
    std::vector<DecodeSample> samples;
};

struct StepRecord {
    std::int64_t step = 0, epoch = 0, tokens = 0;  ///< tokens: non-padding target tokens of the batch
    double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0;
    bool skipped = false;  ///< the non-finite guard dropped this update
};

/// Data parallelism as the trainer sees it: which rows of each step's batch this process
/// trains on, and how it combines gradients with the other processes. The program fills it
/// (examples/train_seq2seq with dist::DistributedDataParallel under mpirun), so train/ itself
/// needs no MPI. Every rank draws the whole batch of step k (a pure function of seed and k),
/// takes its shard_rows() and scales its loss by (its tokens × world / the batch's tokens):
/// after the ranks' gradients are averaged, the step is the one a single process takes on
/// the whole batch, for every token-mean loss, however unevenly the padding falls.
struct DataParallel {
    int rank = 0, world = 1;
    std::function<void()> sync_gradients;  ///< after backward, before clipping: average the gradients
    std::function<double(double)> sum;     ///< a number summed over the ranks (the logged loss)
    std::function<void()> barrier;         ///< every rank has arrived (around checkpoint files)
};

/// Per-step callbacks (all optional): after each step, after each evaluation.
struct TrainHooks {
    std::function<void(const StepRecord&)> on_step;
    std::function<void(const EvalResult&)> on_eval;
};

class Seq2SeqTrainer {
public:
    explicit Seq2SeqTrainer(Seq2SeqConfig config);
    ~Seq2SeqTrainer();

    /// One training step (the next batch); returns its record.
    StepRecord step();
    /// Evaluate on the held-out set (model in eval mode during it, restored after).
    EvalResult evaluate();
    /// Cross-attention of the last decoder layer (heads averaged) for one pair: [T][S].
    std::vector<std::vector<double>> attention_map(const Example& e);

    std::int64_t steps_done() const { return step_; }
    std::int64_t epoch() const
    {
        return step_ * config_.batch_size / (config_.train_size > 0 ? config_.train_size : config_.epoch_size);
    }
    double lr() const;
    const Seq2SeqConfig& config() const { return config_; }
    const Task& task() const { return *task_; }
    const std::vector<Example>& heldout() const { return heldout_; }
    nn::Seq2SeqTransformer& model();
    optim::Optimizer& optimizer();
    optim::LRScheduler& schedule();
    /// Sets the step counter after a resume (the batch of step k is a function of seed and k).
    void set_steps_done(std::int64_t step) { step_ = step; }

    /// Train as rank dp.rank of dp.world (see DataParallel). world 1: one process, as
    /// without it. Ranks other than 0 draw dropout masks from their own stream.
    void set_data_parallel(DataParallel dp);
    const DataParallel& data_parallel() const { return dp_; }
    /// Gives ranks other than 0 their own dropout stream again after the generator state was
    /// restored (a checkpoint holds rank 0's): a function of that state and the rank.
    void split_rng_by_rank();

private:
    struct State;
    Seq2SeqConfig config_;
    std::unique_ptr<Task> task_;
    std::vector<Example> heldout_;
    std::unique_ptr<State> s_;
    std::int64_t step_ = 0;
    DataParallel dp_;
};

// ---- a whole run ------------------------------------------------------------------------

struct RunOptions {
    std::string out_dir = {};       ///< run directory: metrics.csv, plots, index.html (created)
    std::string config_json = "{}"; ///< written to config.json and shown on the page
    bool plots = true;
    bool quiet = false;             ///< no progress line or evaluation lines (tutorials running many)
    double target = 0.99;           ///< held-out exact match the run reports reaching
    std::int64_t save_every = 0;    ///< checkpoint every N steps into checkpoint_dir(out_dir) (0: only at the end)
    std::string resume = {};        ///< a checkpoint file, or a directory: its newest checkpoint ("": start fresh)
};

struct RunSummary {
    EvalResult last;                ///< the final evaluation
    std::vector<EvalResult> evals;  ///< every evaluation, in order (samples kept only in last)
    double seconds = 0;             ///< wall time of the steps and evaluations
    double reached_seconds = -1;    ///< when held-out exact match first reached target (−1: never)
    std::int64_t reached_step = 0;
    std::int64_t skipped_steps = 0; ///< updates dropped by the non-finite guard
    bool diverged = false;          ///< the loss became NaN/Inf or the run was stopped for it
};

/// out_dir + "/checkpoints": where run() writes ckpt-<step>.safetensors (the newest 3 kept).
std::string checkpoint_dir(const std::string& out_dir);

/// Trains to config.steps (from a resumed step if asked), evaluating every eval_every steps,
/// with the progress line, metrics.csv, checkpoints, plots and index.html in out_dir.
/// Data-parallel (trainer.data_parallel().world > 1): every rank trains and resumes (from
/// the same checkpoint file, which every rank must see); rank 0 alone prints, evaluates and
/// writes files, and the other ranks' summaries hold no evaluation.
RunSummary run(Seq2SeqTrainer& trainer, const RunOptions& options);

/// The plots (loss, lr, accuracy, attention heatmap) from out_dir/metrics.csv and the page
/// out_dir/index.html that shows them with the config, final metrics and sample decodes.
void write_run_report(const std::string& out_dir, const std::string& config_json, Seq2SeqTrainer& trainer,
                      const RunSummary& summary, bool plots);

/// The batch of training step k (1-based): a pure function of the task, seed and k.
Batch training_batch(const Task& task, std::uint64_t seed, std::int64_t step, std::int64_t batch_size);

}  // namespace spool::train
