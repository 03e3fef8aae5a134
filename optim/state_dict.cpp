#include "optim/state_dict.hpp"

namespace spool::optim {

namespace {

const char* kind_name(const StateEntry& e)
{
    static const char* names[] = {"an int64", "a double", "a string", "a tensor"};
    return names[e.index()];
}

template <class T>
const T& get(const StateDict& sd, const std::string& key, const char* who, const char* want)
{
    auto it = sd.find(key);
    SPOOL_CHECK(it != sd.end(), ValueError, who, ": load_state_dict: missing key '", key, "'");
    const T* v = std::get_if<T>(&it->second);
    SPOOL_CHECK(v, ValueError, who, ": load_state_dict: key '", key, "' should hold ", want, "; got ",
                kind_name(it->second));
    return *v;
}

}  // namespace

std::int64_t get_int(const StateDict& sd, const std::string& key, const char* who)
{
    return get<std::int64_t>(sd, key, who, "an int64");
}

double get_double(const StateDict& sd, const std::string& key, const char* who)
{
    auto it = sd.find(key);
    if (it != sd.end())
        if (const auto* i = std::get_if<std::int64_t>(&it->second)) return static_cast<double>(*i);
    return get<double>(sd, key, who, "a double");
}

const std::string& get_string(const StateDict& sd, const std::string& key, const char* who)
{
    return get<std::string>(sd, key, who, "a string");
}

const Value& get_value(const StateDict& sd, const std::string& key, const char* who)
{
    return get<Value>(sd, key, who, "a tensor");
}

void check_saved_by(const StateDict& sd, const std::string& type, std::size_t groups)
{
    const char* who = type.c_str();
    const std::string& saved = get_string(sd, "type", who);
    SPOOL_CHECK(saved == type, ValueError, type, ": load_state_dict: the state was saved by ", saved);
    const std::int64_t ng = get_int(sd, "param_groups", who);
    SPOOL_CHECK(ng == static_cast<std::int64_t>(groups), ValueError, type, ": load_state_dict: the state has ", ng,
                " parameter groups but the optimizer has ", groups);
}

}  // namespace spool::optim
