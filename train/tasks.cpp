// The generated tasks (train/tasks.hpp). Held-out parts are chosen by a hash of the
// underlying object (the date, the digit string), so no held-out date appears in training
// in any format.
#include "train/tasks.hpp"

#include <cstdio>

#include "tensor/errors.hpp"

namespace spool::train {
namespace {

constexpr const char* month_names[12] = {"January", "February", "March",     "April",   "May",      "June",
                                         "July",    "August",   "September", "October", "November", "December"};
constexpr const char* weekday_names[7] = {"Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"};

bool is_heldout(std::uint64_t key) { return mix64(key) % 10 == 0; }  // 10% of the space

std::string upper(std::string s)
{
    for (char& c : s) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    return s;
}
std::string lower(std::string s)
{
    for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return s;
}
std::string num(int v, int width)
{
    char buf[16];
    std::snprintf(buf, sizeof buf, "%0*d", width, v);
    return buf;
}
std::string ordinal(int d)
{
    const char* suffix = (d % 100 >= 11 && d % 100 <= 13) ? "th" : d % 10 == 1 ? "st" : d % 10 == 2 ? "nd" : d % 10 == 3 ? "rd" : "th";
    return std::to_string(d) + suffix;
}

// Builds a source string piece by piece, remembering where the year, month and day are.
struct DateText {
    std::string text;
    struct Field {
        std::int64_t start = -1, len = 0;
        bool numeric = true;
    } year, month, day;
    DateText& lit(const std::string& s)
    {
        text += s;
        return *this;
    }
    DateText& field(Field& f, const std::string& s, bool numeric)
    {
        f = {static_cast<std::int64_t>(text.size()), static_cast<std::int64_t>(s.size()), numeric};
        text += s;
        return *this;
    }
};

// Target field of K characters from a source field: right-aligned digit to digit (a 2-digit
// year's century has no source), a month name gives every target digit its first letter.
void align_field(std::vector<std::int64_t>& align, std::int64_t tstart, std::int64_t K, const DateText::Field& f)
{
    for (std::int64_t k = 0; k < K; ++k) {
        std::int64_t a = -1;
        if (!f.numeric) a = f.start;
        else if (k >= K - f.len) a = f.start + k - (K - f.len);
        align[static_cast<std::size_t>(tstart + k)] = a;
    }
}

class DatesTask final : public Task {
public:
    DatesTask() : vocab_("0123456789-/.,: ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {}
    std::string name() const override { return "dates"; }
    const CharVocab& vocab() const override { return vocab_; }
    Example sample(std::mt19937_64& rng, Split split) const override
    {
        const std::int64_t lo = days_from_civil({1950, 1, 1}), hi = days_from_civil({2049, 12, 31});
        std::uniform_int_distribution<std::int64_t> day(lo, hi);
        std::uniform_int_distribution<int> fmt(0, date_formats() - 1);
        for (;;) {
            std::int64_t d = day(rng);
            if (is_heldout(static_cast<std::uint64_t>(d)) != (split == Split::heldout)) continue;
            return format_date(civil_from_days(d), fmt(rng));
        }
    }

private:
    CharVocab vocab_;
};

class DigitsTask final : public Task {
public:
    explicit DigitsTask(bool reverse) : reverse_(reverse), vocab_("0123456789") {}
    std::string name() const override { return reverse_ ? "reverse" : "copy"; }
    const CharVocab& vocab() const override { return vocab_; }
    Example sample(std::mt19937_64& rng, Split split) const override
    {
        std::uniform_int_distribution<int> len(4, 12), digit(0, 9);
        for (;;) {
            Example e;
            const int n = len(rng);
            std::uint64_t key = static_cast<std::uint64_t>(n);
            for (int i = 0; i < n; ++i) {
                int v = digit(rng);
                e.src += static_cast<char>('0' + v);
                key = key * 11 + static_cast<std::uint64_t>(v) + 1;
            }
            if (is_heldout(key) != (split == Split::heldout)) continue;
            e.tgt = reverse_ ? std::string(e.src.rbegin(), e.src.rend()) : e.src;
            for (int t = 0; t < n; ++t) e.align.push_back(reverse_ ? n - 1 - t : t);
            return e;
        }
    }

private:
    bool reverse_;
    CharVocab vocab_;
};

}  // namespace

std::uint64_t mix64(std::uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Howard Hinnant's days_from_civil / civil_from_days algorithms (proleptic Gregorian)
std::int64_t days_from_civil(const Date& d)
{
    const std::int64_t y = d.year - (d.month <= 2);
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const std::int64_t yoe = y - era * 400;
    const std::int64_t doy = (153 * (d.month + (d.month > 2 ? -3 : 9)) + 2) / 5 + d.day - 1;
    const std::int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

Date civil_from_days(std::int64_t z)
{
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const std::int64_t doe = z - era * 146097;
    const std::int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const std::int64_t mp = (5 * doy + 2) / 153;
    const int d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
    const int m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    return {static_cast<int>(yoe + era * 400 + (m <= 2)), m, d};
}

int date_formats() { return 9; }

Example format_date(const Date& d, int f)
{
    SPOOL_CHECK(f >= 0 && f < date_formats(), ValueError, "format_date: format ", f, " out of range [0, ",
                date_formats(), ")");
    const std::string month = month_names[d.month - 1], mon = month.substr(0, 3);
    const std::string weekday = weekday_names[((days_from_civil(d) % 7) + 7) % 7];
    DateText s;
    switch (f) {
    case 0: s.field(s.day, std::to_string(d.day), true).lit(" ").field(s.month, mon, false).lit(" ").field(s.year, num(d.year, 4), true); break;
    case 1:  // US, two-digit year: 1950–2049 makes it unambiguous
        s.field(s.month, std::to_string(d.month), true).lit("/").field(s.day, std::to_string(d.day), true).lit("/")
            .field(s.year, num(d.year % 100, 2), true);
        break;
    case 2: s.field(s.month, month, false).lit(" ").field(s.day, ordinal(d.day), true).lit(", ").field(s.year, num(d.year, 4), true); break;
    case 3: s.field(s.day, num(d.day, 2), true).lit(".").field(s.month, num(d.month, 2), true).lit(".").field(s.year, num(d.year, 4), true); break;
    case 4: s.field(s.year, num(d.year, 4), true).lit("/").field(s.month, num(d.month, 2), true).lit("/").field(s.day, num(d.day, 2), true); break;
    case 5: s.field(s.month, mon, false).lit(" ").field(s.day, std::to_string(d.day), true).lit(", ").field(s.year, num(d.year, 4), true); break;
    case 6: s.field(s.day, std::to_string(d.day), true).lit(" ").field(s.month, upper(month), false).lit(" ").field(s.year, num(d.year, 4), true); break;
    case 7:
        s.lit(weekday.substr(0, 3) + ", ").field(s.day, std::to_string(d.day), true).lit(" ").field(s.month, mon, false).lit(" ")
            .field(s.year, num(d.year, 4), true);
        break;
    default:
        s.lit(lower(weekday) + " ").field(s.month, lower(month), false).lit(" ").field(s.day, std::to_string(d.day), true)
            .lit(" ").field(s.year, num(d.year, 4), true);
        break;
    }
    // the "26th" field is digits followed by a suffix: its digits are the field's first len − 2
    if (f == 2) s.day.len -= 2;
    Example e;
    e.src = s.text;
    e.tgt = num(d.year, 4) + "-" + num(d.month, 2) + "-" + num(d.day, 2);
    e.align.assign(e.tgt.size(), -1);
    align_field(e.align, 0, 4, s.year);
    align_field(e.align, 5, 2, s.month);
    align_field(e.align, 8, 2, s.day);
    return e;
}

std::vector<std::string> task_names() { return {"copy", "dates", "reverse"}; }

std::unique_ptr<Task> make_task(std::string_view name)
{
    if (name == "dates") return std::make_unique<DatesTask>();
    if (name == "reverse") return std::make_unique<DigitsTask>(true);
    if (name == "copy") return std::make_unique<DigitsTask>(false);
    throw ValueError(detail::cat("make_task: unknown task '", name, "'; known: copy, dates, reverse"));
}

std::vector<Example> sample_set(const Task& task, std::int64_t n, std::uint64_t seed, Split split)
{
    std::mt19937_64 rng(seed);
    std::vector<Example> out;
    out.reserve(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) out.push_back(task.sample(rng, split));
    return out;
}

}  // namespace spool::train
