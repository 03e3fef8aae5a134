// W3 of ../shared/BENCHMARKS.md: greedy decoding with the standard Seq2SeqTransformer
// (d_model 256, 4 heads, 2+2 layers, ffn 1024, vocab 1000), batch 32, source 64, 64 new
// tokens; the encoder's pass is part of every decode.
//
// spool decodes through its KV cache (nn::greedy_decode). Its peer is LibTorch running the
// same algorithm (decode_torch --mode kv, beside this program when libtorch-dev was found:
// preallocated self-attention caches, the memory's keys and values once, per step only the
// new token). Before timing, decode_torch --check compares that peer's logits at every
// step with nn::TransformerDecoder re-running the whole prefix; above 1e-4 the benchmark
// fails. The re-run (decode_torch --mode rerun) stays as a second reference with fewer rounds.
//
// Each side runs in a child process of its own (spool: this program with --child spool),
// rounds interleaved A B C, C B A, ...; each child decodes --warmup times untimed, then
// --runs times timed. spool children get the environment as given minus
// OMP_WAIT_POLICY/GOMP_SPINCOUNT; LibTorch children OMP_WAIT_POLICY=passive, and at 2
// threads both "2/2" and "1/2" (ATen threads / OpenBLAS threads) — the better is the peer.
// If Debian's OpenBLAS falls back to generic kernels on this CPU ("Prescott"), or to its AVX2
// set on an AVX-512 CPU (Zen 4/5), the LibTorch children get OPENBLAS_CORETYPE naming the best
// set the CPU runs (--keep-openblas-core: leave OpenBLAS's choice).
//
// Output: JSON lines. {"bench":"machine"}, {"bench":"decode_check"}, then per thread count
// one {"bench":"decode"} per implementation and setting, and {"bench":"decode_ratio"}.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_util.hpp"
#include "bench/child.hpp"
#include "bench/decode.hpp"
#include "spool.hpp"

using namespace spool::bench;

namespace {

constexpr double kMaxLogitDiff = 1e-4;

void run_spool(const DecodeConfig& c, int threads)
{
    using namespace spool;
    set_num_threads(threads);
    manual_seed(0);
    nn::Seq2SeqTransformer model({.src_vocab = c.vocab, .tgt_vocab = c.vocab, .d_model = c.d_model, .nhead = c.heads,
                                  .num_encoder_layers = c.layers, .num_decoder_layers = c.layers,
                                  .dim_feedforward = c.ff, .dropout = 0.1, .max_len = 512});
    model.eval();
    const Tensor src = from_vector(source_ids(c), {c.src_len, c.batch});
    for (int r = 0; r < c.warmup + c.runs; ++r) {
        const double t0 = now_s();
        Tensor out = nn::greedy_decode(model, src, {},
                                       {.max_new_tokens = c.new_tokens, .bos_id = c.bos, .eos_id = -1});
        const double dt = now_s() - t0;
        SPOOL_CHECK(out.shape() == Shape({c.batch, c.new_tokens}), ValueError, "bench decode: unexpected output ",
                    to_string(out.shape()));
        if (r >= c.warmup) print_run(c, dt);
    }
}

// ---- the parent --------------------------------------------------------------------------------

struct Run {
    std::string impl;     // "spool", "libtorch_kv" or "libtorch_rerun"
    std::string setting;  // "2" for spool; "aten/blas" for LibTorch
    int rounds = 0;       // rounds it takes part in
};

struct Samples {
    std::vector<double> tokens_per_s;
    double max_rss_mib = 0;
};

std::vector<std::string> g_forward;  // dimension options, passed on to children
std::string g_self, g_peer, g_openblas_core, g_peer_core = "none";

/// One child: its RUN lines appended to out.tokens_per_s; CHECK fields to check (if given).
void run_child(const Run& r, const std::vector<std::string>& extra, Samples& out, std::vector<double>* check = nullptr)
{
    std::vector<std::string> args{r.impl == "spool" ? g_self : g_peer};
    if (r.impl == "spool") args.insert(args.end(), {"--child", "spool"});
    else if (r.impl == "libtorch_kv") args.insert(args.end(), {"--mode", "kv"});
    else if (r.impl == "libtorch_rerun") args.insert(args.end(), {"--mode", "rerun"});
    args.insert(args.end(), {"--setting", r.setting});
    args.insert(args.end(), g_forward.begin(), g_forward.end());
    args.insert(args.end(), extra.begin(), extra.end());
    const double rss = run_child_process(args, child_env(r.impl == "spool", g_openblas_core), [&](const char* line) {
        double v, a, b;
        if (std::sscanf(line, "RUN %lf", &v) == 1) {
            out.tokens_per_s.push_back(v);
        } else if (check && std::sscanf(line, "CHECK %lf %lf %lf", &v, &a, &b) == 3) {
            *check = {v, a, b};
        } else if (!read_core_line(line, g_peer_core)) {
            std::fputs(line, stderr);
        }
    });
    out.max_rss_mib = std::max(out.max_rss_mib, rss);
}

void usage()
{
    std::puts("decode [--threads 1,2] [--rounds 5] [--runs 3] [--warmup 1] [--rerun-rounds 2] [--no-peer] [--no-rerun]\n"
              "       [--keep-openblas-core] [--batch 32] [--src-len 64] [--new-tokens 64] [--quick]");
}

}  // namespace

int main(int argc, char** argv)
{
    DecodeConfig c;
    std::vector<int> thread_counts{1, 2};
    int rounds = 5, rerun_rounds = 2;
    bool peer = true, rerun = true, keep_openblas_core = false;
    std::string child, setting = "1";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&] { return next_arg(argc, argv, i, usage); };
        if (a == "--child") child = next();
        else if (a == "--setting") setting = next();
        else if (a == "--threads") thread_counts = parse_int_list(next());
        else if (a == "--rounds") rounds = std::atoi(next().c_str());
        else if (a == "--rerun-rounds") rerun_rounds = std::atoi(next().c_str());
        else if (a == "--no-peer") peer = false;
        else if (a == "--no-rerun") rerun = false;
        else if (a == "--keep-openblas-core") keep_openblas_core = true;
        else if (a == "--quick") {
            rounds = 1;
            rerun_rounds = 1;
            c.runs = 2;
        }
        else if (a == "--help" || a == "-h") {
            usage();
            return 0;
        }
        else if (!parse_decode_option(a, next, c, &g_forward)) {
            std::fprintf(stderr, "decode: unknown option %s\n", a.c_str());
            usage();
            return 2;
        }
    }
    if (!child.empty()) {  // the only child of this program is spool's side
        if (child != "spool") {
            std::fprintf(stderr, "decode: unknown child %s\n", child.c_str());
            return 2;
        }
        run_spool(c, std::atoi(setting.c_str()));
        return 0;
    }
    g_self = self_path();
    g_peer = sibling_program("decode_torch");
    peer = peer && !g_peer.empty();
    rerun = rerun && peer;
    const std::vector<std::string> runs_args{"--runs", std::to_string(c.runs), "--warmup", std::to_string(c.warmup)};
    const std::vector<std::string> rerun_args{"--runs", "1", "--warmup", "0"};  // seconds per decode: one each

    {
        Json j = machine_line("machine");
        if (peer) g_openblas_core = choose_openblas_core(j, g_peer, keep_openblas_core);
        j.num("batch", double(c.batch)).num("src_len", double(c.src_len)).num("new_tokens", double(c.new_tokens));
        j.print();
    }
    if (peer) {  // the KV peer's logits against the full re-run's, every step
        Samples unused;
        std::vector<double> chk;
        run_child({"libtorch_check", "1/1", 1}, {"--check"}, unused, &chk);
        const bool ok = chk.size() == 3 && chk[0] <= kMaxLogitDiff;
        Json j("decode_check");
        j.num("max_abs_logit_diff", chk.empty() ? NAN : chk[0]).num("tolerance", kMaxLogitDiff);
        j.num("steps", chk.empty() ? 0 : chk[1]).num("steps_argmax_equal", chk.empty() ? 0 : chk[2]);
        j.str("result", ok ? "pass" : "FAIL");
        j.print();
        if (!ok) {
            std::fprintf(stderr, "decode: LibTorch KV-cache logits differ from the full re-run's by more than %g\n",
                         kMaxLogitDiff);
            return 1;
        }
    }

    for (int t : thread_counts) {
        const std::string ts = std::to_string(t);
        std::vector<Run> runs{{"spool", ts, rounds}};
        if (peer) {
            runs.push_back({"libtorch_kv", ts + "/" + ts, rounds});
            if (t > 1) runs.push_back({"libtorch_kv", "1/" + ts, rounds});
        }
        if (rerun) {
            runs.push_back({"libtorch_rerun", ts + "/" + ts, rerun_rounds});
            if (t > 1) runs.push_back({"libtorch_rerun", "1/" + ts, rerun_rounds});
        }
        std::vector<Samples> samples(runs.size());
        for (int round = 0; round < rounds; ++round) {
            for (std::size_t k = 0; k < runs.size(); ++k) {
                const std::size_t i = round % 2 == 0 ? k : runs.size() - 1 - k;  // A B C, C B A, ...
                if (round < runs[i].rounds)
                    run_child(runs[i], runs[i].impl == "libtorch_rerun" ? rerun_args : runs_args, samples[i]);
            }
        }
        double spool_tps = 0, best_kv = 0, best_rerun = 0;
        std::string best_kv_setting, best_rerun_setting;
        for (std::size_t i = 0; i < runs.size(); ++i) {
            const Stats st = stats_of(samples[i].tokens_per_s);
            Json j("decode");
            j.str("impl", runs[i].impl).str("threads", runs[i].setting);
            j.str("kernel", runs[i].impl == "spool" ? std::string(gemm_kernel()) : "openblas " + g_peer_core);
            j.stats("tokens_per_s", st).num("samples", double(samples[i].tokens_per_s.size()));
            j.num("peak_rss_mib", samples[i].max_rss_mib);
            j.print();
            if (runs[i].impl == "spool") {
                spool_tps = st.median;
            } else if (runs[i].impl == "libtorch_kv" && st.median > best_kv) {
                best_kv = st.median;
                best_kv_setting = runs[i].setting;
            } else if (runs[i].impl == "libtorch_rerun" && st.median > best_rerun) {
                best_rerun = st.median;
                best_rerun_setting = runs[i].setting;
            }
        }
        if (peer) {
            Json j("decode_ratio");
            j.num("threads", t).str("libtorch_kv_best", best_kv_setting).num("speedup_vs_kv", spool_tps / best_kv);
            if (rerun) j.str("libtorch_rerun_best", best_rerun_setting).num("speedup_vs_rerun", spool_tps / best_rerun);
            j.num("target_vs_kv", 1.5);
            j.print();
        }
    }
    return 0;
}
