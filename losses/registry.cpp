// The loss registry. The built-in losses are entered in code on first use (self-registering
// static objects would be dropped by the linker from a static library nobody references).
#include "losses/registry.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <mutex>

#include "losses/detail.hpp"

namespace spool::losses {

namespace {

struct Entry {
    LossFactory factory;
    std::vector<std::string> keys;  ///< LossOptions fields the loss reads (empty: any)
};

struct Registry {
    std::mutex mu;
    std::map<std::string, Entry, std::less<>> entries;
};

/// An entry building L from the options options_of picks out of LossOptions.
template <class L, class F>
Entry entry(F options_of, std::vector<std::string> keys)
{
    return {[options_of](const LossOptions& o) -> std::unique_ptr<Loss> { return std::make_unique<L>(options_of(o)); },
            std::move(keys)};
}

Registry& registry()
{
    static Registry* r = [] {
        auto* reg = new Registry;  // never destroyed: losses may be made during static destruction
        auto& e = reg->entries;
        using O = const LossOptions&;
        e["cross_entropy"] = entry<CrossEntropy>(
            [](O o) {
                return CrossEntropyOptions{.weight = o.weight, .ignore_index = o.ignore_index,
                                           .reduction = o.reduction, .label_smoothing = o.label_smoothing};
            },
            {"weight", "ignore_index", "reduction", "label_smoothing"});
        e["label_smoothing_kl"] = entry<LabelSmoothingKL>(
            [](O o) {
                return LabelSmoothingKLOptions{.padding_idx = o.padding_idx, .smoothing = o.label_smoothing,
                                               .reduction = o.reduction};
            },
            {"padding_idx", "label_smoothing", "reduction"});
        e["nll_loss"] = entry<NLLLoss>(
            [](O o) {
                return NLLLossOptions{.weight = o.weight, .ignore_index = o.ignore_index, .reduction = o.reduction};
            },
            {"weight", "ignore_index", "reduction"});
        e["kl_div"] = entry<KLDivLoss>(
            [](O o) { return KLDivLossOptions{.reduction = o.reduction, .log_target = o.log_target}; },
            {"reduction", "log_target"});
        e["mse_loss"] = entry<MSELoss>([](O o) { return MSELossOptions{.reduction = o.reduction}; }, {"reduction"});
        e["binary_cross_entropy_with_logits"] = entry<BCEWithLogitsLoss>(
            [](O o) {
                return BCEWithLogitsLossOptions{.weight = o.weight, .reduction = o.reduction,
                                                .pos_weight = o.pos_weight};
            },
            {"weight", "reduction", "pos_weight"});
        e["focal_loss"] = entry<FocalLoss>(
            [](O o) {
                return FocalLossOptions{.gamma = o.gamma, .alpha = o.alpha, .ignore_index = o.ignore_index,
                                        .reduction = o.reduction};
            },
            {"gamma", "alpha", "ignore_index", "reduction"});
        e["z_loss"] = entry<ZLoss>(
            [](O o) {
                return ZLossOptions{.coefficient = o.coefficient, .ignore_index = o.ignore_index,
                                    .reduction = o.reduction};
            },
            {"coefficient", "ignore_index", "reduction"});
        e["attention_alignment"] = entry<AttentionAlignmentLoss>(
            [](O o) {
                return AttentionAlignmentLossOptions{.form = o.form, .head = o.head, .ignore_index = o.ignore_index,
                                                     .reduction = o.reduction, .eps = o.eps};
            },
            {"form", "head", "ignore_index", "reduction", "eps"});
        return reg;
    }();
    return *r;
}

std::string joined(const std::vector<std::string>& names)
{
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
}

std::string_view trim(std::string_view s)
{
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

template <class T>
T number(std::string_view loss, std::string_view key, std::string_view text)
{
    T v{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    SPOOL_CHECK(ec == std::errc() && end == text.data() + text.size(), ValueError, "losses::parse: ", loss,
                ": option ", key, " expects a number; got '", text, "'");
    return v;
}

/// Set LossOptions' field key from text.
void set_option(LossOptions& o, std::string_view loss, std::string_view key, std::string_view v)
{
    if (key == "ignore_index") o.ignore_index = number<std::int64_t>(loss, key, v);
    else if (key == "reduction") o.reduction = parse_reduction(v, loss);
    else if (key == "label_smoothing") o.label_smoothing = number<double>(loss, key, v);
    else if (key == "padding_idx") o.padding_idx = number<std::int64_t>(loss, key, v);
    else if (key == "gamma") o.gamma = number<double>(loss, key, v);
    else if (key == "coefficient") o.coefficient = number<double>(loss, key, v);
    else if (key == "head") o.head = number<std::int64_t>(loss, key, v);
    else if (key == "eps") o.eps = number<double>(loss, key, v);
    else if (key == "log_target") {
        SPOOL_CHECK(v == "true" || v == "false", ValueError, "losses::parse: ", loss,
                    ": option log_target expects true or false; got '", v, "'");
        o.log_target = v == "true";
    } else if (key == "form") {
        SPOOL_CHECK(v == "ce" || v == "mse", ValueError, "losses::parse: ", loss,
                    ": option form expects ce or mse; got '", v, "'");
        o.form = v == "ce" ? AlignmentForm::ce : AlignmentForm::mse;
    } else if (key == "weight" || key == "pos_weight" || key == "alpha") {
        throw ValueError(::spool::detail::cat("losses::parse: ", loss, ": option ", key,
                                              " is a tensor; set it in LossOptions and call make()"));
    } else {
        throw ValueError(::spool::detail::cat("losses::parse: ", loss, ": unknown option '", key, "'"));
    }
}

}  // namespace

std::unique_ptr<Loss> make(std::string_view name, const LossOptions& options)
{
    LossFactory factory;
    {
        Registry& r = registry();
        std::lock_guard<std::mutex> lock(r.mu);
        const auto it = r.entries.find(name);
        if (it == r.entries.end()) {
            std::vector<std::string> names;
            for (const auto& [n, e] : r.entries) names.push_back(n);
            throw ValueError(
                ::spool::detail::cat("losses::make: no loss named '", name, "'; registered: ", joined(names)));
        }
        factory = it->second.factory;
    }
    return factory(options);
}

std::unique_ptr<Loss> parse(std::string_view spec)
{
    spec = trim(spec);
    const std::size_t open = spec.find('(');
    const std::string_view name = trim(spec.substr(0, open));
    LossOptions o;
    if (open != std::string_view::npos) {
        SPOOL_CHECK(spec.back() == ')', ValueError, "losses::parse: expected name(key=value, ...); got '", spec, "'");
        std::vector<std::string> keys;
        {
            Registry& r = registry();
            std::lock_guard<std::mutex> lock(r.mu);
            const auto it = r.entries.find(name);
            if (it != r.entries.end()) keys = it->second.keys;
        }
        std::string_view body = spec.substr(open + 1, spec.size() - open - 2);
        while (!trim(body).empty()) {
            const std::size_t comma = body.find(',');
            const std::string_view item = trim(body.substr(0, comma));
            body = comma == std::string_view::npos ? std::string_view() : body.substr(comma + 1);
            const std::size_t eq = item.find('=');
            SPOOL_CHECK(eq != std::string_view::npos, ValueError, "losses::parse: ", name,
                        ": expected key=value; got '", item, "'");
            const std::string_view key = trim(item.substr(0, eq));
            SPOOL_CHECK(keys.empty() || std::find(keys.begin(), keys.end(), key) != keys.end(), ValueError,
                        "losses::parse: ", name, " reads no option '", key, "'; its options are ", joined(keys));
            set_option(o, name, key, trim(item.substr(eq + 1)));
        }
    }
    return make(name, o);
}

void register_loss(std::string_view name, LossFactory factory, std::vector<std::string> keys)
{
    SPOOL_CHECK(!name.empty() && factory, ValueError, "losses::register_loss: a loss needs a name and a factory");
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    SPOOL_CHECK(r.entries.find(name) == r.entries.end(), ValueError, "losses::register_loss: a loss named '", name,
                "' is already registered");
    r.entries.emplace(std::string(name), Entry{std::move(factory), std::move(keys)});
}

std::vector<std::string> registered_names()
{
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    std::vector<std::string> names;
    for (const auto& [n, e] : r.entries) names.push_back(n);
    return names;
}

}  // namespace spool::losses
