// What a training program prints and writes as it runs: a live progress line (redrawn in
// place on a terminal, plain lines every few seconds otherwise) and a metrics CSV with a
// fixed header whose rows may leave columns empty.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace spool::train {

struct ProgressOptions {
    std::int64_t total_steps = 0;
    bool live = false;               ///< redraw one line with '\r' (a terminal); false: plain lines
    double plain_every_seconds = 5;  ///< plain mode: at most one line this often
    std::FILE* out = stdout;         ///< nullptr: measure (tokens/s, elapsed) but print nothing
};

/// True when stdout is a terminal (and TERM is not "dumb").
bool stdout_is_terminal();

class Progress {
public:
    explicit Progress(ProgressOptions o);
    /// Report step (1-based) with its loss, lr and the tokens it processed.
    void update(std::int64_t step, std::int64_t epoch, double loss, double lr, std::int64_t tokens);
    /// Print a line of its own (an evaluation, a message) without breaking the live line.
    void message(const std::string& line);
    /// End the live line.
    void finish();
    double elapsed_seconds() const;
    /// Tokens per second over the recent steps.
    double tokens_per_second() const { return rate_; }

private:
    std::string line(std::int64_t step, std::int64_t epoch, double loss, double lr) const;
    ProgressOptions o_;
    std::chrono::steady_clock::time_point start_, last_print_, window_start_;
    std::int64_t window_tokens_ = 0, last_step_ = 0;
    double rate_ = 0, loss_ema_ = 0;
    bool have_ema_ = false, dirty_ = false;
};

/// "1m05s", "12.3s", "2h03m".
std::string format_duration(double seconds);

/// A CSV file with a header; set() fills columns of the current row, commit() writes it.
class CsvWriter {
public:
    /// append: add rows to an existing file written with the same columns (no new header).
    CsvWriter(const std::string& path, std::vector<std::string> columns, bool append = false);
    void set(const std::string& column, double value);
    void commit();  ///< writes the row (empty cells for unset columns) and flushes

private:
    std::ofstream file_;
    std::vector<std::string> columns_;
    std::vector<std::optional<double>> row_;
};

/// Reads a CSV written by CsvWriter: the column's values (NaN for empty cells) in row order.
std::vector<double> read_csv_column(const std::string& path, const std::string& column);

}  // namespace spool::train
