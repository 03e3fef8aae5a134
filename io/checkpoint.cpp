// Checkpoints as safetensors: tensors "model.<name>" and "optimizer.<key>", everything
// else as JSON strings in __metadata__ (layout: docs/io.md). Loading is a transaction:
// parse and check everything, then load optimizer and schedule (each all-or-nothing,
// rolled back from a copy if a later part fails), the model, and last the RNG state.
#include "io/checkpoint.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"

namespace spool::io {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* format_tag = "spool-checkpoint";
constexpr const char* format_version = "1";
constexpr const char* model_prefix = "model.";
constexpr const char* optimizer_prefix = "optimizer.";
constexpr std::size_t max_listed_problems = 8;

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

/// "a, b, c" (at most max_listed_problems, then "and N more").
std::string joined(const std::vector<std::string>& items)
{
    std::string out;
    for (std::size_t i = 0; i < items.size() && i < max_listed_problems; ++i) out += (i ? "; " : "") + items[i];
    if (items.size() > max_listed_problems) out += detail::cat("; and ", items.size() - max_listed_problems, " more");
    return out;
}

std::string describe(const Shape& s, DType dt) { return to_string(s) + " " + dtype_name(dt); }

// ---- optimizer and schedule state as JSON ------------------------------------------------------

/// Plain entries of a StateDict as one JSON object, tensors into `tensors` under prefix.
/// int64 and double stay distinct (JSON integer, JSON float: nlohmann writes 1.0, not 1,
/// and the shortest text that reads back to the same double); JSON has no NaN or Inf,
/// so a non-finite double is written {"f64": "inf"}.
json encode_state(const optim::StateDict& sd, const std::string& prefix, NamedTensors& tensors)
{
    json out = json::object();
    for (const auto& [key, entry] : sd) {
        if (const auto* i = std::get_if<std::int64_t>(&entry)) {
            out[key] = *i;
        } else if (const auto* d = std::get_if<double>(&entry)) {
            if (std::isfinite(*d))
                out[key] = *d;
            else
                out[key] = {{"f64", std::isnan(*d) ? "nan" : (*d > 0 ? "inf" : "-inf")}};
        } else if (const auto* s = std::get_if<std::string>(&entry)) {
            out[key] = *s;
        } else {
            tensors.emplace_back(prefix + key, Tensor(std::get<Value>(entry)));
        }
    }
    return out;
}

template <class... Args>
[[noreturn]] void fail(const std::string& path, const Args&... args)
{
    throw IoError(detail::cat("load_checkpoint: ", path, ": ", args...));
}

optim::StateEntry decode_entry(const std::string& path, const std::string& what, const std::string& key, const json& v)
{
    if (v.is_number_unsigned()) {
        if (v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
            fail(path, what, " entry '", key, "' is out of the int64 range: ", v.dump());
        return static_cast<std::int64_t>(v.get<std::uint64_t>());
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (v.is_number_float()) return v.get<double>();
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.size() == 1 && v.contains("f64") && v["f64"].is_string()) {
        const std::string& s = v["f64"].get_ref<const std::string&>();
        if (s == "nan") return std::nan("");
        if (s == "inf") return HUGE_VAL;
        if (s == "-inf") return -HUGE_VAL;
    }
    fail(path, what, " entry '", key, "' is not an integer, a number, a string or {\"f64\": \"nan\"|\"inf\"|\"-inf\"}: ",
         v.dump());
}

/// The metadata value at key parsed as JSON (IoError naming the key when it is not).
json metadata_json(const SafetensorsFile& f, const std::string& path, const std::string& key)
{
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) fail(path, "__metadata__ has no '", key, "'");
    try {
        return json::parse(it->second);
    } catch (const json::exception& e) {
        fail(path, "__metadata__ '", key, "' is not valid JSON (", e.what(), ")");
    }
}

std::int64_t metadata_int(const SafetensorsFile& f, const std::string& path, const std::string& key)
{
    const json j = metadata_json(f, path, key);
    if (!j.is_number_integer() || (j.is_number_unsigned() && j.get<std::uint64_t>() > INT64_MAX) ||
        j.get<std::int64_t>() < 0)
        fail(path, "__metadata__ '", key, "' must be a non-negative integer; got ", j.dump());
    return j.get<std::int64_t>();
}

/// A StateDict from the JSON at metadata key plus the tensors under prefix.
optim::StateDict decode_state(const SafetensorsFile& f, const std::string& path, const std::string& key,
                              const NamedTensors& tensors)
{
    const json j = metadata_json(f, path, key);
    if (!j.is_object()) fail(path, "__metadata__ '", key, "' must be a JSON object; got ", j.type_name());
    optim::StateDict sd;
    for (const auto& [k, v] : j.items()) sd[k] = decode_entry(path, key, k, v);
    for (const auto& [name, t] : tensors) sd[name] = t.value();
    return sd;
}

// ---- checks before anything changes ------------------------------------------------------------

/// Every name, shape and dtype of the model's state_dict against the file's model tensors.
void check_model(const nn::Module& model, const NamedTensors& saved, const std::string& path)
{
    std::map<std::string, const Tensor*> given;
    for (const auto& [n, t] : saved) given[n] = &t;
    std::vector<std::string> problems;
    std::set<std::string> known;
    for (const auto& [n, t] : model.state_dict()) {
        known.insert(n);
        auto it = given.find(n);
        if (it == given.end()) {
            problems.push_back("'" + n + "' is missing");
        } else if (it->second->shape() != t.shape() || it->second->dtype() != t.dtype()) {
            problems.push_back(detail::cat("'", n, "' is ", describe(it->second->shape(), it->second->dtype()),
                                           " but the model's is ", describe(t.shape(), t.dtype())));
        }
    }
    for (const auto& [n, t] : saved)
        if (!known.count(n)) problems.push_back("'" + n + "' is not in the model");
    if (!problems.empty())
        throw ValueError(detail::cat("load_checkpoint: ", path, ": the checkpoint does not fit the model (",
                                     model.type_name(), "): ", joined(problems)));
}

/// Every optimizer tensor ("state.<k>.<field>") against parameter k's shape and dtype.
void check_optimizer(const optim::Optimizer& opt, const NamedTensors& saved, const std::string& path)
{
    const std::vector<Tensor> params = opt.parameters();
    std::vector<std::string> problems;
    for (const auto& [key, t] : saved) {
        std::size_t k = 0;
        std::from_chars_result parsed{key.c_str(), std::errc::invalid_argument};
        if (starts_with(key, "state.")) parsed = std::from_chars(key.c_str() + 6, key.c_str() + key.size(), k);
        if (parsed.ec != std::errc() || *parsed.ptr != '.') {
            problems.push_back("'" + key + "' is not per-parameter state (state.<k>.<name>)");
        } else if (k >= params.size()) {
            problems.push_back(detail::cat("'", key, "' is for parameter ", k, " but the optimizer has ",
                                           params.size()));
        } else if (t.shape() != params[k].shape() || t.dtype() != params[k].dtype()) {
            problems.push_back(detail::cat("'", key, "' is ", describe(t.shape(), t.dtype()), " but parameter ",
                                           k, " is ", describe(params[k].shape(), params[k].dtype())));
        }
    }
    if (!problems.empty())
        throw ValueError(detail::cat("load_checkpoint: ", path, ": the checkpoint does not fit the optimizer (",
                                     opt.name(), "): ", joined(problems)));
}

// ---- files in a checkpoint directory -----------------------------------------------------------

/// The step of a "ckpt-<step>.safetensors" name.
std::optional<std::int64_t> step_of(const std::string& name)
{
    const std::string head = "ckpt-", tail = ".safetensors";
    if (name.size() <= head.size() + tail.size() || !starts_with(name, head) ||
        name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
        return std::nullopt;
    std::int64_t step = 0;
    const char* b = name.data() + head.size();
    const char* e = name.data() + name.size() - tail.size();
    const auto [p, ec] = std::from_chars(b, e, step);
    if (ec != std::errc() || p != e || *b == '-' || *b == '+') return std::nullopt;
    return step;
}

/// The pid in a temporary name "ckpt-<step>.safetensors.tmp.<pid>.<hex>" (see save_safetensors).
std::optional<pid_t> writer_of(const std::string& name)
{
    const std::string mark = ".safetensors.tmp.";
    const std::size_t at = name.find(mark);
    if (!starts_with(name, "ckpt-") || at == std::string::npos) return std::nullopt;
    pid_t pid = 0;
    const char* b = name.data() + at + mark.size();
    const auto [p, ec] = std::from_chars(b, name.data() + name.size(), pid);
    if (ec != std::errc() || *p != '.' || pid <= 0) return std::nullopt;
    return pid;
}

std::vector<std::pair<std::int64_t, std::string>> list_checkpoints(const std::string& dir)
{
    std::vector<std::pair<std::int64_t, std::string>> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        if (!it->is_regular_file(ec)) continue;
        if (auto step = step_of(it->path().filename().string())) out.emplace_back(*step, it->path().string());
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    return out;
}

/// Temporary files of writers that no longer exist: what a kill mid-save leaves behind.
void remove_orphaned_temporaries(const std::string& dir)
{
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const auto pid = writer_of(it->path().filename().string());
        if (pid && *pid != ::getpid() && ::kill(*pid, 0) != 0 && errno == ESRCH) ::unlink(it->path().c_str());
    }
}

}  // namespace

// ---- public API ------------------------------------------------------------------------------

void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* optimizer,
                     const optim::LRScheduler* schedule, const TrainingState& state)
{
    SPOOL_CHECK(state.step >= 0 && state.epoch >= 0, ValueError, "save_checkpoint: step and epoch must be >= 0; got step ",
                state.step, " and epoch ", state.epoch);
    json user;
    try {
        user = json::parse(state.user);
    } catch (const json::exception& e) {
        throw ValueError(detail::cat("save_checkpoint: user is not valid JSON (", e.what(), ")"));
    }
    SPOOL_CHECK(user.is_object(), ValueError, "save_checkpoint: user must be a JSON object; got ", user.type_name());

    NamedTensors tensors;
    for (const auto& [name, t] : model.state_dict()) tensors.emplace_back(model_prefix + name, t);
    const RngState rng = get_rng_state();
    std::map<std::string, std::string> meta{
        {"format", format_tag},
        {"version", format_version},
        {"step", std::to_string(state.step)},
        {"epoch", std::to_string(state.epoch)},
        {"rng", json{{"seed", rng.seed}, {"offset", rng.offset}}.dump()},
        {"user", user.dump()},
    };
    if (optimizer) meta["optimizer"] = encode_state(optimizer->state_dict(), optimizer_prefix, tensors).dump();
    if (schedule) {
        NamedTensors none;  // schedules hold no tensors
        meta["schedule"] = encode_state(schedule->state_dict(), "schedule.", none).dump();
    }
    save_safetensors(path, tensors, meta);
}

TrainingState load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer* optimizer,
                              optim::LRScheduler* schedule)
{
    const SafetensorsFile f = load_safetensors(path);
    auto tag = f.metadata.find("format");
    if (tag == f.metadata.end() || tag->second != format_tag)
        fail(path, "not a spool checkpoint (its __metadata__ has no \"format\": \"", format_tag, "\")");
    auto version = f.metadata.find("version");
    if (version == f.metadata.end() || version->second != format_version)
        fail(path, "checkpoint format version '", version == f.metadata.end() ? "none" : version->second,
             "' is not the one this spool reads (", format_version, ")");

    TrainingState st;
    st.step = metadata_int(f, path, "step");
    st.epoch = metadata_int(f, path, "epoch");
    const json rng = metadata_json(f, path, "rng");
    if (!rng.is_object() || !rng.contains("seed") || !rng.contains("offset") || !rng["seed"].is_number_unsigned() ||
        !rng["offset"].is_number_unsigned())
        fail(path, "__metadata__ 'rng' must be {\"seed\": <uint64>, \"offset\": <uint64>}; got ", rng.dump());
    st.rng = {rng["seed"].get<std::uint64_t>(), rng["offset"].get<std::uint64_t>()};
    const json user = metadata_json(f, path, "user");
    if (!user.is_object()) fail(path, "__metadata__ 'user' must be a JSON object; got ", user.type_name());
    st.user = user.dump();

    NamedTensors model_tensors, optimizer_tensors;
    for (const auto& [name, t] : f.tensors) {
        if (starts_with(name, model_prefix))
            model_tensors.emplace_back(name.substr(std::char_traits<char>::length(model_prefix)), t);
        else if (starts_with(name, optimizer_prefix))
            optimizer_tensors.emplace_back(name.substr(std::char_traits<char>::length(optimizer_prefix)), t);
        else
            fail(path, "tensor '", name, "' is neither model.* nor optimizer.*");
    }

    // everything is checked before anything changes
    check_model(model, model_tensors, path);
    optim::StateDict opt_sd, sched_sd;
    if (optimizer) {
        if (!f.metadata.count("optimizer")) throw ValueError(detail::cat("load_checkpoint: ", path, ": holds no optimizer state"));
        check_optimizer(*optimizer, optimizer_tensors, path);
        opt_sd = decode_state(f, path, "optimizer", optimizer_tensors);
    }
    if (schedule) {
        if (!f.metadata.count("schedule")) throw ValueError(detail::cat("load_checkpoint: ", path, ": holds no schedule state"));
        sched_sd = decode_state(f, path, "schedule", {});
    }

    // each load_state_dict is all-or-nothing; a later failure restores the earlier ones
    const optim::StateDict opt_before = optimizer ? optimizer->state_dict() : optim::StateDict{};
    const optim::StateDict sched_before = schedule ? schedule->state_dict() : optim::StateDict{};
    if (optimizer) optimizer->load_state_dict(opt_sd);
    try {
        if (schedule) schedule->load_state_dict(sched_sd);
        model.load_state_dict(model_tensors);  // checked above: names, shapes and dtypes fit
    } catch (...) {
        if (schedule) schedule->load_state_dict(sched_before);
        if (optimizer) optimizer->load_state_dict(opt_before);  // after the schedule: its lrs, not the schedule's
        throw;
    }
    set_rng_state(st.rng);
    return st;
}

std::string checkpoint_path(const std::string& dir, std::int64_t step)
{
    SPOOL_CHECK(step >= 0, ValueError, "checkpoint_path: step must be >= 0; got ", step);
    return (fs::path(dir) / ("ckpt-" + std::to_string(step) + ".safetensors")).string();
}

std::string save_checkpoint_in(const std::string& dir, const nn::Module& model, const optim::Optimizer* optimizer,
                               const optim::LRScheduler* schedule, const TrainingState& state,
                               const CheckpointOptions& opts)
{
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw IoError(detail::cat("save_checkpoint: cannot create directory '", dir, "': ", ec.message()));
    const std::string path = checkpoint_path(dir, state.step);
    save_checkpoint(path, model, optimizer, schedule, state);
    // only after the new file is complete and renamed: a kill in here loses no checkpoint
    if (opts.keep_last > 0) {
        const auto all = list_checkpoints(dir);
        for (std::size_t i = opts.keep_last; i < all.size(); ++i) ::unlink(all[i].second.c_str());
    }
    remove_orphaned_temporaries(dir);
    return path;
}

std::optional<std::string> latest_checkpoint(const std::string& dir)
{
    const auto all = list_checkpoints(dir);
    if (all.empty()) return std::nullopt;
    return all.front().second;
}

}  // namespace spool::io
