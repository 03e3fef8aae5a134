// CharVocab and batching (train/data.hpp).
#include "train/data.hpp"

#include <algorithm>
#include <numeric>
#include <random>

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

RowRange shard_rows(std::int64_t n, int rank, int world)
{
    SPOOL_CHECK(world >= 1 && rank >= 0 && rank < world && n >= 0, ValueError, "shard_rows: rank ", rank,
                " of world ", world, " over ", n, " rows: need 0 <= rank < world and n >= 0");
    const std::int64_t base = n / world, extra = n % world, r = rank;
    const std::int64_t begin = r * base + std::min(r, extra);
    return {begin, begin + base + (r < extra ? 1 : 0)};
}

DistributedSampler::DistributedSampler(std::int64_t size, DistributedSamplerOptions o) : size_(size), o_(o)
{
    SPOOL_CHECK(o.world >= 1 && o.rank >= 0 && o.rank < o.world, ValueError, "DistributedSampler: rank ", o.rank,
                " of world ", o.world, ": need 0 <= rank < world");
    SPOOL_CHECK(size >= 0, ValueError, "DistributedSampler: size must be >= 0; got ", size);
    SPOOL_CHECK(!o.drop_last || size >= o.world, ValueError, "DistributedSampler: drop_last with ", size,
                " examples over ", o.world, " ranks leaves none for some rank");
    // drop_last drops the tail that does not fill a round of world; otherwise pad to one
    num_samples_ = o.drop_last && size % o.world != 0 ? (size - o.world + o.world - 1) / o.world
                                                       : (size + o.world - 1) / o.world;
}

std::vector<std::int64_t> DistributedSampler::indices() const
{
    std::vector<std::int64_t> order(static_cast<std::size_t>(size_));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    if (o_.shuffle) {
        // Fisher–Yates with an exact, platform-independent draw in [0, i]
        std::mt19937_64 gen(o_.seed + static_cast<std::uint64_t>(epoch_));
        for (std::size_t i = order.size(); i > 1; --i) {
            const auto j = static_cast<std::size_t>((static_cast<unsigned __int128>(gen()) * i) >> 64);
            std::swap(order[i - 1], order[j]);
        }
    }
    const std::int64_t total = num_samples_ * o_.world;
    std::vector<std::int64_t> mine;
    mine.reserve(static_cast<std::size_t>(num_samples_));
    // position p of the padded (or cut) order is order[p % size]: padding repeats from the start
    for (std::int64_t p = o_.rank; p < total; p += o_.world) mine.push_back(order[static_cast<std::size_t>(p % size_)]);
    return mine;
}

}  // namespace spool::train
