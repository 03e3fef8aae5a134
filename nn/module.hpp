// Module: the base of every layer. Parameters, buffers and submodules are registered by
// name in constructors; named_parameters() walks them in registration order with dotted
// names, as PyTorch does, so state_dicts move between spool and PyTorch by name.
// Modules are value types: copying one shares its parameters (Tensor handles), clone()
// makes a deep copy. Submodules are held as shared_ptr members.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.hpp"

namespace spool::nn {

/// Name -> tensor pairs in order: state dicts, named_parameters().
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// What a non-strict load_state_dict did not match.
struct LoadResult {
    std::vector<std::string> missing_keys;
    std::vector<std::string> unexpected_keys;
};

class Module {
public:
    explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
    virtual ~Module() = default;
    Module(const Module&) = default;
    Module& operator=(const Module&) = default;

    /// The PyTorch class name ("Linear", "TransformerEncoderLayer").
    const std::string& type_name() const { return type_name_; }

    /// Parameters with dotted names; a tensor registered twice (tied weights) is listed once,
    /// under its first name, as PyTorch's remove_duplicate=True.
    NamedTensors named_parameters(bool recurse = true) const;
    std::vector<Tensor> parameters(bool recurse = true) const;
    NamedTensors named_buffers(bool recurse = true) const;
    const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
    /// Total number of parameter elements.
    std::int64_t num_parameters() const;

    /// Training mode (dropout active) for this module and every submodule.
    void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }

    /// Convert every floating parameter and buffer to dt in place (handles stay valid).
    void to(DType dt);
    /// Set every parameter's gradient to undefined (PyTorch's set_to_none=True).
    void zero_grad();

    /// Parameters and persistent buffers by dotted name (shares the tensors).
    NamedTensors state_dict() const;
    /// Copy values in by name, each converted to the existing tensor's dtype. Strict: every
    /// missing and unexpected key and every shape mismatch in one ValueError (one line per
    /// kind, with counts, the first 10 of each named); non-strict: returns what did not match
    /// (shape mismatches still throw). Nothing is copied when it throws.
    LoadResult load_state_dict(const NamedTensors& state, bool strict = true);

    /// Replace the registered parameter `name` of this module by t (same shape), e.g. to tie
    /// a generator's weight to an embedding; the caller also updates its own field.
    void set_parameter(const std::string& name, const Tensor& t);

    /// A deep copy: new tensors with the same values, same training mode.
    virtual std::shared_ptr<Module> clone() const = 0;

    /// The module tree, PyTorch's layout plus parameter counts.
    std::string repr() const;
    /// The text inside this module's parentheses ("in_features=4, out_features=2, bias=True").
    virtual std::string extra_repr() const { return ""; }

protected:
    /// Register a parameter (requires_grad set); an undefined tensor registers nothing (bias=False).
    Tensor register_parameter(const std::string& name, Tensor t);
    /// Register a buffer; non-persistent buffers are left out of state_dict().
    Tensor register_buffer(const std::string& name, Tensor t, bool persistent = true);
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m)
    {
        add_child(name, m);
        return m;
    }
    /// Deep-copy every registered tensor's value from other (same structure), and the mode.
    void copy_state_from(const Module& other);

private:
    void add_child(const std::string& name, std::shared_ptr<Module> m);
    void collect(const std::string& prefix, NamedTensors& out, bool params, bool recurse, bool persistent_only) const;
    void repr_into(std::string& out, int indent) const;

    std::string type_name_;
    NamedTensors params_;
    NamedTensors buffers_;
    std::vector<bool> persistent_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    bool training_ = true;
};

/// clone() for a module type D constructible from its `options` member.
template <class D>
class Cloneable : public Module {
public:
    using Module::Module;
    std::shared_ptr<Module> clone() const override { return clone_as(); }
    std::shared_ptr<D> clone_as() const
    {
        auto c = std::make_shared<D>(static_cast<const D&>(*this).options);
        c->copy_state_from(*this);
        return c;
    }
};

std::ostream& operator<<(std::ostream& os, const Module& m);

/// load_state_dict's error text: a header line naming the module, then one line per kind of
/// problem with its count — each size mismatch on its own line ("'name': expected (a, b), got
/// (c, d)"), the keys quoted and comma-separated — naming at most 10 of each and counting the
/// rest, and a hint when the saved names differ from the module's by one prefix ("module.").
std::string load_error_message(const std::string& module, const std::vector<std::string>& size_mismatches,
                               const std::vector<std::string>& undefined, const std::vector<std::string>& missing,
                               const std::vector<std::string>& unexpected);

}  // namespace spool::nn
