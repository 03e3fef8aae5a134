#include "nn/module.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <ostream>
#include <set>

#include "tensor/kernels.hpp"

namespace spool::nn {

Tensor Module::register_parameter(const std::string& name, Tensor t)
{
    if (!t.defined()) return t;
    for (const auto& [n, p] : params_)
        SPOOL_CHECK(n != name, ValueError, type_name_, ": parameter '", name, "' registered twice");
    t.requires_grad_(true);
    params_.emplace_back(name, t);
    return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, bool persistent)
{
    buffers_.emplace_back(name, t);
    persistent_.push_back(persistent);
    return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m)
{
    SPOOL_CHECK(m != nullptr, ValueError, type_name_, ": submodule '", name, "' is null");
    for (const auto& [n, c] : children_)
        SPOOL_CHECK(n != name, ValueError, type_name_, ": submodule '", name, "' registered twice");
    children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, NamedTensors& out, bool params, bool recurse, bool persistent_only) const
{
    if (params) {
        for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
    } else {
        for (std::size_t i = 0; i < buffers_.size(); ++i)
            if (!persistent_only || persistent_[i]) out.emplace_back(prefix + buffers_[i].first, buffers_[i].second);
    }
    if (recurse)
        for (const auto& [n, c] : children_) c->collect(prefix + n + ".", out, params, true, persistent_only);
}

NamedTensors Module::named_parameters(bool recurse) const
{
    NamedTensors all, out;
    collect("", all, true, recurse, false);
    std::set<const TensorImpl*> seen;
    for (auto& p : all)
        if (seen.insert(p.second.impl().get()).second) out.push_back(std::move(p));
    return out;
}

void Module::set_parameter(const std::string& name, const Tensor& t)
{
    for (auto& [n, p] : params_)
        if (n == name) {
            SPOOL_CHECK(t.defined() && t.shape() == p.shape(), ShapeError, type_name_, ".set_parameter: '", name,
                        "' has shape ", to_string(p.shape()), "; got ", t.defined() ? to_string(t.shape()) : "undefined");
            p = t;
            return;
        }
    throw ValueError(detail::cat(type_name_, ".set_parameter: no parameter named '", name, "'"));
}

std::vector<Tensor> Module::parameters(bool recurse) const
{
    std::vector<Tensor> out;
    for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
    return out;
}

NamedTensors Module::named_buffers(bool recurse) const
{
    NamedTensors out;
    collect("", out, false, recurse, false);
    return out;
}

std::int64_t Module::num_parameters() const
{
    std::int64_t n = 0;
    for (const auto& [name, t] : named_parameters()) n += t.numel();
    return n;
}

void Module::train(bool on)
{
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
}

void Module::to(DType dt)
{
    SPOOL_CHECK(is_floating(dt), TypeError, type_name_, ".to: only float32 and float64 are supported; got ", dtype_name(dt));
    auto convert = [dt](const Tensor& t) {
        auto& impl = *t.impl();
        if (is_floating(impl.value.dtype()) && impl.value.dtype() != dt) {
            impl.value = kernels::cast(impl.value, dt);
            impl.grad = Value();
        }
    };
    for (auto& [n, t] : named_parameters()) convert(t);
    for (auto& [n, t] : named_buffers()) convert(t);
}

void Module::zero_grad()
{
    for (auto& [n, t] : named_parameters()) {
        Tensor h = t;
        h.zero_grad();
    }
}

// ---- load_state_dict's error message ----------------------------------------------------------

namespace {
/// At most this many entries of each list are named; the rest are counted.
constexpr std::size_t shown_per_list = 10;

std::string quoted_keys(const std::vector<std::string>& keys)
{
    std::string out;
    for (std::size_t i = 0; i < keys.size() && i < shown_per_list; ++i) out += (i ? ", '" : "'") + keys[i] + "'";
    if (keys.size() > shown_per_list) out += detail::cat(" and ", keys.size() - shown_per_list, " more");
    return out;
}

/// A hint when the names differ by one prefix p: every missing key k is an unexpected key p + k
/// (saved from a wrapper, e.g. "module."), or every unexpected key k is a missing key p + k
/// (saved from the submodule p).
std::string prefix_hint(const std::vector<std::string>& missing, const std::vector<std::string>& unexpected)
{
    if (missing.empty() || missing.size() != unexpected.size()) return "";
    // the p for which every key k of `shorter` is in `longer` as p + k, or nullopt
    auto shift = [](const std::vector<std::string>& shorter, const std::vector<std::string>& longer) {
        const std::set<std::string> have(longer.begin(), longer.end());
        const std::string& k0 = shorter.front();
        for (const auto& l : longer) {
            if (l.size() <= k0.size() || l.compare(l.size() - k0.size(), k0.size(), k0) != 0) continue;
            std::string p = l.substr(0, l.size() - k0.size());
            if (std::all_of(shorter.begin(), shorter.end(), [&](const std::string& k) { return have.count(p + k) > 0; }))
                return std::optional<std::string>(p);
        }
        return std::optional<std::string>();
    };
    if (auto p = shift(missing, unexpected))
        return "\n  (each unexpected key is a missing key with the prefix '" + *p +
               "': the state dict was saved from a wrapper; strip the prefix)";
    if (auto p = shift(unexpected, missing))
        return "\n  (each missing key is an unexpected key with the prefix '" + *p +
               "': the state dict was saved from that submodule; load it there)";
    return "";
}
}  // namespace

std::string load_error_message(const std::string& module, const std::vector<std::string>& size_mismatches,
                               const std::vector<std::string>& undefined, const std::vector<std::string>& missing,
                               const std::vector<std::string>& unexpected)
{
    std::string msg = module + ".load_state_dict: error(s) in loading the state dict:";
    if (!size_mismatches.empty()) {
        msg += detail::cat("\n  size mismatches (", size_mismatches.size(), "):");
        for (std::size_t i = 0; i < size_mismatches.size() && i < shown_per_list; ++i) msg += "\n    " + size_mismatches[i];
        if (size_mismatches.size() > shown_per_list)
            msg += detail::cat("\n    and ", size_mismatches.size() - shown_per_list, " more");
    }
    auto list = [&](const char* what, const std::vector<std::string>& keys) {
        if (!keys.empty()) msg += detail::cat("\n  ", what, " (", keys.size(), "): ", quoted_keys(keys));
    };
    list("undefined tensors", undefined);
    list("missing keys", missing);
    list("unexpected keys", unexpected);
    return msg + prefix_hint(missing, unexpected);
}

NamedTensors Module::state_dict() const
{
    NamedTensors out;  // tied parameters appear under each name, as in PyTorch
    collect("", out, true, true, false);
    collect("", out, false, true, true);
    return out;
}

LoadResult Module::load_state_dict(const NamedTensors& state, bool strict)
{
    NamedTensors mine = state_dict();
    std::map<std::string, const Tensor*> given;
    for (const auto& [n, t] : state) given[n] = &t;
    LoadResult res;
    std::vector<std::string> mismatched, undefined;
    std::set<std::string> known;
    for (const auto& [n, t] : mine) {
        known.insert(n);
        auto it = given.find(n);
        if (it == given.end()) {
            res.missing_keys.push_back(n);
            continue;
        }
        if (!it->second->defined()) {
            undefined.push_back(n);
            continue;
        }
        if (it->second->shape() != t.shape())
            mismatched.push_back(detail::cat("'", n, "': expected ", to_string(t.shape()), ", got ",
                                             to_string(it->second->shape())));
    }
    for (const auto& [n, t] : state)
        if (!known.count(n)) res.unexpected_keys.push_back(n);
    bool bad = !mismatched.empty() || !undefined.empty() || (strict && (!res.missing_keys.empty() || !res.unexpected_keys.empty()));
    if (bad)
        throw ValueError(load_error_message(type_name_, mismatched, undefined, strict ? res.missing_keys : std::vector<std::string>{},
                                            strict ? res.unexpected_keys : std::vector<std::string>{}));
    for (const auto& [n, t] : mine) {
        auto it = given.find(n);
        if (it == given.end()) continue;
        auto& impl = *t.impl();
        impl.value = kernels::cast(it->second->value(), impl.value.dtype()).clone();
    }
    return res;
}

void Module::copy_state_from(const Module& other)
{
    NamedTensors mine = named_parameters(), theirs = other.named_parameters();
    NamedTensors mb = named_buffers(), tb = other.named_buffers();
    mine.insert(mine.end(), mb.begin(), mb.end());
    theirs.insert(theirs.end(), tb.begin(), tb.end());
    SPOOL_CHECK(mine.size() == theirs.size(), ValueError, type_name_, ".clone: structure differs from the original");
    for (std::size_t i = 0; i < mine.size(); ++i) {
        auto& impl = *mine[i].second.impl();
        impl.value = theirs[i].second.value().clone();
        impl.requires_grad = theirs[i].second.requires_grad();
    }
    train(other.is_training());
}

// ---- printing ---------------------------------------------------------------------------------

namespace {
std::string with_commas(std::int64_t n)
{
    std::string s = std::to_string(n), out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (i && (s.size() - i) % 3 == 0) out += ',';
        out += s[i];
    }
    return out;
}
}  // namespace

void Module::repr_into(std::string& out, int indent) const
{
    out += type_name_ + "(" + extra_repr();
    if (!children_.empty()) {
        out += "\n";
        for (const auto& [n, c] : children_) {
            out += std::string(indent + 2, ' ') + "(" + n + "): ";
            c->repr_into(out, indent + 2);
            out += "\n";
        }
        out += std::string(indent, ' ');
    }
    out += ")";
    if (std::int64_t n = num_parameters()) out += "  # " + with_commas(n) + " params";
}

std::string Module::repr() const
{
    std::string out;
    repr_into(out, 0);
    return out;
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.repr(); }

}  // namespace spool::nn
