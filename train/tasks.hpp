// Tasks generated in-process (no download): each samples (source, target) string pairs with
// source alignments, from a seeded std::mt19937_64, and keeps a held-out part of its space
// that training never sees (whole dates, whole digit strings — not just unseen pairs).
//   dates   : "26 Nov 2026", "11/26/26", "November 26th, 2026", … → "2026-11-26" (1950–2049)
//   reverse : a digit string of 4–12 digits → the same digits reversed
//   copy    : a digit string → itself
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "train/data.hpp"

namespace spool::train {

enum class Split { train, heldout };

class Task {
public:
    virtual ~Task() = default;
    virtual std::string name() const = 0;
    virtual const CharVocab& vocab() const = 0;
    /// A pair from the split: held-out pairs come from the reserved part of the space.
    virtual Example sample(std::mt19937_64& rng, Split split) const = 0;
};

/// splitmix64's finaliser: a well-mixed 64-bit hash. Chooses the held-out parts of the tasks
/// and derives per-step and per-set seeds from the run's seed.
std::uint64_t mix64(std::uint64_t x);

/// "dates", "reverse" or "copy"; throws ValueError listing the names for another.
std::unique_ptr<Task> make_task(std::string_view name);
std::vector<std::string> task_names();

/// n pairs of the split from a generator seeded with seed.
std::vector<Example> sample_set(const Task& task, std::int64_t n, std::uint64_t seed, Split split);

/// The date task's pieces, public for tests: days since 1970-01-01 to (y, m, d) and back.
struct Date {
    int year, month, day;
};
Date civil_from_days(std::int64_t days);
std::int64_t days_from_civil(const Date& d);
/// Source text of date d in format f (0 … date_formats() − 1) with its alignment to "YYYY-MM-DD".
Example format_date(const Date& d, int f);
int date_formats();

}  // namespace spool::train
