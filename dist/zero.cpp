// ZeroRedundancyOptimizer: the flat layout, the reduce-scatter / step / all-gather cycle,
// clipping over shards, and the state_dict conversion between shards and one process.
// Layout: per dtype (a "space"), the parameters end to end in parameters() order, padded to
// shard · world elements; rank r owns elements [r · shard, (r + 1) · shard). The inner
// optimizer's tensors are views of the model's parameters (it updates them in place), their
// gradients views of the reduce-scatter's result, so besides the optimizer's own state ZeRO
// keeps one flat buffer per dtype, the size of the parameters, and a 4-8 MiB receive buffer.
#include "dist/zero.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "dist/comm.hpp"
#include "tensor/errors.hpp"
#include "tensor/optim_kernels.hpp"
#include "tensor/value.hpp"

namespace spool::dist {

struct ZeroRedundancyOptimizer::Space {
    DType dtype = DType::f32;
    std::int64_t numel = 0;  ///< parameter elements, without the padding
    std::int64_t shard = 0;  ///< elements per rank: ceil(numel / world)
    /// shard · world elements: the gradients to reduce-scatter (in place: this rank's block
    /// ends up holding the average), then the parameters to all-gather (in place)
    Value flat;
    Value recv;  ///< up to ring_chunk elements: the reduce-scatter's incoming chunk
};

namespace {
constexpr const char* who = "ZeroRedundancyOptimizer";
/// Elements per reduce-scatter message (4 MiB of float32): the receive buffer's size.
std::int64_t ring_chunk = std::int64_t{1} << 20;

/// Start every request in `start` and wait for them with the timeout.
template <class Start>
void collective(const char* name, const std::string& what, Start start)
{
    std::vector<MPI_Request> reqs;
    start(reqs);
    detail::wait_all(reqs.data(), static_cast<int>(reqs.size()), name, what);
}

/// In place over ranks: v[i] = op(v[i] on every rank).
template <class T>
void all_reduce_vec(std::vector<T>& v, MPI_Datatype type, MPI_Op op, const char* name)
{
    MPI_Comm c = detail::comm(name);
    collective(name, ::spool::detail::cat(v.size(), " values"), [&](std::vector<MPI_Request>& r) {
        r.emplace_back(MPI_REQUEST_NULL);
        detail::check(MPI_Iallreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), type, op, c, &r.back()), name);
    });
}

/// "state.<k>." and the rest of a state_dict key, when it is one.
bool split_state_key(const std::string& key, std::size_t& k, std::string& field)
{
    if (key.rfind("state.", 0) != 0) return false;
    const std::size_t dot = key.find('.', 6);
    if (dot == std::string::npos) return false;
    k = std::stoul(key.substr(6, dot - 6));
    field = key.substr(dot + 1);
    return true;
}

std::string state_key(std::size_t k, const std::string& field) { return "state." + std::to_string(k) + "." + field; }
}  // namespace

namespace detail {
std::int64_t set_reduce_scatter_chunk(std::int64_t elements)
{
    SPOOL_CHECK(elements > 0 && elements <= max_count, ValueError,
                "dist::detail::set_reduce_scatter_chunk: elements must be in [1, ", max_count, "]; got ", elements);
    return std::exchange(ring_chunk, elements);
}
}  // namespace detail

// ---- construction ---------------------------------------------------------------------------

ZeroRedundancyOptimizer::ZeroRedundancyOptimizer(std::vector<Tensor> params, const OptimizerFactory& make)
    : params_(std::move(params))
{
    SPOOL_CHECK(!params_.empty(), ValueError, who, ": got an empty parameter list");
    SPOOL_CHECK(static_cast<bool>(make), ValueError, who, ": the optimizer factory is empty");
    for (std::size_t i = 0; i < params_.size(); ++i) {
        SPOOL_CHECK(params_[i].defined(), ValueError, who, ": parameter ", i, " is undefined");
        SPOOL_CHECK(is_floating(params_[i].dtype()), TypeError, who, ": parameter ", i,
                    " must be float32 or float64; got ", dtype_name(params_[i].dtype()), " ",
                    to_string(params_[i].shape()));
        for (std::size_t j = 0; j < i; ++j)
            SPOOL_CHECK(params_[j].impl() != params_[i].impl(), ValueError, who, ": parameter ", i,
                        " is parameter ", j, " again; pass each parameter once");
    }
    init();
    // every rank must lay out the same parameters, or the collectives below would not match:
    // compare a fingerprint of (dtype, numel) of every parameter, its minimum and maximum
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over the layout
    for (const Tensor& p : params_)
        for (std::uint64_t x : {static_cast<std::uint64_t>(p.dtype()), static_cast<std::uint64_t>(p.numel())}) {
            h ^= x;
            h *= 1099511628211ull;
        }
    const auto fp = static_cast<std::int64_t>(h >> 1);
    std::vector<std::int64_t> range = {fp, -fp};
    all_reduce_vec(range, MPI_INT64_T, MPI_MAX, "ZeroRedundancyOptimizer");
    SPOOL_CHECK(range[0] == -range[1], ValueError, who, ": rank ", rank(),
                "'s parameters differ from another rank's in number, size or dtype (here ", params_.size(),
                " parameters, the first ", dtype_name(params_[0].dtype()), " ", to_string(params_[0].shape()),
                "); every rank must pass the same model's parameters");
    for (Tensor& p : params_) broadcast(p, 0);

    // one space per dtype, in order of first appearance
    const int world = world_size(), me = rank();
    space_of_.assign(params_.size(), 0);
    offset_of_.assign(params_.size(), 0);
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const DType dt = params_[i].dtype();
        auto it = std::find_if(spaces_.begin(), spaces_.end(), [dt](const Space& s) { return s.dtype == dt; });
        if (it == spaces_.end()) {
            spaces_.emplace_back();
            spaces_.back().dtype = dt;
            it = spaces_.end() - 1;
        }
        space_of_[i] = static_cast<int>(it - spaces_.begin());
        offset_of_[i] = it->numel;
        numel_of_.push_back(params_[i].numel());
        it->numel += params_[i].numel();
    }
    for (Space& s : spaces_) {
        s.shard = (s.numel + world - 1) / world;
        SPOOL_CHECK(s.shard <= detail::max_count, ValueError, who, ": ", s.numel, " ", dtype_name(s.dtype),
                    " elements make shards of ", s.shard, " elements, more than one MPI call takes (", detail::max_count,
                    "); use more ranks");
        s.flat = Value::zeros(Shape{s.shard * world}, s.dtype);
        s.recv = Value::zeros(Shape{std::min(s.shard, ring_chunk)}, s.dtype);
    }
    // this rank's pieces: each parameter's overlap with the rank's block of its space
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const Space& s = spaces_[space_of_[i]];
        const std::int64_t lo = std::max(offset_of_[i], me * s.shard);
        const std::int64_t hi = std::min(offset_of_[i] + params_[i].numel(), (me + 1) * s.shard);
        if (lo >= hi) continue;
        pieces_.push_back({.param = static_cast<int>(i), .begin = lo - offset_of_[i], .end = hi - offset_of_[i]});
        // a view of the parameter: the inner optimizer updates the model in place
        shard_.emplace_back(params_[i].value().view(Shape{params_[i].numel()}).narrow0(lo - offset_of_[i],
                                                                                     hi - offset_of_[i]));
        piece_space_.push_back(space_of_[i]);
        piece_at_.push_back(lo - me * s.shard);
    }
    // a rank whose block is all padding still needs an optimizer (schedules point at it):
    // give it one empty tensor, which never has a gradient
    std::vector<Tensor> given = shard_;
    if (given.empty()) given.emplace_back(Value::zeros(Shape{0}, spaces_[0].dtype));
    inner_ = make(given);
    SPOOL_CHECK(inner_ != nullptr, ValueError, who, ": the optimizer factory returned no optimizer");
    const std::vector<Tensor> got = inner_->parameters();
    bool same = got.size() == given.size();
    for (std::size_t k = 0; same && k < got.size(); ++k) same = got[k].impl() == given[k].impl();
    SPOOL_CHECK(same, ValueError, who, ": the optimizer factory must build the optimizer over the ", given.size(),
                " shard tensors it is given, in order; got ", inner_->name(), " over ", got.size(), " other tensors");
}

ZeroRedundancyOptimizer::~ZeroRedundancyOptimizer() = default;

// ---- a step ---------------------------------------------------------------------------------

void ZeroRedundancyOptimizer::reduce_gradients()
{
    if (reduced_) return;
    const int world = world_size();
    // 1 where this rank has a gradient; summed, 0 means no rank has one
    std::vector<int> has(params_.size(), 0);
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const Tensor g = params_[i].grad();
        has[i] = g.defined() ? 1 : 0;
        detail::write_flat(spaces_[space_of_[i]].flat, offset_of_[i], g.defined() ? &g.value() : nullptr,
                           params_[i].numel());
    }
    const char* name = "ZeroRedundancyOptimizer::reduce_gradients";
    all_reduce_vec(has, MPI_INT, MPI_SUM, name);
    // A ring reduce-scatter of point-to-point messages, not MPI_Ireduce_scatter_block: Open
    // MPI's non-blocking one (libnbc) reduces everything on rank 0 through a temporary buffer
    // the size of the gradients, then scatters. In round k rank r passes block r - k - 1 on to
    // rank r + 1 and adds block r - k - 2 from rank r - 1 into its own; after world - 1 rounds
    // block r holds the sum over every rank. Blocks travel in chunks of at most ring_chunk
    // elements, so the receive buffer stays small.
    MPI_Comm c = detail::comm(name);
    const int me = rank(), next = (me + 1) % world, prev = (me + world - 1) % world;
    auto block = [world](int b) { return ((b % world) + world) % world; };
    const std::string what = describe("gradient reduce-scatter");
    for (int k = 0; k + 1 < world; ++k) {
        for (std::size_t si = 0; si < spaces_.size(); ++si) {
            Space& s = spaces_[si];
            const MPI_Datatype t = detail::mpi_type(s.dtype);
            const auto item = static_cast<std::int64_t>(itemsize(s.dtype));
            const std::int64_t out = block(me - k - 1) * s.shard, in = block(me - k - 2) * s.shard;
            const std::int64_t chunk = s.recv.numel();  // ring_chunk when this optimizer was built
            std::vector<MPI_Request> sends;  // all chunks at once: they read a block nobody writes this round
            for (std::int64_t at = 0; at < s.shard; at += chunk) {
                const int count = static_cast<int>(std::min(chunk, s.shard - at));
                sends.emplace_back(MPI_REQUEST_NULL);
                detail::check(MPI_Isend(static_cast<char*>(s.flat.raw()) + (out + at) * item, count, t, next, 0, c,
                                        &sends.back()),
                              name);
            }
            for (std::int64_t at = 0; at < s.shard; at += chunk) {
                const int count = static_cast<int>(std::min(chunk, s.shard - at));
                MPI_Request recv = MPI_REQUEST_NULL;
                detail::check(MPI_Irecv(s.recv.raw(), count, t, prev, 0, c, &recv), name);
                detail::wait_all(&recv, 1, name, what);
                detail::add_flat(s.flat, in + at, s.recv, count);
            }
            detail::wait_all(sends.data(), static_cast<int>(sends.size()), name, what);
        }
    }
    for (Space& s : spaces_) {
        Value mine = s.flat.narrow0(me * s.shard, (me + 1) * s.shard);
        detail::divide(mine, s.shard, world);
    }
    for (std::size_t k = 0; k < pieces_.size(); ++k) {
        const ShardPiece& pc = pieces_[k];
        if (!has[pc.param]) {
            shard_[k].impl()->grad = Value();  // no rank produced one: the optimizer skips it
            continue;
        }
        const Space& s = spaces_[piece_space_[k]];
        const std::int64_t at = me * s.shard + piece_at_[k];
        shard_[k].impl()->grad = s.flat.narrow0(at, at + (pc.end - pc.begin));
    }
    reduced_ = true;
}

double ZeroRedundancyOptimizer::clip_grad_norm(double max_norm, double norm_type, bool error_if_nonfinite)
{
    SPOOL_CHECK(norm_type > 0, ValueError, who, "::clip_grad_norm: norm_type must be positive (or INFINITY); got ",
                norm_type);
    reduce_gradients();
    std::vector<Value*> grads;
    for (Tensor& t : shard_)
        if (t.impl()->grad.defined()) grads.push_back(&t.impl()->grad);
    std::vector<const Value*> view(grads.begin(), grads.end());
    const bool inf = std::isinf(norm_type);
    std::vector<double> part = {inf ? kernels::max_abs(view)
                                    : norm_type == 2.0 ? kernels::sum_squares(view)
                                                       : kernels::sum_abs_pow(view, norm_type)};
    all_reduce_vec(part, MPI_DOUBLE, inf ? MPI_MAX : MPI_SUM, "ZeroRedundancyOptimizer::clip_grad_norm");
    const double total = inf ? part[0] : norm_type == 2.0 ? std::sqrt(part[0]) : std::pow(part[0], 1.0 / norm_type);
    SPOOL_CHECK(!error_if_nonfinite || std::isfinite(total), ValueError, who,
                "::clip_grad_norm: the total norm of order ", norm_type, " of the gradients is non-finite (", total,
                "), so it cannot be clipped; pass error_if_nonfinite = false to scale by it anyway");
    const double coef = max_norm / (total + 1e-6);  // optim::clip_grad_norm's formula
    if (!(coef >= 1.0)) kernels::scale_(grads, coef);
    return total;
}

void ZeroRedundancyOptimizer::follow_parameters()
{
    for (std::size_t i = 0; i < params_.size(); ++i) {
        const Value& now = params_[i].value();
        const DType dt = spaces_[space_of_[i]].dtype;
        SPOOL_CHECK(now.dtype() == dt && now.numel() == numel_of_[i], ValueError, who, "::step: parameter ", i,
                    " was ", dtype_name(dt), " of ", numel_of_[i], " elements and is now ", dtype_name(now.dtype()), " ",
                    to_string(now.shape()), "; build a new ZeroRedundancyOptimizer after changing the model");
    }
    // Module::load_state_dict (io::load_checkpoint) gives a parameter new storage: view that
    for (std::size_t k = 0; k < pieces_.size(); ++k) {
        const ShardPiece& pc = pieces_[k];
        const Value& now = params_[pc.param].value();
        Value& view = shard_[k].impl()->value;
        if (!view.shares_storage(now)) view = now.view(Shape{now.numel()}).narrow0(pc.begin, pc.end);
    }
}

bool ZeroRedundancyOptimizer::step()
{
    reduce_gradients();
    follow_parameters();
    if (inner_->skips_nonfinite()) {
        // every rank must agree, or the ranks' parameters would part ways
        std::vector<const Value*> grads;
        for (const Tensor& t : shard_) grads.push_back(&t.impl()->grad);
        std::vector<int> ok = {kernels::all_finite(grads) ? 1 : 0};
        all_reduce_vec(ok, MPI_INT, MPI_MIN, "ZeroRedundancyOptimizer::step");
        if (!ok[0]) return false;
    }
    inner_->step();
    gather_parameters();
    reduced_ = false;
    return true;
}

std::string ZeroRedundancyOptimizer::describe(const char* what) const
{
    std::size_t bytes = 0;
    for (const Space& s : spaces_) bytes += s.flat.nbytes();
    return ::spool::detail::cat(what, ", ", spaces_.size(), " dtypes, ", bytes, " bytes");
}

void ZeroRedundancyOptimizer::gather_parameters()
{
    // this rank's updated block into place (over its gradients, now used), then everyone's
    const int me = rank();
    for (std::size_t k = 0; k < pieces_.size(); ++k) {
        Space& s = spaces_[piece_space_[k]];
        detail::write_flat(s.flat, me * s.shard + piece_at_[k], &shard_[k].value(), shard_[k].numel());
    }
    MPI_Comm c = detail::comm("ZeroRedundancyOptimizer::step");
    collective("ZeroRedundancyOptimizer::step", describe("parameter all-gather"), [&](std::vector<MPI_Request>& r) {
        for (Space& s : spaces_) {
            r.emplace_back(MPI_REQUEST_NULL);
            const MPI_Datatype t = detail::mpi_type(s.dtype);
            detail::check(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, s.flat.raw(), static_cast<int>(s.shard),
                                         t, c, &r.back()),
                          "ZeroRedundancyOptimizer::step");
        }
    });
    for (std::size_t i = 0; i < params_.size(); ++i)
        detail::read_flat(spaces_[space_of_[i]].flat, offset_of_[i], params_[i].value(), params_[i].numel());
}

void ZeroRedundancyOptimizer::zero_grad(bool set_to_none)
{
    for (Tensor& p : params_) {
        Value& d = p.impl()->grad;
        if (set_to_none || !d.defined()) d = Value();
        else d = Value::zeros(d.shape(), d.dtype());
    }
    for (Tensor& t : shard_) t.impl()->grad = Value();  // views of the flat buffer, refilled by the next reduce
    reduced_ = false;
}

// ---- state_dict: shards <-> one process ------------------------------------------------------

optim::StateDict ZeroRedundancyOptimizer::consolidate_state_dict(int to)
{
    const char* name = "ZeroRedundancyOptimizer::consolidate_state_dict";
    const int world = world_size(), me = rank();
    SPOOL_CHECK(to >= 0 && to < world, ValueError, name, ": to must be in [0, ", world, "); got ", to);
    const optim::StateDict local = inner_->state_dict();

    // the per-parameter fields, the union over ranks ("T" tensor, "I" int64, "D" double + name)
    std::set<std::string> fields;
    for (const auto& [key, entry] : local) {
        std::size_t k = 0;
        std::string field;
        if (!split_state_key(key, k, field)) continue;
        const char kind = std::holds_alternative<Value>(entry)          ? 'T'
                          : std::holds_alternative<std::int64_t>(entry) ? 'I'
                          : std::holds_alternative<double>(entry)       ? 'D'
                                                                        : 'S';
        SPOOL_CHECK(kind != 'S', ValueError, name, ": per-parameter state '", key, "' is a string; not supported");
        fields.insert(std::string(1, kind) + field);
    }
    std::string mine;
    for (const std::string& f : fields) mine += f + '\n';
    MPI_Comm c = detail::comm(name);
    std::vector<int> lens(static_cast<std::size_t>(world), 0);
    const int my_len = static_cast<int>(mine.size());
    collective(name, "field names", [&](std::vector<MPI_Request>& r) {
        r.emplace_back(MPI_REQUEST_NULL);
        detail::check(MPI_Iallgather(&my_len, 1, MPI_INT, lens.data(), 1, MPI_INT, c, &r.back()), name);
    });
    std::vector<int> displs(static_cast<std::size_t>(world), 0);
    for (int r = 1; r < world; ++r) displs[r] = displs[r - 1] + lens[r - 1];
    std::string all(static_cast<std::size_t>(displs[world - 1] + lens[world - 1]), '\0');
    collective(name, "field names", [&](std::vector<MPI_Request>& r) {
        r.emplace_back(MPI_REQUEST_NULL);
        detail::check(MPI_Iallgatherv(mine.data(), my_len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                                      c, &r.back()),
                      name);
    });
    for (std::size_t a = 0, b; a < all.size(); a = b + 1) {
        b = all.find('\n', a);
        fields.insert(all.substr(a, b - a));
    }

    optim::StateDict full;
    if (me == to) {
        for (const auto& [key, entry] : local) {
            std::size_t k = 0;
            std::string field;
            if (!split_state_key(key, k, field)) full[key] = entry;
        }
        full["param_groups.0.params"] = static_cast<std::int64_t>(params_.size());
    }
    const std::size_t n = params_.size();
    for (const std::string& f : fields) {
        const char kind = f[0];
        const std::string field = f.substr(1);
        if (kind == 'T') {
            // each rank's pieces into its block, gathered on `to`; present where any piece has it
            std::vector<int> present(n, 0);
            std::vector<Value> send;
            for (const Space& s : spaces_) send.push_back(Value::zeros(Shape{s.shard}, s.dtype));
            for (std::size_t k = 0; k < pieces_.size(); ++k) {
                auto it = local.find(state_key(k, field));
                if (it == local.end()) continue;
                const Value& v = std::get<Value>(it->second);
                const Space& s = spaces_[piece_space_[k]];
                SPOOL_CHECK(v.dtype() == s.dtype && v.numel() == pieces_[k].end - pieces_[k].begin, ValueError, name,
                            ": state '", state_key(k, field), "' is ", dtype_name(v.dtype()), " ", to_string(v.shape()),
                            "; expected the shard tensor's ", dtype_name(s.dtype), " (",
                            pieces_[k].end - pieces_[k].begin, ")");
                detail::write_flat(send[static_cast<std::size_t>(piece_space_[k])], piece_at_[k], &v, v.numel());
                present[pieces_[k].param] = 1;
            }
            all_reduce_vec(present, MPI_INT, MPI_MAX, name);
            std::vector<Value> whole;
            for (const Space& s : spaces_) whole.push_back(me == to ? Value::zeros(Shape{s.shard * world}, s.dtype) : Value());
            collective(name, ::spool::detail::cat("state '", field, "'"), [&](std::vector<MPI_Request>& r) {
                for (std::size_t si = 0; si < spaces_.size(); ++si) {
                    r.emplace_back(MPI_REQUEST_NULL);
                    const MPI_Datatype t = detail::mpi_type(spaces_[si].dtype);
                    const int count = static_cast<int>(spaces_[si].shard);
                    detail::check(MPI_Igather(send[si].raw(), count, t, me == to ? whole[si].raw() : nullptr, count, t,
                                              to, c, &r.back()),
                                  name);
                }
            });
            if (me != to) continue;
            for (std::size_t i = 0; i < n; ++i) {
                if (!present[i]) continue;
                Value v = Value::empty(params_[i].shape(), params_[i].dtype());
                detail::read_flat(whole[static_cast<std::size_t>(space_of_[i])], offset_of_[i], v, params_[i].numel());
                full[state_key(i, field)] = std::move(v);
            }
        } else {
            // a per-parameter scalar (Adam's step): the same in every piece of a parameter
            std::vector<double> value(n, -std::numeric_limits<double>::infinity());
            for (std::size_t k = 0; k < pieces_.size(); ++k) {
                auto it = local.find(state_key(k, field));
                if (it == local.end()) continue;
                value[pieces_[k].param] = kind == 'I' ? static_cast<double>(std::get<std::int64_t>(it->second))
                                                      : std::get<double>(it->second);
            }
            all_reduce_vec(value, MPI_DOUBLE, MPI_MAX, name);
            if (me != to) continue;
            for (std::size_t i = 0; i < n; ++i) {
                if (std::isinf(value[i]) && value[i] < 0) continue;
                if (kind == 'I') full[state_key(i, field)] = static_cast<std::int64_t>(value[i]);
                else full[state_key(i, field)] = value[i];
            }
        }
    }
    return full;
}

void ZeroRedundancyOptimizer::load_state_dict(const optim::StateDict& full)
{
    const char* name = "ZeroRedundancyOptimizer::load_state_dict";
    const std::int64_t groups = optim::get_int(full, "param_groups", name);
    SPOOL_CHECK(groups == 1, ValueError, name, ": the state has ", groups,
                " parameter groups; a ZeroRedundancyOptimizer's single-process layout has 1");
    const std::int64_t np = optim::get_int(full, "param_groups.0.params", name);
    SPOOL_CHECK(np == static_cast<std::int64_t>(params_.size()), ValueError, name, ": the state has ", np,
                " parameters but this optimizer has ", params_.size());
    optim::StateDict local;
    for (const auto& [key, entry] : full) {
        std::size_t k = 0;
        std::string field;
        if (!split_state_key(key, k, field)) local[key] = entry;
    }
    local["param_groups.0.params"] = static_cast<std::int64_t>(inner_->parameters().size());
    for (std::size_t k = 0; k < pieces_.size(); ++k) {
        const ShardPiece& pc = pieces_[k];
        const Tensor& p = params_[pc.param];
        const std::string prefix = "state." + std::to_string(pc.param) + ".";
        for (auto it = full.lower_bound(prefix); it != full.end() && it->first.rfind(prefix, 0) == 0; ++it) {
            const std::string field = it->first.substr(prefix.size());
            const Value* v = std::get_if<Value>(&it->second);
            if (!v) {
                local[state_key(k, field)] = it->second;
                continue;
            }
            SPOOL_CHECK(v->shape() == p.shape(), ShapeError, name, ": ", it->first, " has shape ", to_string(v->shape()),
                        " but parameter ", pc.param, " has shape ", to_string(p.shape()));
            local[state_key(k, field)] = v->view(Shape{v->numel()}).narrow0(pc.begin, pc.end).clone();
        }
    }
    inner_->load_state_dict(local);
}

}  // namespace spool::dist
