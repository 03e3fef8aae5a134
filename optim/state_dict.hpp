// The saved state of an optimizer or a schedule: a flat, ordered map from dotted keys to
// plain values — int64, double, string or a Value (a tensor's data) — so that io/ can
// write it without knowing any optimizer (tensors to safetensors, the rest to JSON).
// Keys follow PyTorch's state_dict, flattened: "param_groups.0.lr", "state.3.exp_avg".
// Values in a saved dict are copies: later steps never change a dict already taken.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <variant>

#include "tensor/value.hpp"

namespace spool::optim {

using StateEntry = std::variant<std::int64_t, double, std::string, Value>;
using StateDict = std::map<std::string, StateEntry>;

/// Typed reads; a missing key or another type throws ValueError naming `who` and the key.
std::int64_t get_int(const StateDict& sd, const std::string& key, const char* who);
/// A double (an int64 entry is accepted and converted).
double get_double(const StateDict& sd, const std::string& key, const char* who);
const std::string& get_string(const StateDict& sd, const std::string& key, const char* who);
const Value& get_value(const StateDict& sd, const std::string& key, const char* who);

/// Checks that sd was saved by a `type` over `groups` parameter groups ("type" and
/// "param_groups" keys); throws ValueError naming both sides otherwise.
void check_saved_by(const StateDict& sd, const std::string& type, std::size_t groups);

}  // namespace spool::optim
