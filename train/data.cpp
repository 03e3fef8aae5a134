// CharVocab and batching (train/data.hpp).
#include "train/data.hpp"

#include <algorithm>

#include "tensor/errors.hpp"

namespace spool::train {

CharVocab::CharVocab(std::string_view chars)
{
    std::fill(std::begin(index_), std::end(index_), unk);
    for (char c : chars) {
        auto u = static_cast<unsigned char>(c);
        if (index_[u] != unk) continue;
        index_[u] = specials + static_cast<std::int64_t>(chars_.size());
        chars_.push_back(c);
    }
}

std::int64_t CharVocab::id(char c) const { return index_[static_cast<unsigned char>(c)]; }

std::vector<std::int64_t> CharVocab::encode(std::string_view s) const
{
    std::vector<std::int64_t> ids;
    ids.reserve(s.size());
    for (char c : s) ids.push_back(id(c));
    return ids;
}

std::string CharVocab::decode(const std::int64_t* ids, std::int64_t n) const
{
    std::string s;
    for (std::int64_t i = 0; i < n; ++i) {
        std::int64_t v = ids[i];
        if (v == eos) break;
        if (v == pad || v == bos) continue;
        s += (v >= specials && v < size()) ? chars_[static_cast<std::size_t>(v - specials)] : '?';
    }
    return s;
}

std::string CharVocab::symbol(std::int64_t v) const
{
    switch (v) {
    case pad: return "<pad>";
    case bos: return "<s>";
    case eos: return "</s>";
    case unk: return "<unk>";
    default: return v >= specials && v < size() ? std::string(1, chars_[static_cast<std::size_t>(v - specials)]) : "?";
    }
}

Batch make_batch(const std::vector<Example>& examples, const CharVocab& vocab)
{
    SPOOL_CHECK(!examples.empty(), ValueError, "make_batch: no examples");
    const auto N = static_cast<std::int64_t>(examples.size());
    std::int64_t S = 1, T = 1;
    bool aligned = false;
    for (const auto& e : examples) {
        S = std::max<std::int64_t>(S, static_cast<std::int64_t>(e.src.size()));
        T = std::max<std::int64_t>(T, static_cast<std::int64_t>(e.tgt.size()) + 1);  // + EOS
        aligned = aligned || !e.align.empty();
    }
    std::vector<std::int64_t> src(N * S, CharVocab::pad), tin(N * T, CharVocab::pad), tout(N * T, CharVocab::pad);
    std::vector<std::int64_t> align(aligned ? N * T : 0, -100);
    std::vector<bool> spad(N * S, true), tpad(N * T, true);
    std::int64_t tokens = 0;
    for (std::int64_t n = 0; n < N; ++n) {
        const auto& e = examples[n];
        auto s = vocab.encode(e.src), t = vocab.encode(e.tgt);
        for (std::size_t i = 0; i < s.size(); ++i) {
            src[n * S + i] = s[i];
            spad[n * S + i] = false;
        }
        // the shift: the decoder reads BOS, y1 … and must predict y1, …, EOS
        const auto L = static_cast<std::int64_t>(t.size()) + 1;
        for (std::int64_t i = 0; i < L; ++i) {
            tin[n * T + i] = i == 0 ? CharVocab::bos : t[i - 1];
            tout[n * T + i] = i + 1 == L ? CharVocab::eos : t[i];
            tpad[n * T + i] = false;
        }
        tokens += L;
        for (std::size_t i = 0; i < e.align.size() && aligned; ++i)
            if (e.align[i] >= 0) align[n * T + static_cast<std::int64_t>(i)] = e.align[i];
    }
    Batch b;
    b.src = from_vector(src, {N, S});
    b.tgt_in = from_vector(tin, {N, T});
    b.tgt_out = from_vector(tout, {N, T});
    b.src_pad = from_vector(spad, {N, S});
    b.tgt_pad = from_vector(tpad, {N, T});
    if (aligned) b.align = from_vector(align, {N, T});
    b.tokens = tokens;
    return b;
}

}  // namespace spool::train
