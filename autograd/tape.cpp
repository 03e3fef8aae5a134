#include "autograd/tape.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <unordered_set>

#include "tensor/kernels.hpp"

namespace spool {

namespace {
thread_local Tape* t_current = nullptr;     // t_stack.back(), kept apart for the per-op check
thread_local std::vector<Tape*> t_stack;    // the live tapes of this thread, oldest first
thread_local int t_nograd = 0;
std::atomic<std::uint64_t> g_next_tape_id{1};
std::atomic<bool> g_anomaly{false};
std::atomic<std::uint64_t> g_next_hook_id{1};
std::atomic<std::int64_t> g_hook_count{0};  // registered grad-ready hooks: none, no scan in backward

void check_finite(const Value& v, const char* what, OpKind kind)
{
    if (!kernels::all_finite(v))
        throw ValueError(detail::cat(op_name(kind), ": ", what, " contains NaN or Inf (anomaly mode); shape ",
                                     to_string(v.shape())));
}

template <class T>
bool any_nan(const T* p, std::int64_t n)
{
    for (std::int64_t i = 0; i < n; ++i)
        if (p[i] != p[i]) return true;
    return false;
}

/// Forward outputs: NaN is always an anomaly, ±Inf is not — attention masks hold −inf on
/// purpose and log(0) is −inf; an infinity that matters turns into NaN downstream or into
/// an infinite gradient, which backward checks. The NaN scan runs only when the fast
/// all-finite test fails, so finite outputs cost what they did.
void check_output(const Value& v, OpKind kind)
{
    if (kernels::all_finite(v)) return;
    const bool nan = v.dtype() == DType::f32   ? any_nan(v.data<float>(), v.numel())
                     : v.dtype() == DType::f64 ? any_nan(v.data<double>(), v.numel())
                                               : false;
    if (nan)
        throw ValueError(detail::cat(op_name(kind), ": output contains NaN (anomaly mode); shape ", to_string(v.shape())));
}
/// slot += g: in place when slot's buffer is ours alone, else into a fresh buffer (a
/// gradient may share storage with another slot, e.g. add passes dy to both inputs).
void accumulate(Value& slot, Value g)
{
    if (!slot.defined())
        slot = std::move(g);
    else if (slot.use_count() == 1)
        kernels::add_(slot, g);
    else
        slot = kernels::add(slot, g);
}

bool live_on_this_thread(std::uint64_t tape_id)
{
    return std::any_of(t_stack.begin(), t_stack.end(), [&](const Tape* t) { return t->id() == tape_id; });
}

void check_saved_version(const Node& nd, const SavedVersion& sv)
{
    const std::shared_ptr<Storage> st = sv.storage.lock();
    if (!st || st->version() == sv.version) return;
    const std::string which = sv.input >= 0 ? detail::cat("an input saved for backward (input ", int{sv.input}, ", shape ",
                                                          to_string(nd.inputs[sv.input].shape), ")")
                                            : std::string("a tensor saved for backward (its output or an internal one)");
    throw AutogradError(detail::cat("backward of ", op_name(nd.kind), ": ", which, " was modified in place (version ",
                                    sv.version, " → ", st->version(),
                                    ") after the op ran, e.g. by optimizer.step() or an element write; run backward "
                                    "before changing it, or give the op a clone()"));
}

/// Add each leaf's staged gradient to its grad. Two phases, so that a failure (out of memory)
/// cannot leave some leaves updated and others not: first everything that may throw, then
/// only moves and in-place adds into buffers the leaf owns alone.
void commit_staged(std::vector<std::shared_ptr<TensorImpl>>& staged)
{
    std::vector<char> replace(staged.size());
    for (std::size_t i = 0; i < staged.size(); ++i) {
        TensorImpl& l = *staged[i];
        Value& g = l.staged_grad;
        if (!l.grad.defined()) {
            replace[i] = 1;
            if (g.use_count() > 1) g = g.clone();  // a leaf's grad is the user's: never share its buffer
        } else {
            SPOOL_CHECK(l.grad.shape() == g.shape() && l.grad.dtype() == g.dtype(), AutogradError,
                        "backward: a leaf's gradient is ", dtype_name(l.grad.dtype()), " ", to_string(l.grad.shape()),
                        " but the new one is ", dtype_name(g.dtype()), " ", to_string(g.shape()),
                        " (was its value replaced? call zero_grad())");
        }
        if (l.grad.defined() && l.grad.use_count() > 1) {  // cannot add in place into a shared buffer
            replace[i] = 1;
            g = kernels::add(l.grad, g);
        }
    }
    for (std::size_t i = 0; i < staged.size(); ++i) {
        TensorImpl& l = *staged[i];
        if (replace[i]) l.grad = std::move(l.staged_grad);
        else kernels::add_(l.grad, l.staged_grad);
        l.staged_grad = Value();
    }
}
}  // namespace

const char* op_name(OpKind k)
{
    static const char* names[] = {
#define SPOOL_X(kind, name) name,
        SPOOL_OP_KINDS(SPOOL_X)
#undef SPOOL_X
    };
    return names[static_cast<int>(k)];
}

void detect_anomaly(bool on) { g_anomaly = on; }
bool anomaly_enabled() { return g_anomaly; }

NoGrad::NoGrad() { ++t_nograd; }
NoGrad::~NoGrad() { --t_nograd; }

// ---- Grads -------------------------------------------------------------------------------

Grads::Grads(Node& node) : node_(node), g_(node.inputs.size()) {}

bool Grads::needs(int i) const
{
    const InputRef& in = node_.inputs[i];
    return in.leaf != nullptr || in.node >= 0;
}

void Grads::add(int i, Value g)
{
    const InputRef& in = node_.inputs[i];
    if (!needs(i)) return;
    SPOOL_CHECK(g.shape() == in.shape, AutogradError, op_name(node_.kind), ": gradient for input ", i, " has shape ",
                to_string(g.shape()), " but the input has shape ", to_string(in.shape));
    SPOOL_CHECK(g.dtype() == in.dtype, AutogradError, op_name(node_.kind), ": gradient for input ", i, " is ",
                dtype_name(g.dtype()), " but the input is ", dtype_name(in.dtype));
    accumulate(g_[i], std::move(g));
}

// ---- Tape ----------------------------------------------------------------------------------

Tape::Tape() : id_(g_next_tape_id++)
{
    t_stack.push_back(this);
    t_current = this;
}

// Tapes may end out of order (heap-allocated ones): this one leaves the stack from wherever
// it is, so current() never returns an ended tape and the nested ones keep recording.
Tape::~Tape()
{
    auto it = std::find(t_stack.rbegin(), t_stack.rend(), this);
    if (it != t_stack.rend()) t_stack.erase(std::next(it).base());
    t_current = t_stack.empty() ? nullptr : t_stack.back();
}

Tape* Tape::current() { return t_current; }

std::int32_t Tape::push(Node node, std::span<SavedVersion> saved)
{
    SPOOL_CHECK(!done_, AutogradError, op_name(node.kind),
                ": cannot record on a tape whose backward already ran; start a new Tape for the next step");
    node.saved_begin = static_cast<std::int32_t>(saved_.size());
    node.n_saved = static_cast<std::int32_t>(saved.size());
    for (SavedVersion& sv : saved) saved_.push_back(std::move(sv));
    nodes_.push_back(std::move(node));
    return static_cast<std::int32_t>(nodes_.size() - 1);
}

TapeStats Tape::stats() const
{
    TapeStats s;
    s.nodes = nodes_.size();
    for (const auto& n : nodes_)
        if (n.backward) {
            ++s.live_nodes;
            s.saved_bytes += n.saved_bytes;
        }
    return s;
}

void Tape::backward(const Tensor& root)
{
    SPOOL_CHECK(root.defined(), AutogradError, "backward: the tensor is undefined");
    SPOOL_CHECK(root.numel() == 1, AutogradError,
                "backward: grad can be implicitly created only for scalar outputs; got shape ", to_string(root.shape()),
                " (pass a seed gradient of that shape)");
    run_backward(root, Value::full(root.shape(), 1.0, root.dtype()));
}

void Tape::backward(const Tensor& root, const Tensor& seed)
{
    SPOOL_CHECK(root.defined() && seed.defined(), AutogradError, "backward: the tensor or the seed is undefined");
    SPOOL_CHECK(seed.shape() == root.shape(), ShapeError, "backward: seed gradient shape ", to_string(seed.shape()),
                " does not match the output shape ", to_string(root.shape()));
    run_backward(root, kernels::cast(seed.value(), root.dtype()));
}

void Tape::run_backward(const Tensor& root, Value seed)
{
    SPOOL_CHECK(!done_, AutogradError,
                "backward: this tape's backward already ran (its saved tensors are freed); record the step again on a "
                "new Tape");
    SPOOL_CHECK(root.requires_grad(), AutogradError,
                "backward: the tensor does not require grad (no input of its ops requires grad, or it was computed "
                "outside this tape)");
    const TensorImpl& r = *root.impl();
    if (r.node >= 0 && r.tape_id != id_) {
        SPOOL_CHECK(!live_on_this_thread(r.tape_id), AutogradError,
                    "backward: this tensor was recorded on another live Tape (an enclosing or a nested one); call "
                    "that tape's backward");
        throw AutogradError(
            "backward: the tape that recorded this tensor has ended, so no gradient can flow from it; keep the Tape "
            "alive until backward has run");
    }
    done_ = true;
    profiler::Scope prof("tape.backward", profiler::Pass::backward);  // self time: the tape's own work
    if (r.node < 0) {  // a leaf: its gradient is the seed
        accumulate(root.impl()->grad, std::move(seed));
        return;
    }
    nodes_[r.node].dout[r.output] = std::move(seed);
    // Leaves' gradients are summed aside and added to grad only when the whole pass succeeded:
    // a backward that throws (anomaly mode, a tensor changed in place) leaves every grad as it was.
    std::vector<std::shared_ptr<TensorImpl>> staged;
    try {
        backprop(staged);
        commit_staged(staged);
    } catch (...) {
        for (auto& l : staged) l->staged_grad = Value();
        throw;
    }
}

/// The leaves with grad-ready hooks, each with the node after whose backward its gradient is
/// complete: the first node that uses it (backward walks the nodes in reverse). Sorted by
/// that node, last first.
std::vector<std::pair<std::int32_t, std::shared_ptr<TensorImpl>>> Tape::hooked_leaves() const
{
    std::vector<std::pair<std::int32_t, std::shared_ptr<TensorImpl>>> out;
    if (g_hook_count.load(std::memory_order_relaxed) == 0) return out;
    std::unordered_set<const TensorImpl*> seen;
    for (std::int32_t i = 0; i < static_cast<std::int32_t>(nodes_.size()); ++i)
        for (const InputRef& in : nodes_[i].inputs) {
            if (!in.leaf || !in.leaf->ready_hooks || in.leaf->ready_hooks->hooks.empty()) continue;
            if (seen.insert(in.leaf.get()).second) out.emplace_back(i, in.leaf);
        }
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    return out;
}

void Tape::backprop(std::vector<std::shared_ptr<TensorImpl>>& staged)
{
    const bool anomaly = g_anomaly;
    const auto hooked = hooked_leaves();
    std::size_t next_hooked = 0;
    for (std::int32_t i = static_cast<std::int32_t>(nodes_.size()) - 1; i >= 0; --i) {
        Node& nd = nodes_[i];
        bool any = false;
        for (const auto& d : nd.dout) any |= d.defined();
        if (any && nd.backward) {
            for (int s = 0; s < nd.n_saved; ++s) check_saved_version(nd, saved_[nd.saved_begin + s]);
            if (anomaly)
                for (const auto& d : nd.dout)
                    if (d.defined()) check_finite(d, "incoming gradient", nd.kind);
            profiler::Scope prof;  // this node's backward and the accumulation of what it returns
            if (profiler::enabled()) prof.begin(op_name(nd.kind), profiler::Pass::backward);
            Grads g(nd);
            nd.backward(nd.dout, g);
            for (int j = 0; j < g.size(); ++j) {
                Value& gj = g[j];
                if (!gj.defined()) continue;
                if (anomaly) check_finite(gj, "gradient", nd.kind);
                InputRef& in = nd.inputs[j];
                if (in.leaf) {
                    if (!in.leaf->staged_grad.defined()) staged.push_back(in.leaf);
                    accumulate(in.leaf->staged_grad, std::move(gj));
                } else {
                    accumulate(nodes_[in.node].dout[in.output], std::move(gj));
                }
            }
        }
        // free what this node held: closure captures, incoming gradients, leaf refs
        nd.backward = nullptr;
        nd.dout.clear();
        nd.inputs.clear();
        for (int s = 0; s < nd.n_saved; ++s) saved_[nd.saved_begin + s].storage.reset();
        nd.n_saved = 0;
        // leaves whose last contribution was this node's: their gradient for this pass is complete
        for (; next_hooked < hooked.size() && hooked[next_hooked].first == i; ++next_hooked) {
            TensorImpl& leaf = *hooked[next_hooked].second;
            if (!leaf.staged_grad.defined()) continue;
            const auto hooks = leaf.ready_hooks->hooks;  // a copy: a hook may remove itself
            for (const auto& [id, hook] : hooks) hook(leaf.staged_grad);
        }
    }
}

// ---- gradient-ready hooks ------------------------------------------------------------------

std::uint64_t add_grad_ready_hook(const Tensor& t, GradReadyHook hook)
{
    SPOOL_CHECK(t.requires_grad() && t.impl()->node < 0, AutogradError,
                "add_grad_ready_hook: the tensor must be a leaf that requires grad (a parameter)");
    SPOOL_CHECK(hook != nullptr, ValueError, "add_grad_ready_hook: the hook is empty");
    auto& hooks = t.impl()->ready_hooks;
    if (!hooks) hooks = std::make_shared<GradReadyHooks>();
    const std::uint64_t id = g_next_hook_id++;
    hooks->hooks.emplace_back(id, std::move(hook));
    ++g_hook_count;
    return id;
}

void remove_grad_ready_hook(const Tensor& t, std::uint64_t id)
{
    if (!t.defined() || !t.impl()->ready_hooks) return;
    auto& hooks = t.impl()->ready_hooks->hooks;
    const auto it = std::find_if(hooks.begin(), hooks.end(), [&](const auto& h) { return h.first == id; });
    if (it == hooks.end()) return;
    hooks.erase(it);
    --g_hook_count;
}

// ---- recording -------------------------------------------------------------------------------

namespace detail {

bool recording(const Tensor* inputs, std::size_t n)
{
    if (!t_current || t_nograd > 0) return false;
    for (std::size_t i = 0; i < n; ++i)
        if (inputs[i].defined() && inputs[i].requires_grad()) return true;
    return false;
}

Tensor unrecorded(OpKind kind, Value out)
{
    if (g_anomaly) check_output(out, kind);
    return Tensor(std::move(out));
}

std::vector<Tensor> record_node(OpKind kind, const Tensor* inputs, std::size_t n, std::vector<Value> outs,
                                BackwardMulti backward, std::initializer_list<Value> saved)
{
    if (g_anomaly)
        for (const auto& o : outs) check_output(o, kind);
    Tape& tape = *t_current;
    Node node;
    node.kind = kind;
    node.inputs.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        const Tensor& t = inputs[i];
        InputRef& in = node.inputs[i];
        if (!t.defined()) continue;
        in.shape = t.shape();
        in.dtype = t.dtype();
        if (!t.requires_grad()) continue;
        const auto& impl = t.impl();
        if (impl->tape_id == tape.id() && impl->node >= 0) {
            in.node = impl->node;
            in.output = impl->output;
        } else {
            in.leaf = impl;
        }
    }
    node.dout.resize(outs.size());
    node.backward = std::move(backward);
    SPOOL_CHECK(saved.size() <= Node::max_saved, AutogradError, op_name(kind), ": saves ", saved.size(),
                " tensors for backward, more than Node::max_saved (", Node::max_saved, ")");
    std::array<SavedVersion, Node::max_saved> versions;
    int n_saved = 0;
    for (const auto& v : saved) {
        if (!v.defined()) continue;
        node.saved_bytes += v.nbytes();
        SavedVersion& sv = versions[n_saved++];
        sv.storage = v.storage();
        sv.version = v.version();
        for (std::size_t i = 0; i < n && sv.input < 0; ++i)
            if (inputs[i].defined() && inputs[i].value().shares_storage(v)) sv.input = static_cast<std::int8_t>(i);
    }
    std::int32_t id = tape.push(std::move(node), std::span(versions.data(), n_saved));
    std::vector<Tensor> result;
    result.reserve(outs.size());
    for (std::size_t k = 0; k < outs.size(); ++k) {
        Tensor t(std::move(outs[k]), false);
        auto& impl = *t.impl();
        impl.requires_grad = true;
        impl.tape_id = tape.id();
        impl.node = id;
        impl.output = static_cast<std::int32_t>(k);
        result.push_back(std::move(t));
    }
    return result;
}

}  // namespace detail

std::vector<Tensor> record_multi(OpKind kind, const std::vector<Tensor>& inputs, std::vector<Value> outs,
                                 BackwardMulti backward, std::initializer_list<Value> saved)
{
    if (!detail::recording(inputs.data(), inputs.size())) {
        std::vector<Tensor> r;
        for (auto& o : outs) r.push_back(detail::unrecorded(kind, std::move(o)));
        return r;
    }
    return detail::record_node(kind, inputs.data(), inputs.size(), std::move(outs), std::move(backward), saved);
}

}  // namespace spool
