// spool::Tensor: a cheap handle (shared ownership) to a value, an optional gradient and
// its link to the tape. Creation functions and printing live here; differentiable ops
// are in autograd/ops.hpp, the tape in autograd/tape.hpp. Copying a Tensor shares it.
#pragma once
#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <vector>

#include "tensor/value.hpp"

namespace spool {

/// A C++ type that is some dtype's element type: float, double, std::int64_t or bool.
template <class T>
concept Element = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, std::int64_t> ||
                  std::same_as<T, bool>;

struct GradReadyHooks;  // autograd/tape.hpp

struct TensorImpl {
    Value value;
    Value grad;                   ///< leaves only: accumulated by backward until zero_grad
    Value staged_grad;            ///< a running backward's sum for this leaf, added to grad when it succeeds
    bool requires_grad = false;
    std::uint64_t tape_id = 0;    ///< the tape whose node produced this tensor (0: a leaf)
    std::int32_t node = -1;       ///< index of that node on its tape
    std::int32_t output = 0;      ///< which output of the node
    std::shared_ptr<GradReadyHooks> ready_hooks;  ///< leaves only: add_grad_ready_hook (tape.hpp)
};

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(Value v, bool requires_grad = false);

    bool defined() const { return impl_ != nullptr; }
    // Every accessor below throws ValueError on an undefined tensor (never dereferences null).
    const Value& value() const { return get("value()").value; }
    Value& value() { return get("value()").value; }
    const Shape& shape() const { return get("shape()").value.shape(); }
    std::int64_t size(int dim) const;
    int dim() const { return get("dim()").value.rank(); }
    std::int64_t numel() const { return get("numel()").value.numel(); }
    DType dtype() const { return get("dtype()").value.dtype(); }

    bool requires_grad() const { return get("requires_grad()").requires_grad; }
    /// Mark a leaf as a parameter whose gradient backward accumulates. Float dtypes only.
    Tensor& requires_grad_(bool on = true);
    /// The accumulated gradient of a leaf (an undefined Tensor before the first backward).
    Tensor grad() const;
    /// Set the gradient, as PyTorch's `p.grad = g`: later backward passes add to it and
    /// optimizers read it. g must have this tensor's shape (ShapeError) and dtype (TypeError);
    /// an undefined g clears the gradient (`p.grad = None`). The gradient shares g's storage
    /// (not its tape link); backward, clipping and zero_grad(false) never write into a
    /// shared buffer, so they leave g itself unchanged and continue in a copy.
    void set_grad(const Tensor& g);
    /// Set the gradient to undefined (`p.grad = None`).
    void zero_grad();
    /// A Tensor sharing the value, cut from the tape and from gradients.
    Tensor detach() const;
    /// True when produced by an op recorded on the currently live tape.
    bool is_leaf() const;

    /// The single element of a one-element tensor, as double; item<T>() as T, exactly
    /// (T the dtype's element type, like tolist<T>()): item<std::int64_t>() of an int64 tensor.
    template <Element T = double> T item() const;
    /// Flat element i, as double (bounds-checked).
    double at(std::int64_t i) const;
    /// Element at a multi-index (bounds-checked).
    double at(std::initializer_list<std::int64_t> idx) const;
    /// All elements, flattened. tolist() (= tolist<double>()) converts any dtype to double,
    /// exact for float32/float64/bool and for int64 up to 2^53 in magnitude. tolist<T>() for T
    /// the dtype's element type (float, double, std::int64_t, bool) copies the elements
    /// exactly, like PyTorch's tolist() giving ints for integer tensors; another T throws
    /// TypeError naming both types.
    template <Element T = double> std::vector<T> tolist() const;
    /// Writable elements: counts as an in-place change (bumps the version, see Value::version).
    template <class T> T* data()
    {
        const Value& v = get("data()").value;
        v.bump_version();
        return v.data<T>();
    }
    template <class T> const T* data() const { return get("data()").value.data<T>(); }

    /// Shorthand for the current tape's backward from this tensor.
    void backward() const;
    void backward(const Tensor& seed) const;

    const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
    bool same(const Tensor& o) const { return impl_ == o.impl_; }

private:
    TensorImpl& get(const char* what) const
    {
        if (!impl_) [[unlikely]]
            throw_undefined(what);
        return *impl_;
    }
    [[noreturn]] static void throw_undefined(const char* what);
    std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// ---- creation ------------------------------------------------------------------------------
struct TensorOptions {
    DType dtype = DType::f32;
    bool requires_grad = false;
};

Tensor empty(ShapeArg shape, TensorOptions o = {});
Tensor zeros(ShapeArg shape, TensorOptions o = {});
Tensor ones(ShapeArg shape, TensorOptions o = {});
Tensor full(ShapeArg shape, double value, TensorOptions o = {});
Tensor scalar(double value, TensorOptions o = {});
/// [start, end) with step, like torch.arange; int64 unless o.dtype says otherwise.
Tensor arange(double start, double end, double step = 1, TensorOptions o = {.dtype = DType::i64});
Tensor arange(double end, TensorOptions o = {.dtype = DType::i64});
/// From flat data and a shape (numel must match).
Tensor from_vector(const std::vector<double>& data, ShapeArg shape, TensorOptions o = {});
Tensor from_vector(const std::vector<float>& data, ShapeArg shape, TensorOptions o = {});
Tensor from_vector(const std::vector<std::int64_t>& data, ShapeArg shape, TensorOptions o = {.dtype = DType::i64});
Tensor from_vector(const std::vector<bool>& data, ShapeArg shape, TensorOptions o = {.dtype = DType::b8});
/// Uniform [0, 1) and standard normal from the seeded generator (spool::manual_seed).
Tensor rand(ShapeArg shape, TensorOptions o = {});
Tensor randn(ShapeArg shape, TensorOptions o = {});
/// Uniform [low, high).
Tensor uniform(ShapeArg shape, double low, double high, TensorOptions o = {});
/// Integers uniform in [low, high), like torch.randint: int64 unless o.dtype says otherwise.
/// Each value comes from 53 random bits (a bias below 2^-53 · (high - low)).
Tensor randint(std::int64_t low, std::int64_t high, ShapeArg shape, TensorOptions o = {.dtype = DType::i64});

}  // namespace spool
