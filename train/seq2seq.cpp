// Seq2SeqTrainer (train/seq2seq.hpp). Letters: N batch, S source length, T target length,
// V vocabulary.
#include "train/seq2seq.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "autograd/ops.hpp"
#include "autograd/tape.hpp"
#include "losses/loss.hpp"
#include "losses/registry.hpp"
#include "nn/decoding.hpp"
#include "optim/adam.hpp"
#include "optim/clip.hpp"
#include "tensor/errors.hpp"
#include "tensor/random.hpp"

namespace spool::train {
namespace {

// the seed of step k's batch: decorrelated from the neighbouring steps' and from other seeds
std::uint64_t step_seed(std::uint64_t seed, std::int64_t step)
{
    return mix64(seed * 0x100000001b3ULL + static_cast<std::uint64_t>(step));
}

nn::Seq2SeqArgs masks_of(const Batch& b, bool need_weights)
{
    return {.src_key_padding_mask = b.src_pad,
            .tgt_key_padding_mask = b.tgt_pad,
            .memory_key_padding_mask = b.src_pad,
            .need_weights = need_weights};
}

constexpr int ece_bins = 15;

}  // namespace

void shrink_for_smoke(Seq2SeqConfig& c)
{
    c.steps = 6;
    c.batch_size = 8;
    c.d_model = 32;
    c.nhead = 2;
    c.num_layers = 1;
    c.dim_feedforward = 64;
    c.eval_every = 3;
    c.eval_size = 16;
    c.show = 2;
    c.beam = 2;
    c.warmup = 2;
    if (c.train_size > 0) c.train_size = 32;
}

std::string token_loss_spec(const std::string& name, const std::vector<std::string>& args)
{
    const char* pad_key = nullptr;
    if (name == "cross_entropy" || name == "focal_loss" || name == "nll_loss") pad_key = "ignore_index";
    else if (name == "label_smoothing_kl") pad_key = "padding_idx";
    SPOOL_CHECK(pad_key, ValueError, "--loss: '", name,
                "' is not a token-level loss; choose cross_entropy, label_smoothing_kl, focal_loss or nll_loss");
    std::string spec = name + "(";
    bool has_pad = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        SPOOL_CHECK(args[i].find('=') != std::string::npos, ValueError, "--loss: option '", args[i],
                    "' is not key=value");
        has_pad = has_pad || args[i].rfind(std::string(pad_key) + "=", 0) == 0;
        spec += (i ? ", " : "") + args[i];
    }
    if (!has_pad) spec += std::string(args.empty() ? "" : ", ") + pad_key + "=" + std::to_string(CharVocab::pad);
    return spec + ")";
}

Batch training_batch(const Task& task, std::uint64_t seed, std::int64_t step, std::int64_t batch_size)
{
    return make_batch(sample_set(task, batch_size, step_seed(seed, step),
                                 Split::train),
                      task.vocab());
}

namespace {
// The pairs of step k from a fixed training set: batch_size pairs drawn with replacement.
std::vector<Example> pool_examples(const std::vector<Example>& pool, std::uint64_t seed, std::int64_t step,
                                   std::int64_t batch_size)
{
    std::mt19937_64 rng(step_seed(seed, step));
    std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
    std::vector<Example> part;
    for (std::int64_t i = 0; i < batch_size; ++i) part.push_back(pool[pick(rng)]);
    return part;
}

// non-padding target tokens of the pairs: what make_batch counts (one id per character + EOS)
std::int64_t target_tokens(const std::vector<Example>& ex)
{
    std::int64_t n = 0;
    for (const Example& e : ex) n += static_cast<std::int64_t>(e.tgt.size()) + 1;
    return n;
}
}  // namespace

struct Seq2SeqTrainer::State {
    std::shared_ptr<nn::Seq2SeqTransformer> model;
    std::unique_ptr<optim::Adam> opt;
    std::unique_ptr<optim::LRScheduler> sched;
    std::unique_ptr<losses::Loss> loss;
    bool log_probs = false;  // nll_loss wants log-probabilities
    std::unique_ptr<losses::AttentionAlignmentLoss> align;
    std::vector<Tensor> params;
    std::vector<Example> pool;  // the fixed training set (config.train_size > 0)
};

Seq2SeqTrainer::Seq2SeqTrainer(Seq2SeqConfig c) : config_(std::move(c)), task_(make_task(config_.task)), s_(new State)
{
    const auto& C = config_;
    SPOOL_CHECK(C.steps > 0 && C.batch_size > 0 && C.eval_size > 0 && C.lr > 0, ValueError,
                "Seq2SeqTrainer: steps, batch_size, eval_size and lr must be > 0; got ", C.steps, ", ", C.batch_size,
                ", ", C.eval_size, ", ", C.lr);
    SPOOL_CHECK(C.align_weight >= 0, ValueError, "Seq2SeqTrainer: align_weight must be >= 0; got ", C.align_weight);
    manual_seed(C.seed);
    const std::int64_t V = task_->vocab().size();
    s_->model = std::make_shared<nn::Seq2SeqTransformer>(nn::Seq2SeqOptions{
        .src_vocab = V, .tgt_vocab = V, .d_model = C.d_model, .nhead = C.nhead,
        .num_encoder_layers = C.num_layers, .num_decoder_layers = C.num_layers,
        .dim_feedforward = C.dim_feedforward, .dropout = C.dropout, .batch_first = true,
        .norm_first = C.norm_first, .max_len = 512, .tie_weights = true, .padding_idx = CharVocab::pad});
    s_->params = s_->model->parameters();
    s_->opt = std::make_unique<optim::Adam>(s_->model->named_parameters(),
                                            optim::AdamOptions{.lr = C.lr, .betas = {C.beta1, C.beta2}, .eps = C.eps,
                                                               .weight_decay = C.weight_decay});
    // a step whose gradients are not finite is dropped, not applied (and reported)
    s_->opt->skip_nonfinite(true);
    if (C.schedule == "noam") {
        const double factor = C.lr / optim::noam_rate(std::max<std::int64_t>(C.warmup, 1), C.d_model,
                                                      std::max<std::int64_t>(C.warmup, 1));
        s_->sched = std::make_unique<optim::NoamLR>(
            *s_->opt, optim::NoamOptions{.d_model = C.d_model, .warmup_steps = std::max<std::int64_t>(C.warmup, 1), .factor = factor});
    } else if (C.schedule == "constant") {
        s_->sched = std::make_unique<optim::LambdaLR>(*s_->opt, [](std::int64_t) { return 1.0; });
    } else if (C.schedule == "cosine" || C.schedule == "linear") {
        s_->sched = std::make_unique<optim::WarmupLR>(
            *s_->opt, optim::WarmupOptions{.warmup_steps = C.warmup, .total_steps = C.steps,
                                           .decay = C.schedule == "cosine" ? optim::Decay::cosine : optim::Decay::linear});
    } else {
        throw ValueError(detail::cat("Seq2SeqTrainer: unknown schedule '", C.schedule,
                                     "'; choose noam, constant, cosine or linear"));
    }
    s_->loss = losses::parse(token_loss_spec(C.loss, C.loss_args));
    s_->log_probs = C.loss == "nll_loss";
    if (C.align_weight > 0) s_->align = std::make_unique<losses::AttentionAlignmentLoss>();
    // held-out pairs: a fixed set from the reserved part of the task's space
    heldout_ = sample_set(*task_, C.eval_size, mix64(C.seed ^ 0x5eed5eedULL), Split::heldout);
    if (C.train_size > 0) s_->pool = sample_set(*task_, C.train_size, mix64(C.seed ^ 0x7a1175e7ULL), Split::train);
}

Seq2SeqTrainer::~Seq2SeqTrainer() = default;

nn::Seq2SeqTransformer& Seq2SeqTrainer::model() { return *s_->model; }
optim::Optimizer& Seq2SeqTrainer::optimizer() { return *s_->opt; }
optim::LRScheduler& Seq2SeqTrainer::schedule() { return *s_->sched; }
double Seq2SeqTrainer::lr() const { return s_->opt->lr(0); }

void Seq2SeqTrainer::set_data_parallel(DataParallel dp)
{
    SPOOL_CHECK(dp.world >= 1 && dp.rank >= 0 && dp.rank < dp.world, ValueError,
                "Seq2SeqTrainer::set_data_parallel: rank ", dp.rank, " of world ", dp.world,
                ": need 0 <= rank < world");
    SPOOL_CHECK(dp.world == 1 || (dp.sync_gradients && dp.sum && dp.barrier), ValueError,
                "Seq2SeqTrainer::set_data_parallel: world ", dp.world, " needs sync_gradients, sum and barrier");
    SPOOL_CHECK(dp.world <= config_.batch_size, ValueError, "Seq2SeqTrainer::set_data_parallel: batch_size ",
                config_.batch_size, " is smaller than the ", dp.world, " ranks: every rank needs a row");
    dp_ = std::move(dp);
    split_rng_by_rank();
}

void Seq2SeqTrainer::split_rng_by_rank()
{
    if (dp_.rank == 0) return;  // rank 0 keeps the stream a single process would draw
    const RngState st = get_rng_state();
    set_rng_state({mix64(st.seed ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(dp_.rank))), st.offset});
}

StepRecord Seq2SeqTrainer::step()
{
    StepRecord r;
    r.step = ++step_;
    r.epoch = epoch();
    r.lr = s_->opt->lr(0);
    std::vector<Example> pairs = s_->pool.empty()
                                     ? sample_set(*task_, config_.batch_size, step_seed(config_.seed, step_), Split::train)
                                     : pool_examples(s_->pool, config_.seed, step_, config_.batch_size);
    std::int64_t all = 0;  // the whole batch's tokens (data-parallel)
    if (dp_.world > 1) {
        const RowRange rows = shard_rows(config_.batch_size, dp_.rank, dp_.world);
        SPOOL_CHECK(rows.end > rows.begin, ValueError, "Seq2SeqTrainer: batch_size ", config_.batch_size,
                    " leaves rank ", dp_.rank, " of ", dp_.world, " no rows; use a batch of at least one row per rank");
        all = target_tokens(pairs);
        pairs = std::vector<Example>(pairs.begin() + rows.begin, pairs.begin() + rows.end);
    }
    Batch b = make_batch(pairs, task_->vocab());
    r.tokens = dp_.world > 1 ? all : b.tokens;
    // data-parallel: this rank's loss weighted so that the ranks' average is the whole batch's
    const double weight = dp_.world > 1 ? static_cast<double>(b.tokens) * dp_.world / static_cast<double>(all) : 1;
    const std::int64_t N = b.tgt_out.size(0), T = b.tgt_out.size(1);
    auto& model = *s_->model;
    model.train();
    {
        Tape tape;
        Tensor logits, attn;
        if (s_->align) {
            auto out = model.forward_with_attention(b.src, b.tgt_in, masks_of(b, true));
            logits = out.logits;
            attn = out.cross_attention.back();  // [N, T, S], heads averaged
        } else {
            logits = model(b.src, b.tgt_in, masks_of(b, false));
        }
        Tensor flat = reshape(logits, {N * T, logits.size(2)});
        if (s_->log_probs) flat = log_softmax(flat, -1);
        Tensor loss = (*s_->loss)(flat, reshape(b.tgt_out, {N * T}));
        if (weight != 1) loss = loss * weight;
        Tensor total = loss;
        if (s_->align && b.align.defined()) total = loss + (*s_->align)(attn, b.align) * config_.align_weight;
        r.loss = loss.item();
        tape.backward(total);
    }
    if (dp_.world > 1) {
        dp_.sync_gradients();
        r.loss = dp_.sum(r.loss) / dp_.world;  // the whole batch's token mean
    }
    // clip_grad_norm returns the norm before clipping; max_norm inf only measures it
    r.grad_norm = optim::clip_grad_norm(s_->params, config_.clip > 0 ? config_.clip : INFINITY);
    r.skipped = !s_->opt->step();
    s_->sched->step();
    s_->opt->zero_grad();
    return r;
}

EvalResult Seq2SeqTrainer::evaluate()
{
    auto& model = *s_->model;
    const bool was_training = model.is_training();
    model.eval();
    NoGrad no_grad;
    const auto& vocab = task_->vocab();
    EvalResult r;
    r.step = step_;
    double nll = 0;
    std::int64_t tokens = 0, correct = 0, exact = 0;
    std::vector<double> conf(ece_bins, 0), acc(ece_bins, 0), count(ece_bins, 0);
    const std::size_t chunk = 256;
    for (std::size_t first = 0; first < heldout_.size(); first += chunk) {
        std::vector<Example> part(heldout_.begin() + static_cast<std::ptrdiff_t>(first),
                                  heldout_.begin() + static_cast<std::ptrdiff_t>(std::min(first + chunk, heldout_.size())));
        Batch b = make_batch(part, vocab);
        const std::int64_t N = b.tgt_out.size(0), T = b.tgt_out.size(1);
        Tensor lp = log_softmax(model(b.src, b.tgt_in, masks_of(b, false)), -1);  // [N, T, V]
        const std::int64_t V = lp.size(2);
        const float* p = std::as_const(lp).data<float>();
        const std::int64_t* y = std::as_const(b.tgt_out).data<std::int64_t>();
        for (std::int64_t i = 0; i < N * T; ++i) {
            if (y[i] == CharVocab::pad) continue;
            const float* row = p + i * V;
            const std::int64_t pred = std::max_element(row, row + V) - row;
            const double c = std::exp(static_cast<double>(row[pred]));
            const bool ok = pred == y[i];
            nll -= row[y[i]];
            ++tokens;
            correct += ok;
            const int bin = std::min(ece_bins - 1, static_cast<int>(c * ece_bins));
            conf[bin] += c;
            acc[bin] += ok;
            count[bin] += 1;
        }
        nn::GenerationOptions g{.max_new_tokens = T + 2, .bos_id = CharVocab::bos, .eos_id = CharVocab::eos,
                                .pad_id = CharVocab::pad};
        Tensor out = nn::greedy_decode(model, b.src, b.src_pad, g);
        const std::int64_t L = out.size(1);
        for (std::int64_t n = 0; n < N; ++n)
            exact += vocab.decode(std::as_const(out).data<std::int64_t>() + n * L, L) == part[static_cast<std::size_t>(n)].tgt;
    }
    r.nll = nll / static_cast<double>(std::max<std::int64_t>(tokens, 1));
    r.token_acc = static_cast<double>(correct) / static_cast<double>(std::max<std::int64_t>(tokens, 1));
    r.exact = static_cast<double>(exact) / static_cast<double>(heldout_.size());
    for (int k = 0; k < ece_bins; ++k) {
        if (count[k] > 0) r.ece += std::abs(conf[k] - acc[k]) / static_cast<double>(tokens);
        r.bin_confidence.push_back(count[k] > 0 ? conf[k] / count[k] : NAN);
        r.bin_accuracy.push_back(count[k] > 0 ? acc[k] / count[k] : NAN);
        r.bin_count.push_back(count[k]);
    }
    // a few held-out pairs decoded greedily and with beam search, beside the reference
    const auto show = static_cast<std::size_t>(std::clamp<std::int64_t>(config_.show, 0, config_.eval_size));
    if (show > 0) {
        std::vector<Example> part(heldout_.begin(), heldout_.begin() + static_cast<std::ptrdiff_t>(show));
        Batch b = make_batch(part, vocab);
        nn::GenerationOptions g{.max_new_tokens = b.tgt_out.size(1) + 2, .bos_id = CharVocab::bos,
                                .eos_id = CharVocab::eos, .pad_id = CharVocab::pad};
        Tensor greedy = nn::greedy_decode(model, b.src, b.src_pad, g);
        g.beam_width = std::max<std::int64_t>(config_.beam, 1);
        Tensor beam = nn::beam_search(model, b.src, b.src_pad, g);
        for (std::size_t n = 0; n < show; ++n) {
            const auto i = static_cast<std::int64_t>(n);
            r.samples.push_back({part[n].src, part[n].tgt,
                                 vocab.decode(std::as_const(greedy).data<std::int64_t>() + i * greedy.size(1), greedy.size(1)),
                                 vocab.decode(std::as_const(beam).data<std::int64_t>() + i * beam.size(1), beam.size(1))});
        }
    }
    model.train(was_training);
    return r;
}

std::vector<std::vector<double>> Seq2SeqTrainer::attention_map(const Example& e)
{
    auto& model = *s_->model;
    const bool was_training = model.is_training();
    model.eval();
    NoGrad no_grad;
    Batch b = make_batch({e}, task_->vocab());
    auto out = model.forward_with_attention(b.src, b.tgt_in, masks_of(b, true));
    Tensor a = out.cross_attention.back();  // [1, T, S]
    model.train(was_training);
    std::vector<std::vector<double>> m(static_cast<std::size_t>(a.size(1)), std::vector<double>(static_cast<std::size_t>(a.size(2))));
    for (std::int64_t t = 0; t < a.size(1); ++t)
        for (std::int64_t s = 0; s < a.size(2); ++s) m[t][s] = a.at({0, t, s});
    return m;
}

}  // namespace spool::train
