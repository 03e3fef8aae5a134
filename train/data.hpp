// Data for the tutorials and the flagship trainer: a character vocabulary with the special
// ids every seq2seq program needs (PAD 0, BOS 1, EOS 2, UNK 3), string pairs with optional
// source alignments, and batching into padded int64 tensors with the target shifted by one
// (tgt_in = BOS + y, tgt_out = y + EOS). Tasks that generate pairs are in train/tasks.hpp.
// Layout is batch-first: src [N, S], tgt_in/tgt_out [N, T]; masks are true at padding.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/tensor.hpp"

namespace spool::train {

class CharVocab {
public:
    static constexpr std::int64_t pad = 0, bos = 1, eos = 2, unk = 3, specials = 4;
    /// The symbols after the four specials, one per distinct character of `chars`.
    explicit CharVocab(std::string_view chars);
    std::int64_t size() const { return specials + static_cast<std::int64_t>(chars_.size()); }
    std::int64_t id(char c) const;
    /// Ids of s (unknown characters become unk), without BOS/EOS.
    std::vector<std::int64_t> encode(std::string_view s) const;
    /// Text of ids up to the first EOS, skipping PAD and BOS; unk shows as '?'.
    std::string decode(const std::int64_t* ids, std::int64_t n) const;
    /// A printable name of one id ("<pad>", "<s>", "</s>", "<unk>" or the character).
    std::string symbol(std::int64_t id) const;
    const std::string& chars() const { return chars_; }

private:
    std::string chars_;
    std::int64_t index_[256];
};

/// One training pair. align[t] (optional, one per target character) is the source
/// character the t-th target character is read from, or -1 where there is none.
struct Example {
    std::string src, tgt;
    std::vector<std::int64_t> align;
};

struct Batch {
    Tensor src;       ///< int64 [N, S]
    Tensor tgt_in;    ///< int64 [N, T]: BOS, y_1 … y_{T-1}
    Tensor tgt_out;   ///< int64 [N, T]: y_1 … y_{T-1}, EOS (PAD after)
    Tensor src_pad;   ///< bool [N, S], true at padding
    Tensor tgt_pad;   ///< bool [N, T]
    Tensor align;     ///< int64 [N, T]: aligned source index or ignore (-100); undefined if no example has one
    std::int64_t tokens = 0;  ///< non-padding target tokens (tgt_out's, EOS included)
};

/// Pads and shifts a batch of pairs (see Batch).
Batch make_batch(const std::vector<Example>& examples, const CharVocab& vocab);

/// Rows [begin, end) of n that rank `rank` of `world` takes: contiguous, as even as can be
/// (the first n % world ranks one row more). Disjoint over the ranks and covering all n.
struct RowRange {
    std::int64_t begin = 0, end = 0;
};
RowRange shard_rows(std::int64_t n, int rank, int world);

/// Each rank's part of a dataset of `size` examples, epoch by epoch, as PyTorch's
/// DistributedSampler: the epoch's order (a permutation seeded by seed + epoch, or 0..size-1
/// without shuffle) is made a multiple of world by repeating its first indices (or, with
/// drop_last, by dropping its tail), and rank r takes positions r, r + world, r + 2·world, …
/// So the ranks' parts are disjoint (but for the repeated padding) and equally long, and
/// every rank computes its part alone, with no communication. Needs no MPI.
struct DistributedSamplerOptions {
    int world = 1, rank = 0;
    bool shuffle = true;
    std::uint64_t seed = 0;
    bool drop_last = false;
};

class DistributedSampler {
public:
    DistributedSampler(std::int64_t size, DistributedSamplerOptions options);
    /// The epoch whose order indices() gives (call at the start of every epoch).
    void set_epoch(std::int64_t epoch) { epoch_ = epoch; }
    std::int64_t epoch() const { return epoch_; }
    /// This rank's dataset indices for the current epoch, in order.
    std::vector<std::int64_t> indices() const;
    /// How many indices each rank gets per epoch.
    std::int64_t num_samples() const { return num_samples_; }

private:
    std::int64_t size_, num_samples_, epoch_ = 0;
    DistributedSamplerOptions o_;
};

}  // namespace spool::train
