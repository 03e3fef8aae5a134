// W2 of ../shared/BENCHMARKS.md: one training step of the standard encoder-decoder model
// ("T-small": shared embedding x sqrt(d) + sinusoidal positions, post-norm Transformer,
// generator tied to the embedding, cross-entropy with label smoothing 0.1, Adam (0.9, 0.98,
// 1e-9) with Noam warm-up), written against spool's public API and, when built with
// libtorch-dev, the same model in LibTorch. Every dimension is an option.
//
// The parent process measures the machine's fp32 peak, then runs each configuration in a
// child process of its own (this program again, with --child), interleaving spool and
// LibTorch round by round, so each gets its own peak RSS (wait4) and neither inherits the
// other's thread pools. spool children run in the environment as given, minus
// OMP_WAIT_POLICY/GOMP_SPINCOUNT (spool's defaults are what is measured); LibTorch children
// get OMP_WAIT_POLICY=passive, its best setting on these machines, and at 2 threads both
// "2/2" and "1/2" (ATen OpenMP threads / OpenBLAS threads) — the better one is the peer.
// Debian's OpenBLAS may not know the CPU and fall back to generic kernels ("Prescott"):
// then the LibTorch children get OPENBLAS_CORETYPE naming the best kernel set the CPU runs
// (--keep-openblas-core: leave OpenBLAS's own choice). --contention runs everything a
// second time while a busy-loop process (started and killed here) competes for one core.
//
// Output: JSON lines. {"bench":"machine"} first; one {"bench":"train_step"} per
// implementation, thread setting and load; one {"bench":"train_step_ratio"} per thread
// count and load, spool's median over the best peer's.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "bench/machine.hpp"
#include "spool.hpp"

#ifdef SPOOL_HAVE_TORCH
#include <torch/torch.h>
#ifdef SPOOL_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename();
#endif
#endif

using spool::bench::now_s;

namespace {

struct Config {
    std::int64_t vocab = 1000, d_model = 256, heads = 4, layers = 2, ff = 1024;
    std::int64_t src_len = 64, tgt_len = 64, batch = 32, warmup_steps = 400;
    double dropout = 0.1, smoothing = 0.1;
    int steps = 10, warmup = 3, rounds = 3;
};

/// Matrix-multiply FLOPs of one forward pass (2 per multiply-add): projections, attention
/// scores and weighted sums, feed-forward, generator. A step is 3x: backward computes the
/// gradient of both operands of every product.
double forward_flops(const Config& c)
{
    const double D = double(c.d_model), F = double(c.ff), N = double(c.batch);
    const double S = double(c.src_len), T = double(c.tgt_len), V = double(c.vocab);
    const double enc = N * S * 2 * (4 * D * D + 2 * D * F) + 2 * 2 * N * S * S * D;
    const double dec_self = N * T * 2 * (4 * D * D) + 2 * 2 * N * T * T * D;
    const double dec_cross = N * T * 2 * (2 * D * D) + N * S * 2 * (2 * D * D) + 2 * 2 * N * T * S * D;
    const double dec_ff = N * T * 2 * (2 * D * F);
    return double(c.layers) * (enc + dec_self + dec_cross + dec_ff) + N * T * 2 * D * V;
}

/// One batch of token ids, the same for both implementations: src [S, N], tgt [T + 1, N]
/// (input is rows 0..T-1, output rows 1..T), ids in [3, vocab).
struct Batch {
    std::vector<std::int64_t> src, tgt;
};

std::vector<Batch> make_batches(const Config& c, int count)
{
    std::mt19937_64 gen(42);
    std::uniform_int_distribution<std::int64_t> id(3, c.vocab - 1);
    std::vector<Batch> out(static_cast<std::size_t>(count));
    for (auto& b : out) {
        for (std::int64_t i = 0; i < c.src_len * c.batch; ++i) b.src.push_back(id(gen));
        for (std::int64_t i = 0; i < (c.tgt_len + 1) * c.batch; ++i) b.tgt.push_back(id(gen));
    }
    return out;
}

double noam(const Config& c, int step)  // step >= 1, factor 1
{
    return std::pow(double(c.d_model), -0.5) * std::min(std::pow(step, -0.5), step * std::pow(double(c.warmup_steps), -1.5));
}

struct StepTimes {
    double fwd, bwd, opt, loss;
};

void print_step(const StepTimes& t)
{
    std::printf("STEP %.6f %.6f %.6f %.6f\n", t.fwd, t.bwd, t.opt, t.loss);
    std::fflush(stdout);
}

// ---- spool ---------------------------------------------------------------------------------------

void run_spool(const Config& c, int threads)
{
    using namespace spool;
    set_num_threads(threads);
    manual_seed(0);
    nn::Seq2SeqTransformer model({.src_vocab = c.vocab, .tgt_vocab = c.vocab, .d_model = c.d_model, .nhead = c.heads,
                                  .num_encoder_layers = c.layers, .num_decoder_layers = c.layers,
                                  .dim_feedforward = c.ff, .dropout = c.dropout, .max_len = 4096,
                                  .tie_weights = true});
    model.train();
    optim::Adam opt(model.named_parameters(), optim::AdamOptions{.lr = 1.0, .betas = {0.9, 0.98}, .eps = 1e-9});
    optim::NoamLR sched(opt, optim::NoamOptions{.d_model = c.d_model, .warmup_steps = c.warmup_steps});
    const auto batches = make_batches(c, 4);
    for (int s = 0; s < c.warmup + c.steps; ++s) {
        const Batch& b = batches[std::size_t(s) % batches.size()];
        Tensor src = from_vector(b.src, {c.src_len, c.batch});
        Tensor tgt = from_vector(b.tgt, {c.tgt_len + 1, c.batch});
        Tensor tgt_in = slice(tgt, 0, 0, c.tgt_len), tgt_out = slice(tgt, 0, 1, c.tgt_len + 1);
        StepTimes t{};
        const double t0 = now_s();
        {
            Tape tape;
            Tensor logits = model(src, tgt_in);
            Tensor loss = cross_entropy(reshape(logits, {-1, c.vocab}), reshape(tgt_out, {-1}),
                                        {.label_smoothing = c.smoothing});
            t.loss = loss.item();
            const double t1 = now_s();
            tape.backward(loss);
            const double t2 = now_s();
            t.fwd = t1 - t0;
            t.bwd = t2 - t1;
        }
        const double t3 = now_s();
        opt.step();
        sched.step();
        opt.zero_grad();
        t.opt = now_s() - t3;
        if (s >= c.warmup) print_step(t);
    }
}

// ---- LibTorch ------------------------------------------------------------------------------------

#ifdef SPOOL_HAVE_TORCH
struct TorchModel : torch::nn::Module {
    torch::nn::Embedding embed{nullptr};
    torch::nn::Transformer transformer{nullptr};
    torch::nn::Dropout drop{nullptr};
    torch::Tensor gen_bias, pe;
    double scale;

    explicit TorchModel(const Config& c) : scale(std::sqrt(double(c.d_model)))
    {
        embed = register_module("embed", torch::nn::Embedding(c.vocab, c.d_model));
        torch::NoGradGuard ng;
        embed->weight.normal_(0.0, 1.0 / scale);  // as spool's Seq2SeqTransformer
        transformer = register_module(
            "transformer", torch::nn::Transformer(torch::nn::TransformerOptions(c.d_model, c.heads)
                                                      .num_encoder_layers(c.layers)
                                                      .num_decoder_layers(c.layers)
                                                      .dim_feedforward(c.ff)
                                                      .dropout(c.dropout)));
        drop = register_module("drop", torch::nn::Dropout(c.dropout));
        gen_bias = register_parameter("gen_bias", torch::zeros({c.vocab}));
        const std::int64_t L = std::max(c.src_len, c.tgt_len);
        pe = torch::zeros({L, c.d_model});
        auto pos = torch::arange(0, L).unsqueeze(1).to(torch::kFloat);
        auto div = torch::exp(torch::arange(0, c.d_model, 2).to(torch::kFloat) * (-std::log(10000.0) / double(c.d_model)));
        using torch::indexing::None, torch::indexing::Slice;
        pe.index_put_({Slice(), Slice(0, None, 2)}, torch::sin(pos * div));
        pe.index_put_({Slice(), Slice(1, None, 2)}, torch::cos(pos * div));
        pe = pe.unsqueeze(1);
    }
    torch::Tensor embed_ids(const torch::Tensor& ids)
    {
        return drop(embed(ids) * scale + pe.slice(0, 0, ids.size(0)));
    }
    torch::Tensor forward(const torch::Tensor& src, const torch::Tensor& tgt)
    {
        auto T = tgt.size(0);
        auto mask = torch::triu(torch::full({T, T}, -INFINITY), 1);
        auto out = transformer->forward(embed_ids(src), embed_ids(tgt), torch::Tensor(), mask);
        return torch::nn::functional::linear(out, embed->weight, gen_bias);
    }
};

void run_torch(const Config& c, int aten_threads, int blas_threads)
{
    torch::set_num_threads(aten_threads);
#ifdef SPOOL_HAVE_OPENBLAS
    openblas_set_num_threads(blas_threads);  // LibTorch's GEMMs run in OpenBLAS's own pool
#else
    (void)blas_threads;
#endif
#ifdef SPOOL_HAVE_OPENBLAS
    std::printf("CORE %s\n", openblas_get_corename());
#endif
    torch::manual_seed(0);
    auto model = std::make_shared<TorchModel>(c);
    model->train();
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1.0).betas({0.9, 0.98}).eps(1e-9));
    const auto batches = make_batches(c, 4);
    namespace F = torch::nn::functional;
    for (int s = 0; s < c.warmup + c.steps; ++s) {
        for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(noam(c, s + 1));
        const Batch& b = batches[std::size_t(s) % batches.size()];
        auto src = torch::tensor(b.src, torch::kLong).view({c.src_len, c.batch});
        auto tgt = torch::tensor(b.tgt, torch::kLong).view({c.tgt_len + 1, c.batch});
        auto tgt_in = tgt.slice(0, 0, c.tgt_len), tgt_out = tgt.slice(0, 1, c.tgt_len + 1);
        StepTimes t{};
        const double t0 = now_s();
        auto logits = model->forward(src, tgt_in);
        auto loss = F::cross_entropy(logits.reshape({-1, c.vocab}), tgt_out.reshape({-1}),
                                     F::CrossEntropyFuncOptions().label_smoothing(c.smoothing));
        t.loss = loss.item<double>();
        const double t1 = now_s();
        loss.backward();
        const double t2 = now_s();
        opt.step();
        opt.zero_grad();
        const double t3 = now_s();
        t.fwd = t1 - t0;
        t.bwd = t2 - t1;
        t.opt = t3 - t2;
        if (s >= c.warmup) print_step(t);
    }
}
#endif

// ---- the parent: children, contention, statistics ---------------------------------------------------

struct Run {
    std::string impl;     // "spool" or "libtorch"
    std::string setting;  // threads: "2" for spool; "aten/blas" for LibTorch
    int threads = 1;
};

struct Samples {
    std::vector<double> step, fwd, bwd, opt, loss;
    double max_rss_mib = 0;
};

std::vector<std::string> g_forward_args;  // dimension options, passed on to children
std::string g_openblas_core;              // OPENBLAS_CORETYPE for LibTorch children ("" = OpenBLAS's choice)
std::string g_peer_core = "none";         // the kernel set the LibTorch children reported

/// Debian's OpenBLAS picks its kernels at run time and falls back to generic SSE3 code
/// ("Prescott") on CPUs newer than it knows; the peer then runs at a fraction of its speed.
/// Name the newest kernel set the CPU can run instead, so the peer is at its best.
std::string best_openblas_core(const std::string& detected)
{
    if (detected != "Prescott" && detected != "Core2" && detected != "Nehalem" && detected != "Sandybridge")
        return "";
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return "SkylakeX";
    if (__builtin_cpu_supports("avx2")) return "Haswell";
    return "";
}

/// Runs this program as a child for one configuration; appends its step times.
void run_child(const Run& r, Samples& out)
{
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("train_step: pipe failed");
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error("train_step: fork failed");
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        if (r.impl == "spool") {
            unsetenv("OMP_WAIT_POLICY");
            unsetenv("GOMP_SPINCOUNT");
        } else {
            setenv("OMP_WAIT_POLICY", "passive", 1);
            if (!g_openblas_core.empty()) setenv("OPENBLAS_CORETYPE", g_openblas_core.c_str(), 1);
        }
        std::vector<std::string> args{"/proc/self/exe", "--child", r.impl, "--setting", r.setting};
        args.insert(args.end(), g_forward_args.begin(), g_forward_args.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        execv("/proc/self/exe", argv.data());
        _exit(127);
    }
    close(fds[1]);
    FILE* in = fdopen(fds[0], "r");
    char line[512];
    while (std::fgets(line, sizeof line, in)) {
        double f, b, o, l;
        if (std::sscanf(line, "STEP %lf %lf %lf %lf", &f, &b, &o, &l) == 4) {
            out.fwd.push_back(f * 1e3);
            out.bwd.push_back(b * 1e3);
            out.opt.push_back(o * 1e3);
            out.step.push_back((f + b + o) * 1e3);
            out.loss.push_back(l);
        } else if (std::strncmp(line, "CORE ", 5) == 0) {
            g_peer_core = std::string(line + 5);
            g_peer_core.erase(g_peer_core.find_last_not_of(" \n") + 1);
        } else {
            std::fputs(line, stderr);
        }
    }
    std::fclose(in);
    int status = 0;
    rusage ru{};
    wait4(pid, &status, 0, &ru);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw std::runtime_error("train_step: child " + r.impl + " " + r.setting + " failed");
    out.max_rss_mib = std::max(out.max_rss_mib, double(ru.ru_maxrss) / 1024.0);
}

/// A process that keeps one core busy until killed.
pid_t start_competitor()
{
    const pid_t pid = fork();
    if (pid == 0) {
        volatile double x = 0;
        for (;;) x = x + 1;
    }
    return pid;
}

void stop_competitor(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
}

int parse_setting_threads(const std::string& s, int which)  // "a/b" -> a (which 0) or b
{
    const auto slash = s.find('/');
    if (slash == std::string::npos) return std::atoi(s.c_str());
    return std::atoi(which == 0 ? s.substr(0, slash).c_str() : s.substr(slash + 1).c_str());
}

std::vector<int> parse_list(const std::string& s)
{
    std::vector<int> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(std::atoi(item.c_str()));
    return out;
}

void usage()
{
    std::puts("train_step [--threads 1,2] [--steps 10] [--warmup 3] [--rounds 3] [--contention] [--no-peer]\n"
              "           [--keep-openblas-core]\n"
              "           [--vocab 1000] [--d-model 256] [--heads 4] [--layers 2] [--ff 1024] [--src-len 64]\n"
              "           [--tgt-len 64] [--batch 32] [--dropout 0.1] [--quick]");
}

}  // namespace

int main(int argc, char** argv)
{
    Config c;
    std::vector<int> thread_counts{1, 2};
    bool contention = false, peer = true, keep_openblas_core = false;
    std::string child, setting = "1";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage();
                std::exit(2);
            }
            return argv[++i];
        };
        auto dim = [&](std::int64_t& field) {
            const std::string v = next();
            field = std::atoll(v.c_str());
            g_forward_args.insert(g_forward_args.end(), {a, v});
        };
        if (a == "--child") child = next();
        else if (a == "--setting") setting = next();
        else if (a == "--threads") thread_counts = parse_list(next());
        else if (a == "--steps") c.steps = std::atoi(next().c_str());
        else if (a == "--warmup") c.warmup = std::atoi(next().c_str());
        else if (a == "--rounds") c.rounds = std::atoi(next().c_str());
        else if (a == "--contention") contention = true;
        else if (a == "--no-peer") peer = false;
        else if (a == "--keep-openblas-core") keep_openblas_core = true;
        else if (a == "--quick") {
            c.steps = 3;
            c.warmup = 1;
            c.rounds = 1;
        }
        else if (a == "--vocab") dim(c.vocab);
        else if (a == "--d-model") dim(c.d_model);
        else if (a == "--heads") dim(c.heads);
        else if (a == "--layers") dim(c.layers);
        else if (a == "--ff") dim(c.ff);
        else if (a == "--src-len") dim(c.src_len);
        else if (a == "--tgt-len") dim(c.tgt_len);
        else if (a == "--batch") dim(c.batch);
        else if (a == "--dropout") {
            const std::string v = next();
            c.dropout = std::atof(v.c_str());
            g_forward_args.insert(g_forward_args.end(), {a, v});
        }
        else if (a == "--help" || a == "-h") {
            usage();
            return 0;
        } else {
            std::fprintf(stderr, "train_step: unknown option %s\n", a.c_str());
            usage();
            return 2;
        }
    }
    // children run every step they are given; the parent decides how many
    g_forward_args.insert(g_forward_args.end(), {"--steps", std::to_string(c.steps), "--warmup", std::to_string(c.warmup)});

    if (child == "spool") {
        run_spool(c, parse_setting_threads(setting, 0));
        return 0;
    }
#ifdef SPOOL_HAVE_TORCH
    if (child == "libtorch") {
        run_torch(c, parse_setting_threads(setting, 0), parse_setting_threads(setting, 1));
        return 0;
    }
#else
    peer = false;
#endif
    if (!child.empty()) {
        std::fprintf(stderr, "train_step: unknown child %s\n", child.c_str());
        return 2;
    }

    std::map<int, double> peak;
    for (int t : thread_counts) peak[t] = spool::bench::measured_peak_gflops(t);
    const double step_gflop = 3 * forward_flops(c) / 1e9;
    {
        spool::bench::Json j("machine");
        j.str("cpu", spool::bench::cpu_model()).str("spool_kernel", spool::bench::simd_kernel());
#if defined(SPOOL_HAVE_TORCH) && defined(SPOOL_HAVE_OPENBLAS)
        j.str("openblas_detected", openblas_get_corename());
        if (peer && !keep_openblas_core) g_openblas_core = best_openblas_core(openblas_get_corename());
        j.str("openblas_coretype_set", g_openblas_core.empty() ? "no" : g_openblas_core);
#endif
        for (int t : thread_counts) j.num(("peak_gflops_" + std::to_string(t)).c_str(), peak[t]);
        j.num("step_gflop", step_gflop).num("tokens_per_step", double(c.batch * c.tgt_len));
        j.print();
    }

    std::vector<bool> loads{false};
    if (contention) loads.push_back(true);
    for (bool contended : loads) {
        for (int t : thread_counts) {
            std::vector<Run> runs{{"spool", std::to_string(t), t}};
            if (peer) {
                runs.push_back({"libtorch", std::to_string(t) + "/" + std::to_string(t), t});
                if (t > 1) runs.push_back({"libtorch", "1/" + std::to_string(t), t});
            }
            std::vector<Samples> samples(runs.size());
            const pid_t competitor = contended ? start_competitor() : 0;
            for (int round = 0; round < c.rounds; ++round) {
                for (std::size_t k = 0; k < runs.size(); ++k) {
                    const std::size_t i = round % 2 == 0 ? k : runs.size() - 1 - k;  // A B C, C B A, ...
                    run_child(runs[i], samples[i]);
                }
            }
            if (contended) stop_competitor(competitor);
            double spool_ms = 0, spool_rss = 0, best_ms = INFINITY, best_rss = 0;
            std::string best_setting;
            for (std::size_t i = 0; i < runs.size(); ++i) {
                using spool::bench::stats_of;
                const auto st = stats_of(samples[i].step);
                spool::bench::Json j("train_step");
                j.str("impl", runs[i].impl).str("threads", runs[i].setting).str("load", contended ? "contended" : "idle");
                j.str("kernel", runs[i].impl == "spool" ? spool::bench::simd_kernel() : "openblas " + g_peer_core);
                j.stats("ms", st);
                j.num("tokens_per_s", double(c.batch * c.tgt_len) / (st.median / 1e3));
                const double gflops = step_gflop / (st.median / 1e3);
                j.num("gflops", gflops).num("peak_fraction", gflops / peak[t]);
                j.num("fwd_ms", stats_of(samples[i].fwd).median).num("bwd_ms", stats_of(samples[i].bwd).median);
                j.num("opt_ms", stats_of(samples[i].opt).median);
                j.num("first_loss", samples[i].loss.empty() ? 0 : samples[i].loss.front());
                j.num("peak_rss_mib", samples[i].max_rss_mib).num("steps", double(samples[i].step.size()));
                j.print();
                if (runs[i].impl == "spool") {
                    spool_ms = st.median;
                    spool_rss = samples[i].max_rss_mib;
                } else if (st.median < best_ms) {
                    best_ms = st.median;
                    best_rss = samples[i].max_rss_mib;
                    best_setting = runs[i].setting;
                }
            }
            if (peer) {
                spool::bench::Json j("train_step_ratio");
                j.num("threads", t).str("load", contended ? "contended" : "idle").str("libtorch_best", best_setting);
                j.num("time_ratio", spool_ms / best_ms).num("rss_ratio", spool_rss / best_rss);
                j.print();
            }
        }
    }
    return 0;
}
