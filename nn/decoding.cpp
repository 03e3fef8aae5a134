#include "nn/decoding.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/ops.hpp"
#include "autograd/tape.hpp"

namespace spool::nn {

namespace {

void check_generation(const GenerationOptions& o, const char* who)
{
    SPOOL_CHECK(o.max_new_tokens >= 0, ValueError, who, ": max_new_tokens must be >= 0; got ", o.max_new_tokens);
    SPOOL_CHECK(o.beam_width >= 1, ValueError, who, ": beam_width must be >= 1; got ", o.beam_width);
}

/// ids of one step as the model's layout wants them: [1, N] seq-first or [N, 1] batch-first.
Tensor step_ids(const std::vector<std::int64_t>& ids, bool batch_first)
{
    const auto n = static_cast<std::int64_t>(ids.size());
    return from_vector(ids, batch_first ? Shape{n, 1} : Shape{1, n});
}

std::int64_t batch_of(const Tensor& ids, bool batch_first) { return ids.shape()[batch_first ? 0 : 1]; }

/// Rows of a [N, steps] result, padded with pad_id.
Tensor pack(const std::vector<std::vector<std::int64_t>>& rows, std::int64_t pad)
{
    std::size_t T = 0;
    for (const auto& r : rows) T = std::max(T, r.size());
    std::vector<std::int64_t> flat;
    for (const auto& r : rows) {
        flat.insert(flat.end(), r.begin(), r.end());
        flat.insert(flat.end(), T - r.size(), pad);
    }
    return from_vector(flat, {static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(T)});
}

}  // namespace

Tensor greedy_decode(const Seq2SeqTransformer& model, const Tensor& src, const Tensor& src_key_padding_mask,
                     const GenerationOptions& o)
{
    check_generation(o, "greedy_decode");
    NoGrad no_grad;
    const bool bf = model.options.batch_first;
    const std::int64_t N = batch_of(src, bf);
    Tensor memory = model.encode(src, src_key_padding_mask);
    std::vector<DecoderLayerCache> caches;
    std::vector<std::int64_t> cur(N, o.bos_id);
    std::vector<std::vector<std::int64_t>> out(N);
    std::vector<bool> done(N, false);
    for (std::int64_t t = 0; t < o.max_new_tokens; ++t) {
        Tensor logits = model.decode_step(step_ids(cur, bf), memory, caches, t, src_key_padding_mask);
        Tensor next = argmax(logits, -1);
        bool all = true;
        for (std::int64_t n = 0; n < N; ++n) {
            if (done[n]) {
                cur[n] = o.pad_id;
                continue;
            }
            cur[n] = static_cast<std::int64_t>(next.at(n));
            out[n].push_back(cur[n]);
            done[n] = cur[n] == o.eos_id;
            all = all && done[n];
        }
        if (all) break;
    }
    return pack(out, o.pad_id);
}

Tensor beam_search(const Seq2SeqTransformer& model, const Tensor& src, const Tensor& src_key_padding_mask,
                   const GenerationOptions& o)
{
    check_generation(o, "beam_search");
    NoGrad no_grad;
    const bool bf = model.options.batch_first;
    const std::int64_t N = batch_of(src, bf), K = o.beam_width;
    const double ninf = -std::numeric_limits<double>::infinity();

    // every row's memory repeated K times: beam k of row n is batch entry n * K + k
    std::vector<std::int64_t> rep;
    for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t k = 0; k < K; ++k) rep.push_back(n);
    Tensor rep_idx = from_vector(rep, {N * K});
    Tensor memory = index_select(model.encode(src, src_key_padding_mask), bf ? 0 : 1, rep_idx);
    Tensor mask = src_key_padding_mask.defined() ? index_select(src_key_padding_mask, 0, rep_idx) : Tensor();

    struct Hyp {
        std::vector<std::int64_t> tokens;
        double score;
    };
    std::vector<std::vector<Hyp>> finished(N);
    std::vector<std::vector<std::int64_t>> beams(N * K);
    std::vector<double> scores(N * K, 0.0);
    for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t k = 1; k < K; ++k) scores[n * K + k] = ninf;  // start from one beam per row
    std::vector<bool> row_done(N, false);
    auto normalized = [&](double s, std::size_t len) {
        return s / std::pow(static_cast<double>(std::max<std::size_t>(len, 1)), o.length_penalty);
    };

    std::vector<DecoderLayerCache> caches;
    std::vector<std::int64_t> cur(N * K, o.bos_id);
    for (std::int64_t t = 0; t < o.max_new_tokens; ++t) {
        Tensor logp = log_softmax(model.decode_step(step_ids(cur, bf), memory, caches, t, mask), -1);  // [N*K, V]
        const std::int64_t V = logp.shape()[1];
        const double* lp = nullptr;
        Tensor lp64 = to(logp, f64);
        lp = lp64.data<double>();
        std::vector<std::int64_t> parent(N * K), token(N * K);
        std::vector<double> new_scores(N * K, ninf);
        for (std::int64_t n = 0; n < N; ++n) {
            if (row_done[n]) {  // keep feeding padding; scores stay -inf
                for (std::int64_t k = 0; k < K; ++k) parent[n * K + k] = n * K + k, token[n * K + k] = o.pad_id;
                continue;
            }
            // the 2K best continuations over all K beams x V tokens
            std::vector<std::pair<double, std::int64_t>> cand;
            cand.reserve(K * V);
            for (std::int64_t k = 0; k < K; ++k) {
                double base = scores[n * K + k];
                if (base == ninf) continue;
                for (std::int64_t v = 0; v < V; ++v) cand.emplace_back(base + lp[(n * K + k) * V + v], k * V + v);
            }
            const std::size_t keep = std::min<std::size_t>(2 * K, cand.size());
            std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(),
                              [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
            std::int64_t filled = 0;
            for (std::size_t r = 0; r < keep && filled < K; ++r) {
                const std::int64_t k = cand[r].second / V, v = cand[r].second % V;
                const auto& prefix = beams[n * K + k];
                if (v == o.eos_id) {
                    // an ended hypothesis counts only if it ranks among the K best
                    if (static_cast<std::int64_t>(r) < K) {
                        auto toks = prefix;
                        toks.push_back(v);
                        finished[n].push_back({toks, normalized(cand[r].first, toks.size())});
                    }
                    continue;
                }
                parent[n * K + filled] = n * K + k;
                token[n * K + filled] = v;
                new_scores[n * K + filled] = cand[r].first;
                ++filled;
            }
            for (std::int64_t k = filled; k < K; ++k) parent[n * K + k] = n * K, token[n * K + k] = o.pad_id;
            if (static_cast<std::int64_t>(finished[n].size()) >= K) row_done[n] = true;
        }
        // reorder beams and their self-attention caches by parent
        std::vector<std::vector<std::int64_t>> next_beams(N * K);
        for (std::int64_t b = 0; b < N * K; ++b) {
            next_beams[b] = beams[parent[b]];
            if (new_scores[b] != ninf) next_beams[b].push_back(token[b]);
        }
        beams = std::move(next_beams);
        scores = new_scores;
        Tensor pidx = from_vector(parent, {N * K});
        for (auto& c : caches) {
            c.self.k = index_select(c.self.k, 0, pidx);
            c.self.v = index_select(c.self.v, 0, pidx);
        }
        cur = token;
        if (std::all_of(row_done.begin(), row_done.end(), [](bool d) { return d; })) break;
    }
    std::vector<std::vector<std::int64_t>> out(N);
    for (std::int64_t n = 0; n < N; ++n) {
        // rows that never finished K hypotheses: their live beams compete too
        for (std::int64_t k = 0; k < K && static_cast<std::int64_t>(finished[n].size()) < K; ++k)
            if (scores[n * K + k] != ninf) finished[n].push_back({beams[n * K + k], normalized(scores[n * K + k], beams[n * K + k].size())});
        auto best = std::max_element(finished[n].begin(), finished[n].end(),
                                     [](const Hyp& a, const Hyp& b) { return a.score < b.score; });
        if (best != finished[n].end()) out[n] = best->tokens;
    }
    return pack(out, o.pad_id);
}

Tensor generate(const TransformerLM& model, const Tensor& prompt, const GenerationOptions& o)
{
    check_generation(o, "generate");
    NoGrad no_grad;
    const bool bf = model.options.batch_first;
    const std::int64_t N = batch_of(prompt, bf), P = prompt.shape()[bf ? 1 : 0];
    SPOOL_CHECK(P >= 1, ValueError, "generate: the prompt must hold at least one token");
    std::vector<KVCache> caches;
    Tensor logits = model.step(prompt, caches, 0);  // the whole prompt in one step
    std::vector<std::vector<std::int64_t>> out(N);
    std::vector<bool> done(N, false);
    for (std::int64_t t = 0; t < o.max_new_tokens; ++t) {
        Tensor next = argmax(logits, -1);
        std::vector<std::int64_t> cur(N);
        bool all = true;
        for (std::int64_t n = 0; n < N; ++n) {
            cur[n] = done[n] ? o.pad_id : static_cast<std::int64_t>(next.at(n));
            if (!done[n]) out[n].push_back(cur[n]);
            done[n] = done[n] || cur[n] == o.eos_id;
            all = all && done[n];
        }
        if (all || t + 1 == o.max_new_tokens) break;
        logits = model.step(step_ids(cur, bf), caches, P + t);
    }
    return pack(out, o.pad_id);
}

}  // namespace spool::nn
