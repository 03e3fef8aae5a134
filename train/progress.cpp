// Progress line and metrics CSV (train/progress.hpp).
#include "train/progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "tensor/errors.hpp"

namespace spool::train {

bool stdout_is_terminal()
{
    const char* term = std::getenv("TERM");
    return ::isatty(STDOUT_FILENO) == 1 && !(term && std::strcmp(term, "dumb") == 0);
}

std::string format_duration(double s)
{
    char buf[32];
    if (!std::isfinite(s) || s < 0) return "?";
    if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
    else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
    else std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
    return buf;
}

Progress::Progress(ProgressOptions o) : o_(o)
{
    start_ = last_print_ = window_start_ = std::chrono::steady_clock::now();
}

double Progress::elapsed_seconds() const
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::line(std::int64_t step, std::int64_t epoch, double loss, double lr) const
{
    const double elapsed = elapsed_seconds();
    const double eta = step > 0 ? elapsed / static_cast<double>(step) * static_cast<double>(o_.total_steps - step) : 0;
    char buf[256];
    std::snprintf(buf, sizeof buf, "step %lld/%lld  epoch %lld  loss %.4f  lr %.2e  %.0f tok/s  elapsed %s  eta %s",
                  static_cast<long long>(step), static_cast<long long>(o_.total_steps), static_cast<long long>(epoch),
                  loss, lr, rate_, format_duration(elapsed).c_str(), format_duration(eta).c_str());
    return buf;
}

void Progress::update(std::int64_t step, std::int64_t epoch, double loss, double lr, std::int64_t tokens)
{
    // smoothed loss: one step's loss is noisy; the line shows an exponential average
    loss_ema_ = have_ema_ ? 0.9 * loss_ema_ + 0.1 * loss : loss;
    have_ema_ = true;
    window_tokens_ += tokens;
    last_step_ = step;
    const auto now = std::chrono::steady_clock::now();
    const double window = std::chrono::duration<double>(now - window_start_).count();
    if (window >= 1.0 || rate_ == 0) {
        if (window > 0) rate_ = static_cast<double>(window_tokens_) / window;
        if (window >= 1.0) {
            window_start_ = now;
            window_tokens_ = 0;
        }
    }
    if (!o_.out) return;
    const double since = std::chrono::duration<double>(now - last_print_).count();
    const bool last = step == o_.total_steps;
    if (o_.live) {
        if (since < 0.1 && !last) return;
        std::fprintf(o_.out, "\r\033[K%s", line(step, epoch, loss_ema_, lr).c_str());
        dirty_ = true;
    } else {
        if (since < o_.plain_every_seconds && !last && step != 1) return;
        std::fprintf(o_.out, "%s\n", line(step, epoch, loss_ema_, lr).c_str());
    }
    std::fflush(o_.out);
    last_print_ = now;
}

void Progress::message(const std::string& text)
{
    if (!o_.out) return;
    if (dirty_) std::fprintf(o_.out, "\r\033[K");
    std::fprintf(o_.out, "%s\n", text.c_str());
    std::fflush(o_.out);
    dirty_ = false;
}

void Progress::finish()
{
    if (!o_.out) return;
    if (dirty_) std::fprintf(o_.out, "\n");
    dirty_ = false;
    std::fflush(o_.out);
}

CsvWriter::CsvWriter(const std::string& path, std::vector<std::string> columns, bool append)
    : file_(path, append ? std::ios::app : std::ios::trunc), columns_(std::move(columns)), row_(columns_.size())
{
    SPOOL_CHECK(file_.good(), IoError, "CsvWriter: cannot open '", path, "' for writing");
    if (append) return;
    for (std::size_t i = 0; i < columns_.size(); ++i) file_ << (i ? "," : "") << columns_[i];
    file_ << "\n";
}

void CsvWriter::set(const std::string& column, double value)
{
    for (std::size_t i = 0; i < columns_.size(); ++i)
        if (columns_[i] == column) {
            row_[i] = value;
            return;
        }
    throw ValueError(detail::cat("CsvWriter: no column '", column, "'"));
}

void CsvWriter::commit()
{
    for (std::size_t i = 0; i < row_.size(); ++i) {
        if (i) file_ << ",";
        if (row_[i]) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.9g", *row_[i]);
            file_ << buf;
        }
        row_[i].reset();
    }
    file_ << "\n";
    file_.flush();
}

std::vector<double> read_csv_column(const std::string& path, const std::string& column)
{
    std::ifstream in(path);
    SPOOL_CHECK(in.good(), IoError, "read_csv_column: cannot open '", path, "'");
    std::string header, line;
    std::getline(in, header);
    std::vector<std::string> cols;
    {
        std::stringstream ss(header);
        std::string c;
        while (std::getline(ss, c, ',')) cols.push_back(c);
    }
    std::size_t idx = cols.size();
    for (std::size_t i = 0; i < cols.size(); ++i)
        if (cols[i] == column) idx = i;
    SPOOL_CHECK(idx < cols.size(), ValueError, "read_csv_column: '", path, "' has no column '", column, "'");
    std::vector<double> out;
    while (std::getline(in, line)) {
        std::stringstream ss(line);
        std::string cell;
        for (std::size_t i = 0; i <= idx; ++i)
            if (!std::getline(ss, cell, ',')) cell.clear();
        out.push_back(cell.empty() ? std::nan("") : std::strtod(cell.c_str(), nullptr));
    }
    return out;
}

}  // namespace spool::train
