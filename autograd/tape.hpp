// The tape: a Wengert list of recorded ops (docs/autograd.md, "The tape"). A Tape object records
// the ops run on its thread while it lives (RAII, thread-local, nestable); backward
// walks the nodes in reverse — recording order is already topological, so no sort.
// Gradients accumulate into leaves; a node's saved tensors are freed as soon as its
// backward has run. Also: NoGrad, anomaly mode, and record() that ops use.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <initializer_list>
#include <vector>

#include "autograd/op_kind.hpp"
#include "autograd/tensor.hpp"
#include "tensor/profiler.hpp"

namespace spool {

struct Node;

/// What a backward closure writes into: one gradient slot per input of its op.
class Grads {
public:
    explicit Grads(Node& node);
    /// True when input i needs a gradient (skip computing those that do not).
    bool needs(int i) const;
    /// Accumulate g into input i's gradient; g must have that input's shape and dtype.
    void add(int i, Value g);
    Value& operator[](int i) { return g_[i]; }
    int size() const { return static_cast<int>(g_.size()); }

private:
    Node& node_;
    std::vector<Value> g_;
};

/// Backward of a single-output op: dy is the output's gradient.
using Backward = std::function<void(const Value& dy, Grads& dx)>;
/// Backward of a multi-output op: dys[k] is output k's gradient, undefined if none reached it.
using BackwardMulti = std::function<void(const std::vector<Value>& dys, Grads& dx)>;

struct InputRef {
    std::shared_ptr<TensorImpl> leaf;  ///< set when the input is a leaf that requires grad
    std::int32_t node = -1;            ///< else the producing node on this tape (or -1: no grad)
    std::int32_t output = 0;
    Shape shape;
    DType dtype = DType::f32;
};

/// A tensor an op saved for backward, and its storage's version at that moment: backward
/// refuses to run the op's backward if the storage changed in place since. Weak, so that it
/// neither keeps memory alive nor changes use_count() (gradient accumulation relies on it).
struct SavedVersion {
    std::weak_ptr<Storage> storage;
    std::uint64_t version = 0;
    std::int8_t input = -1;  ///< which input it is (-1: the output or an internal tensor)
};

struct Node {
    static constexpr int max_saved = 6;
    OpKind kind;
    std::vector<InputRef> inputs;
    std::vector<Value> dout;  ///< gradient slot per output, filled during backward
    BackwardMulti backward;
    std::size_t saved_bytes = 0;
    std::int32_t saved_begin = 0;  ///< its SavedVersions on the tape (kept apart: nodes stay small)
    std::int32_t n_saved = 0;
};

struct TapeStats {
    std::size_t nodes = 0;        ///< ops recorded
    std::size_t live_nodes = 0;   ///< nodes whose saved tensors are still held
    std::size_t saved_bytes = 0;  ///< bytes of tensors still held for backward
};

class Tape {
public:
    Tape();
    ~Tape();
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    /// Backpropagate from a scalar: gradients accumulate into leaves' grad().
    void backward(const Tensor& root);
    /// Backpropagate from any tensor with an explicit seed gradient of its shape.
    void backward(const Tensor& root, const Tensor& seed);
    TapeStats stats() const;
    std::uint64_t id() const { return id_; }

    /// The innermost live tape on this thread (nullptr if none). Tapes may end in any order:
    /// an ended tape leaves the thread's stack wherever it is in it.
    static Tape* current();

    // used by record()
    std::int32_t push(Node node, std::span<SavedVersion> saved);
    Node& node(std::int32_t i) { return nodes_[i]; }

private:
    void run_backward(const Tensor& root, Value seed);
    void backprop(std::vector<std::shared_ptr<TensorImpl>>& staged);
    std::vector<std::pair<std::int32_t, std::shared_ptr<TensorImpl>>> hooked_leaves() const;
    std::vector<Node> nodes_;
    std::vector<SavedVersion> saved_;
    std::uint64_t id_;
    bool done_ = false;
};

// ---- gradient-ready hooks ---------------------------------------------------------------

/// Called during backward as soon as this pass's gradient for a leaf is complete — every op
/// that used the leaf has run its backward — with that pass's sum, which is not yet in the
/// leaf's grad(): backward adds every leaf's sum at its end, and only if the whole pass
/// succeeds. So work can start on a gradient while backward goes on (DDP's all-reduce). Not
/// called for a leaf that no gradient reached. A hook that throws aborts the backward.
using GradReadyHook = std::function<void(const Value& pass_grad)>;

struct GradReadyHooks {
    std::vector<std::pair<std::uint64_t, GradReadyHook>> hooks;
};

/// Register hook on the leaf t (a tensor that requires grad); returns its id.
std::uint64_t add_grad_ready_hook(const Tensor& t, GradReadyHook hook);
/// Remove the hook with this id from t (no effect if it is not there).
void remove_grad_ready_hook(const Tensor& t, std::uint64_t id);

/// Pauses recording on this thread while it lives.
class NoGrad {
public:
    NoGrad();
    ~NoGrad();
    NoGrad(const NoGrad&) = delete;
    NoGrad& operator=(const NoGrad&) = delete;
};

/// Anomaly mode: every op checks its outputs, every backward its gradients, for NaN/Inf
/// and throws ValueError naming the op. Global switch.
void detect_anomaly(bool on);
bool anomaly_enabled();

namespace detail {
/// Times an op's forward for the profiler (tensor/profiler.hpp): the first line of every op
/// function. Off, it costs one relaxed load and a branch; op_name() is looked up only when on.
class OpProfile {
public:
    explicit OpProfile(OpKind kind)
    {
        if (profiler::enabled()) scope_.begin(op_name(kind), profiler::Pass::forward);
    }

private:
    profiler::Scope scope_;
};

bool recording(const Tensor* inputs, std::size_t n);
/// An unrecorded result (anomaly-checked): no tape, NoGrad, or no input requires grad.
Tensor unrecorded(OpKind kind, Value out);
std::vector<Tensor> record_node(OpKind kind, const Tensor* inputs, std::size_t n, std::vector<Value> outs,
                                BackwardMulti backward, std::initializer_list<Value> saved);
}  // namespace detail

/// Wrap out as the result of op kind on inputs; records a node when a tape is recording
/// and an input requires grad. saved lists what the backward closure keeps alive (for
/// tape.stats()). The closure is only turned into a std::function when recording.
template <class F>
Tensor record(OpKind kind, std::initializer_list<Tensor> inputs, Value out, F&& backward,
              std::initializer_list<Value> saved = {})
{
    if (!detail::recording(inputs.begin(), inputs.size())) return detail::unrecorded(kind, std::move(out));
    std::vector<Value> outs{std::move(out)};
    return detail::record_node(kind, inputs.begin(), inputs.size(), std::move(outs),
                               [bw = std::forward<F>(backward)](const std::vector<Value>& d, Grads& g) { bw(d[0], g); },
                               saved)[0];
}

template <class F>
Tensor record(OpKind kind, const std::vector<Tensor>& inputs, Value out, F&& backward,
              std::initializer_list<Value> saved = {})
{
    if (!detail::recording(inputs.data(), inputs.size())) return detail::unrecorded(kind, std::move(out));
    std::vector<Value> outs{std::move(out)};
    return detail::record_node(kind, inputs.data(), inputs.size(), std::move(outs),
                               [bw = std::forward<F>(backward)](const std::vector<Value>& d, Grads& g) { bw(d[0], g); },
                               saved)[0];
}

/// Several outputs (e.g. attention output and weights): backward gets one slot per output,
/// undefined where no gradient arrived.
std::vector<Tensor> record_multi(OpKind kind, const std::vector<Tensor>& inputs, std::vector<Value> outs,
                                 BackwardMulti backward, std::initializer_list<Value> saved = {});

}  // namespace spool
