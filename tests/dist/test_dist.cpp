// dist/: collectives, bucketing, no_sync, the timeout, and DDP's equivalence with one
// process on the whole batch. Runs under `mpirun -np 2` (tests/meson.build); every rank runs
// every test case in the same order, so their collectives match. Values are chosen so that
// sums over ranks are exact in float32, and the expected results are computed on each rank.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "dist/ddp.hpp"
#include "dist/dist.hpp"
#include "dist/zero.hpp"
#include "spool.hpp"
#include "tolerances.hpp"

using namespace spool;

namespace {
const std::vector<std::int64_t> sizes = {1, 7, 8, 9, 31, 33, 1000};

void setup()
{
    dist::init();
    set_num_threads(1);  // two ranks share this machine's cores
}

/// Element i of rank r's test tensor: multiples of 1/4, so sums over ranks are exact.
double value_at(std::int64_t i, int r) { return static_cast<double>(i % 13) * 0.25 - 1.5 + r * (i % 5 + 1); }

Tensor rank_tensor(std::int64_t n, DType dt, int r)
{
    std::vector<double> v(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) v[i] = dt == DType::i64 ? static_cast<double>(i * (r + 2) - 3 * r) : value_at(i, r);
    if (dt == DType::i64) {
        std::vector<std::int64_t> w(v.begin(), v.end());
        return from_vector(w, {n});
    }
    return from_vector(v, {n}, {.dtype = dt});
}

/// True when t holds the same bits on every rank (rank 0's copy broadcast and compared).
bool same_on_all_ranks(const Tensor& t)
{
    Tensor root(t.value().clone());
    dist::broadcast(root, 0);
    return root.tolist() == t.tolist();
}

/// A module of many parameters of the given sizes and dtypes, for bucketing.
class ManyParams : public nn::Module {
public:
    explicit ManyParams(const std::vector<std::pair<std::int64_t, DType>>& specs) : Module("ManyParams")
    {
        for (std::size_t i = 0; i < specs.size(); ++i)
            ps.push_back(register_parameter("p" + std::to_string(i), zeros({specs[i].first}, {.dtype = specs[i].second})));
    }
    std::shared_ptr<nn::Module> clone() const override { return std::make_shared<ManyParams>(*this); }
    std::vector<Tensor> ps;
};
}  // namespace

TEST_CASE("init is idempotent; rank and world size")
{
    setup();
    dist::init();
    CHECK(dist::initialized());
    REQUIRE(dist::world_size() == 2);  // tests/meson.build runs this with mpirun -np 2
    CHECK(dist::rank() >= 0);
    CHECK(dist::rank() < dist::world_size());
    // each rank contributes its rank: 0 + 1
    Tensor r = from_vector(std::vector<std::int64_t>{dist::rank()}, {1});
    dist::all_reduce(r);
    CHECK(r.item<std::int64_t>() == 1);
}

TEST_CASE("all_reduce sums and averages float32, float64 and int64 at odd sizes")
{
    setup();
    const int world = dist::world_size(), me = dist::rank();
    for (DType dt : {DType::f32, DType::f64, DType::i64})
        for (std::int64_t n : sizes)
            for (dist::ReduceOp op : {dist::ReduceOp::sum, dist::ReduceOp::avg}) {
                CAPTURE(dtype_name(dt));
                CAPTURE(n);
                CAPTURE(op == dist::ReduceOp::avg);
                Tensor t = rank_tensor(n, dt, me);
                dist::all_reduce(t, op);
                REQUIRE(t.dtype() == dt);
                // the expected result, from every rank's tensor rebuilt here (int64 values are
                // small, so doubles hold them exactly)
                std::vector<double> want(static_cast<std::size_t>(n), 0.0);
                for (int r = 0; r < world; ++r) {
                    const std::vector<double> e = rank_tensor(n, dt, r).tolist();
                    for (std::int64_t i = 0; i < n; ++i) want[i] += e[i];
                }
                if (op == dist::ReduceOp::avg)
                    for (double& w : want) w = dt == DType::i64 ? std::trunc(w / world) : w / world;
                const std::vector<double> got = t.tolist();
                bool ok = true;
                for (std::int64_t i = 0; i < n && ok; ++i) {
                    ok = got[i] == want[i];  // exact: quarters (or integers) summed over two ranks
                    if (!ok) MESSAGE("element ", i, ": got ", got[i], ", want ", want[i]);
                }
                CHECK(ok);
            }

    // a 2-d tensor keeps its shape
    Tensor m = full({3, 5}, 1.5 + me, {.dtype = f64});
    dist::all_reduce(m, dist::ReduceOp::avg);
    CHECK(m.shape() == Shape{3, 5});
    CHECK(m.tolist() == std::vector<double>(15, 2.0));
}

TEST_CASE("broadcast copies the root's tensor, every dtype and root")
{
    setup();
    const int me = dist::rank();
    for (int root : {0, dist::world_size() - 1})
        for (DType dt : {DType::f32, DType::f64, DType::i64})
            for (std::int64_t n : sizes) {
                CAPTURE(root);
                CAPTURE(dtype_name(dt));
                CAPTURE(n);
                Tensor t = rank_tensor(n, dt, me);
                dist::broadcast(t, root);
                CHECK(t.tolist() == rank_tensor(n, dt, root).tolist());
            }
    std::vector<bool> flags = {true, false, true, true, false, false, true};
    if (me != 0) flags.flip();
    Tensor b = from_vector(flags, {7});
    dist::broadcast(b, 0);
    CHECK(b.tolist<bool>() == std::vector<bool>{true, false, true, true, false, false, true});
}

TEST_CASE("broadcast_module gives every rank rank 0's weights")
{
    setup();
    manual_seed(40 + static_cast<std::uint64_t>(dist::rank()));  // different weights per rank
    nn::Linear lin({.in_features = 5, .out_features = 3});
    dist::broadcast_module(lin);
    manual_seed(40);  // rank 0's weights, rebuilt locally
    nn::Linear want({.in_features = 5, .out_features = 3});
    CHECK(lin.weight.tolist() == want.weight.tolist());
    CHECK(lin.bias.tolist() == want.bias.tolist());
    CHECK(same_on_all_ranks(lin.weight));
}

TEST_CASE("collective errors name the collective and the bad value")
{
    setup();
    Tensor b = from_vector(std::vector<bool>{true}, {1});
    CHECK_THROWS_WITH_AS(dist::all_reduce(b), "dist::all_reduce: float32, float64 or int64 only; got bool", TypeError);
    Tensor t = zeros({2});
    CHECK_THROWS_WITH_AS(dist::broadcast(t, 2), "dist::broadcast: root must be in [0, 2); got 2", ValueError);
    CHECK_THROWS_WITH_AS(dist::set_timeout(0), "dist::set_timeout: the timeout must be > 0 seconds; got 0", ValueError);
    nn::Linear lin({.in_features = 2, .out_features = 2});
    CHECK_THROWS_WITH_AS(dist::DistributedDataParallel(lin, {.bucket_cap_mb = 0}),
                         "DistributedDataParallel: bucket_cap_mb and first_bucket_mb must be > 0; got 0 and 1", ValueError);
}

TEST_CASE("a rank that does not arrive makes the others throw after the timeout, naming rank and collective")
{
    setup();
    const double saved = dist::timeout_seconds();
    const int me = dist::rank();
    Tensor t = full({9}, 1.0);
    if (me == 0) {
        dist::set_timeout(0.5);
        const auto t0 = std::chrono::steady_clock::now();
        std::string msg;
        try {
            dist::all_reduce(t);
        } catch (const dist::DistError& e) {
            msg = e.what();
        }
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        CAPTURE(msg);
        CHECK(msg.find("dist::all_reduce timed out on rank 0 of 2 after 0.5 s (float32 (9,))") == 0);
        CHECK(waited >= 0.5);
        CHECK(waited < 1.8);  // gave up, did not wait for the late rank
        // the communicator is unusable until the abandoned all-reduce is matched
        CHECK_THROWS_AS(dist::barrier(), dist::DistError);
        dist::detail::recover_after_timeout();
    } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(2000));  // "hangs", then joins late
        dist::all_reduce(t);
        CHECK(t.tolist() == std::vector<double>(9, 2.0));
    }
    dist::set_timeout(saved);
    dist::barrier();  // both ranks are in step again
}

TEST_CASE("DistributedDataParallel buckets many odd-sized parameters of two dtypes")
{
    setup();
    const int me = dist::rank(), world = dist::world_size();
    std::vector<std::pair<std::int64_t, DType>> specs;
    for (int k = 0; k < 3; ++k)
        for (std::int64_t n : sizes) specs.push_back({n + k, (n + k) % 2 ? f32 : f64});
    ManyParams m(specs);
    const double cap_mb = 100.0 / (1024 * 1024);  // 100 bytes: a bucket closes after 25 floats
    // the first bucket (PyTorch: 1 MiB of 25) closes at its own, here larger, cap
    dist::DistributedDataParallel ddp(m, {.bucket_cap_mb = cap_mb, .first_bucket_mb = 2 * cap_mb});

    // every parameter in exactly one bucket, each bucket one dtype, in reverse order, and a
    // bucket grows only while it holds less than the cap (the first: 200 bytes)
    std::vector<int> seen(m.ps.size(), 0);
    int last_f32 = static_cast<int>(m.ps.size()), last_f64 = last_f32;
    for (const dist::Bucket& b : ddp.buckets()) {
        std::int64_t numel = 0;
        for (std::size_t k = 0; k < b.params.size(); ++k) {
            const int i = b.params[k];
            ++seen[i];
            CHECK(m.ps[i].dtype() == b.dtype);
            int& last = b.dtype == f32 ? last_f32 : last_f64;
            CHECK(i < last);
            last = i;
            if (k > 0) CHECK(static_cast<double>(numel) * itemsize(b.dtype) < (&b == &ddp.buckets()[0] ? 200 : 100));
            numel += m.ps[i].numel();
        }
        CHECK(numel == b.numel);
    }
    CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }));
    CHECK(ddp.buckets().size() > 10);

    // rank r's gradient of parameter i; parameter 3 has one on rank 0 only, parameter 5 on none
    auto grad_value = [](std::size_t i, std::int64_t j, int r) { return value_at(j + static_cast<std::int64_t>(i), r); };
    for (std::size_t i = 0; i < m.ps.size(); ++i) {
        if (i == 5 || (i == 3 && me != 0)) continue;
        std::vector<double> g(static_cast<std::size_t>(m.ps[i].numel()));
        for (std::size_t j = 0; j < g.size(); ++j) g[j] = grad_value(i, static_cast<std::int64_t>(j), me);
        m.ps[i].set_grad(from_vector(g, {m.ps[i].numel()}, {.dtype = m.ps[i].dtype()}));
    }
    ddp.finish_gradient_sync();
    CHECK(ddp.last_sync().buckets == ddp.buckets().size());
    for (std::size_t i = 0; i < m.ps.size(); ++i) {
        CAPTURE(i);
        const Tensor g = m.ps[i].grad();
        if (i == 5) {
            CHECK_FALSE(g.defined());  // no rank had one: none, on every rank
            continue;
        }
        REQUIRE(g.defined());
        CHECK(g.dtype() == m.ps[i].dtype());
        bool ok = true;
        for (std::int64_t j = 0; j < g.numel() && ok; ++j) {
            double s = 0;
            for (int r = 0; r < world; ++r)
                if (i != 3 || r == 0) s += grad_value(i, j, r);  // a missing gradient counts as zeros
            ok = g.at(j) == s / world;
            if (!ok) MESSAGE("element ", j, ": got ", g.at(j), ", want ", s / world);
        }
        CHECK(ok);
        CHECK(same_on_all_ranks(g));
    }
}

TEST_CASE("the first bucket closes at first_bucket_mb, the others at bucket_cap_mb")
{
    setup();
    ManyParams m(std::vector<std::pair<std::int64_t, DType>>(12, {10, f32}));  // 40 bytes each
    const double byte = 1.0 / (1024 * 1024);
    dist::DistributedDataParallel ddp(m, {.bucket_cap_mb = 100 * byte, .first_bucket_mb = 200 * byte});
    // a bucket closes once it holds at least its cap: 5 parameters (200 bytes), then 3 (120)
    std::vector<std::size_t> counts;
    for (const dist::Bucket& b : ddp.buckets()) counts.push_back(b.params.size());
    CHECK(counts == std::vector<std::size_t>{5, 3, 3, 1});
    CHECK(ddp.buckets()[0].params.front() == 11);  // the last registered, complete first in backward
}

TEST_CASE("no_sync accumulates locally; the next sync averages the accumulated gradients")
{
    setup();
    const int me = dist::rank(), world = dist::world_size();
    manual_seed(7);
    nn::Linear lin({.in_features = 4, .out_features = 3, .dtype = f64});
    auto ref = lin.clone_as();  // one process, every rank's micro-batches
    dist::DistributedDataParallel ddp(lin);
    manual_seed(8);
    const std::int64_t micro = 3, steps = 2;  // two micro-batches of 3 rows per rank
    Tensor x = randn({world * steps * micro, 4}, {.dtype = f64}), y = randn({world * steps * micro, 3}, {.dtype = f64});
    auto rows = [&](const Tensor& t, int r, std::int64_t s) {
        const std::int64_t b = (r * steps + s) * micro;
        return slice(t, 0, b, b + micro);
    };
    auto backward = [](nn::Linear& m, const Tensor& xs, const Tensor& ys) {
        Tape tape;
        losses::mse_loss(m(xs), ys).backward();
    };
    {
        auto guard = ddp.no_sync();
        CHECK_FALSE(ddp.sync_enabled());
        backward(lin, rows(x, me, 0), rows(y, me, 0));
        const std::vector<double> local = lin.weight.grad().tolist();
        ddp.finish_gradient_sync();  // does nothing inside no_sync
        CHECK(lin.weight.grad().tolist() == local);
        const bool same = same_on_all_ranks(lin.weight.grad());
        if (me != 0) CHECK_FALSE(same);  // rank 0 compares with itself
    }
    CHECK(ddp.sync_enabled());
    backward(lin, rows(x, me, 1), rows(y, me, 1));
    ddp.finish_gradient_sync();

    for (int r = 0; r < world; ++r)
        for (std::int64_t s = 0; s < steps; ++s) backward(*ref, rows(x, r, s), rows(y, r, s));
    const auto got = lin.parameters(), want = ref->parameters();
    for (std::size_t i = 0; i < got.size(); ++i)
        for (std::int64_t j = 0; j < got[i].numel(); ++j) {
            CHECK(got[i].grad().at(j) == doctest::Approx(want[i].grad().at(j) / world).epsilon(1e-12));
        }
    CHECK(same_on_all_ranks(lin.weight.grad()));

    // two backward passes in one step without no_sync: the second is refused (its gradients are
    // dropped), and the sync still averages the first
    lin.zero_grad();
    backward(lin, rows(x, me, 0), rows(y, me, 0));
    const std::vector<double> first = lin.weight.grad().tolist();
    CHECK_THROWS_WITH_AS(backward(lin, rows(x, me, 1), rows(y, me, 1)),
                         doctest::Contains("received a second gradient before finish_gradient_sync()"), dist::DistError);
    CHECK(lin.weight.grad().tolist() == first);
    ddp.finish_gradient_sync();
    ref->zero_grad();
    for (int r = 0; r < world; ++r) backward(*ref, rows(x, r, 0), rows(y, r, 0));
    for (std::int64_t j = 0; j < lin.weight.numel(); ++j)
        CHECK(lin.weight.grad().at(j) == doctest::Approx(ref->weight.grad().at(j) / world).epsilon(1e-12));
}

namespace {
/// A 2-layer TransformerEncoder of width E without dropout, its weights drawn from seed.
nn::TransformerEncoder small_encoder(std::int64_t E, DType dt, std::uint64_t seed)
{
    manual_seed(seed);
    return nn::TransformerEncoder({.layer = {.d_model = E, .nhead = 2, .dim_feedforward = 32, .dropout = 0.0,
                                             .batch_first = true, .dtype = dt},
                                   .num_layers = 2});
}

/// N optimizer steps of a 2-layer TransformerEncoder, data parallel over the ranks (each rank
/// B / world rows of every batch) and, on every rank, in one process on the whole batch B.
/// Returns the largest relative difference between the two over every element of magnitude
/// above 1e-3 (where relative differences mean something), every parameter and step.
template <class Opt, class OptOptions>
double ddp_matches_one_process(const OptOptions& opt_options, int steps, DType dt)
{
    const int me = dist::rank(), world = dist::world_size();
    const std::int64_t B = 4, S = 5, E = 16;
    nn::TransformerEncoder model = small_encoder(E, dt, 21);
    auto single = model.clone_as();
    dist::DistributedDataParallel ddp(model, {.bucket_cap_mb = 0.004, .first_bucket_mb = 0.004});  // ~4 KB: several buckets
    CHECK(ddp.buckets().size() > 3);
    Opt opt(model.parameters(), opt_options), opt_single(single->parameters(), opt_options);
    const test::Tolerance tol = test::ddp_f32;
    double worst = 0;
    for (int step = 0; step < steps; ++step) {
        manual_seed(100 + static_cast<std::uint64_t>(step));  // the same batch on every rank
        Tensor x = randn({B, S, E}, {.dtype = dt}), y = randn({B, S, E}, {.dtype = dt});
        const std::int64_t per = B / world;
        {
            Tape tape;
            Tensor xs = slice(x, 0, me * per, (me + 1) * per), ys = slice(y, 0, me * per, (me + 1) * per);
            losses::mse_loss(model(xs), ys).backward();
        }
        ddp.finish_gradient_sync();
        CHECK(ddp.last_sync().buckets_in_backward > 0);  // started from the tape, during backward
        opt.step();
        opt.zero_grad();
        {
            Tape tape;
            losses::mse_loss((*single)(x), y).backward();
        }
        opt_single.step();
        opt_single.zero_grad();

        const auto got = model.named_parameters(), want = single->named_parameters();
        REQUIRE(got.size() == want.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
            CAPTURE(step);
            CAPTURE(got[i].first);
            const std::vector<double> a = got[i].second.tolist(), b = want[i].second.tolist();
            bool ok = true;
            for (std::size_t j = 0; j < a.size(); ++j) {
                if (std::abs(b[j]) > 1e-3) worst = std::max(worst, std::abs(a[j] - b[j]) / std::abs(b[j]));
                if (ok && !test::close(a[j], b[j], tol)) {
                    MESSAGE("element ", j, ": data parallel ", a[j], ", one process ", b[j]);
                    ok = false;
                }
            }
            CHECK(ok);
            CHECK(same_on_all_ranks(got[i].second));  // bit-identical on every rank
        }
    }
    return worst;
}
}  // namespace

// Adam runs in float64: the attention's key bias (in_proj_bias[E:2E]) has a gradient of
// exactly zero in exact arithmetic (softmax ignores a shift shared by a row), so both runs
// compute rounding noise there, and Adam divides it by its own size: in float32 that noise
// (~1e-9) is not small against eps (1e-8) and turns into steps of lr / 10 that differ
// between the runs. In float64 the noise (~1e-17) stays far below eps.
TEST_CASE("DDP with 2 ranks x B/2 rows equals one process with B rows: SGD and Adam, 3 steps")
{
    setup();
    const double sgd = ddp_matches_one_process<optim::SGD>(optim::SGDOptions{.lr = 0.1, .momentum = 0.9}, 3, f32);
    const double adam = ddp_matches_one_process<optim::Adam>(optim::AdamOptions{.lr = 1e-3}, 3, f64);
    if (dist::rank() == 0)
        MESSAGE("largest relative difference from one process over 3 steps: SGD float32 ", sgd, ", Adam float64 ",
                adam);
}

// ---- ZeRO-1 ---------------------------------------------------------------------------------

namespace {
dist::OptimizerFactory adam_factory(optim::AdamOptions o)
{
    return [o](std::vector<Tensor> p) { return std::make_unique<optim::Adam>(std::move(p), o); };
}

/// The largest relative difference between got and want (elements of magnitude above 1e-3),
/// and whether every element is within tol; prints the first element outside.
double compare_params(const std::vector<Tensor>& got, const std::vector<Tensor>& want, test::Tolerance tol, bool& ok)
{
    double worst = 0;
    ok = true;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const std::vector<double> a = got[i].tolist(), b = want[i].tolist();
        for (std::size_t j = 0; j < a.size(); ++j) {
            if (std::abs(b[j]) > 1e-3) worst = std::max(worst, std::abs(a[j] - b[j]) / std::abs(b[j]));
            if (ok && !test::close(a[j], b[j], tol)) {
                MESSAGE("parameter ", i, " element ", j, ": ", a[j], " against ", b[j]);
                ok = false;
            }
        }
    }
    return worst;
}

/// N Adam steps of a 2-layer TransformerEncoder, 2 ranks x B/2 rows, under ZeRO-1 and under
/// DDP, with a LambdaLR schedule on both; the parameters compared after every step. Returns
/// the largest relative difference.
double zero_matches_ddp(DType dt, int steps)
{
    const int me = dist::rank(), world = dist::world_size();
    const std::int64_t B = 4, S = 5, E = 16;
    nn::TransformerEncoder model = small_encoder(E, dt, 31);
    auto other = model.clone_as();
    const optim::AdamOptions opts{.lr = 1e-3};
    dist::DistributedDataParallel ddp(*other);
    optim::Adam adam(other->parameters(), opts);
    dist::ZeroRedundancyOptimizer zero(model.parameters(), adam_factory(opts));
    auto decay = [](std::int64_t e) { return 1.0 / (1.0 + static_cast<double>(e)); };
    optim::LambdaLR sched(zero.optimizer(), decay), sched_ddp(adam, decay);
    double worst = 0;
    for (int step = 0; step < steps; ++step) {
        manual_seed(200 + static_cast<std::uint64_t>(step));
        Tensor x = randn({B, S, E}, {.dtype = dt}), y = randn({B, S, E}, {.dtype = dt});
        const std::int64_t per = B / world;
        Tensor xs = slice(x, 0, me * per, (me + 1) * per), ys = slice(y, 0, me * per, (me + 1) * per);
        {
            Tape tape;
            losses::mse_loss(model(xs), ys).backward();
        }
        CHECK(zero.step());
        zero.zero_grad();
        sched.step();
        {
            Tape tape;
            losses::mse_loss((*other)(xs), ys).backward();
        }
        ddp.finish_gradient_sync();
        adam.step();
        adam.zero_grad();
        sched_ddp.step();
        CAPTURE(step);
        bool ok = true;
        worst = std::max(worst, compare_params(model.parameters(), other->parameters(), test::zero_vs_ddp, ok));
        CHECK(ok);
        for (const Tensor& p : model.parameters()) CHECK(same_on_all_ranks(p));
    }
    // Adam's state: half on each rank (the pieces partition the parameters; padding holds none)
    std::vector<std::int64_t> bytes = {static_cast<std::int64_t>(zero.state_bytes())};
    Tensor total = from_vector(bytes, {1});
    dist::all_reduce(total);
    CHECK(total.item<std::int64_t>() == static_cast<std::int64_t>(adam.state_bytes()));
    CHECK(static_cast<double>(zero.state_bytes()) <= 0.5 * static_cast<double>(adam.state_bytes()) + 64);
    return worst;
}
}  // namespace

TEST_CASE("ZeRO-1 with Adam gives the same parameters as DDP with Adam: float32 and float64, 4 steps")
{
    setup();
    // 333-element messages: the reduce-scatter sends every block in several chunks
    const std::int64_t chunk = dist::detail::set_reduce_scatter_chunk(333);
    const double single = zero_matches_ddp(f32, 4);
    const double twice = zero_matches_ddp(f64, 4);
    dist::detail::set_reduce_scatter_chunk(chunk);
    if (dist::rank() == 0) MESSAGE("ZeRO-1 vs DDP, largest relative difference: float32 ", single, ", float64 ", twice);
}

TEST_CASE("ZeRO-1 over odd sizes and two dtypes: padding, missing gradients, state_dict and clipping as DDP")
{
    setup();
    const int me = dist::rank();
    std::vector<std::pair<std::int64_t, DType>> specs;
    for (std::int64_t n : sizes) specs.push_back({n, n % 2 ? f64 : f32});
    specs.push_back({3, f32});  // 81 float64 and 1011 float32 elements: both shards padded
    ManyParams m(specs), d(specs), m2(specs);
    std::vector<Tensor> mp = m.parameters(), dp = d.parameters(), mp2 = m2.parameters();
    for (std::size_t i = 0; i < mp.size(); ++i)
        for (std::int64_t j = 0; j < mp[i].numel(); ++j) {
            const double v = value_at(j + 3 * static_cast<std::int64_t>(i), 0);
            mp[i].value().set(j, v);
            dp[i].value().set(j, v);
        }
    const optim::AdamOptions opts{.lr = 1e-2, .weight_decay = 0.1};
    const std::int64_t chunk = dist::detail::set_reduce_scatter_chunk(7);  // chunks with a short last one
    dist::ZeroRedundancyOptimizer zero(mp, adam_factory(opts));
    dist::detail::set_reduce_scatter_chunk(chunk);
    dist::DistributedDataParallel ddp(d);
    optim::Adam adam(dp, opts);
    CHECK_FALSE(zero.pieces().empty());
    // rank r's gradient; parameter 3 has one on rank 0 only, parameter 5 on none
    auto set_grads = [&](std::vector<Tensor>& ps, int step) {
        for (std::size_t i = 0; i < ps.size(); ++i) {
            if (i == 5 || (i == 3 && me != 0)) continue;
            std::vector<double> g(static_cast<std::size_t>(ps[i].numel()));
            for (std::size_t j = 0; j < g.size(); ++j) g[j] = value_at(static_cast<std::int64_t>(j + i) + step, me) * 4;
            ps[i].set_grad(from_vector(g, {ps[i].numel()}, {.dtype = ps[i].dtype()}));
        }
    };
    double norm = 0, norm_ddp = 0, clipped_worst = 0;
    for (int step = 0; step < 3; ++step) {
        CAPTURE(step);
        set_grads(mp, step);
        norm = zero.clip_grad_norm(5.0);
        CHECK(zero.step());
        zero.zero_grad();
        set_grads(dp, step);
        ddp.finish_gradient_sync();
        norm_ddp = optim::clip_grad_norm(dp, 5.0);
        adam.step();
        adam.zero_grad();
        CHECK(norm == doctest::Approx(norm_ddp).epsilon(1e-12));
        CHECK(norm > 5.0);  // clipping took effect
        bool ok = true;
        clipped_worst = std::max(clipped_worst, compare_params(mp, dp, test::zero_vs_ddp_clipped, ok));
        CHECK(ok);
        CHECK(mp[5].tolist() == dp[5].tolist());  // no gradient anywhere: not updated (not even decayed)
        for (const Tensor& p : mp) CHECK(same_on_all_ranks(p));
    }

    // the consolidated state is Adam's single-process state_dict, on the rank asked
    const optim::StateDict sd0 = zero.consolidate_state_dict(0), sd1 = zero.consolidate_state_dict(1);
    const optim::StateDict& mine = me == 0 ? sd0 : sd1;
    CHECK((me == 0 ? sd1 : sd0).empty());
    const optim::StateDict want = adam.state_dict();
    REQUIRE(mine.size() == want.size());
    for (const auto& [key, entry] : want) {
        CAPTURE(key);
        REQUIRE(mine.count(key) == 1);
        if (const Value* v = std::get_if<Value>(&entry)) {
            const Value& g = std::get<Value>(mine.at(key));
            REQUIRE(g.shape() == v->shape());
            for (std::int64_t j = 0; j < v->numel(); ++j)
                CHECK(test::close(g.at(j), v->at(j), test::zero_vs_ddp_clipped));
        } else {
            CHECK(mine.at(key).index() == entry.index());
            if (entry.index() == 0) CHECK(std::get<std::int64_t>(mine.at(key)) == std::get<std::int64_t>(entry));
            if (entry.index() == 1) CHECK(std::get<double>(mine.at(key)) == std::get<double>(entry));
            if (entry.index() == 2) CHECK(std::get<std::string>(mine.at(key)) == std::get<std::string>(entry));
        }
    }
    CHECK_FALSE(mine.count("state.5.step"));  // never updated: no state, as in one process
    // it loads into a single-process Adam, and back into a fresh ZeRO, which then steps as the
    // first: the resume recipe (the model's load_state_dict gives its parameters new storage)
    optim::Adam single(dp, opts);
    single.load_state_dict(mine);
    dist::ZeroRedundancyOptimizer zero2(mp2, adam_factory(opts));
    m2.load_state_dict(m.state_dict());
    zero2.load_state_dict(mine);
    set_grads(mp, 3);
    set_grads(mp2, 3);
    zero.step();
    zero2.step();
    for (std::size_t i = 0; i < mp.size(); ++i) CHECK(mp2[i].tolist() == mp[i].tolist());
    for (const Tensor& p : mp2) CHECK(same_on_all_ranks(p));
    // a model changed under it (here: another dtype) is refused, naming the parameter
    m2.to(f64);
    set_grads(mp2, 4);
    CHECK_THROWS_WITH_AS(zero2.step(),
                         doctest::Contains("ZeroRedundancyOptimizer::step: parameter 2 was float32 of 8 elements and "
                                           "is now float64 (8,); build a new ZeroRedundancyOptimizer"),
                         ValueError);
    zero2.zero_grad();
    if (me == 0) MESSAGE("ZeRO-1 vs DDP with clipping, largest relative difference: ", clipped_worst);
}

TEST_CASE("a ZeRO-1 checkpoint resumes in one process with a plain Adam, and a fresh ZeRO resumes from it")
{
    setup();
    const int me = dist::rank(), world = dist::world_size();
    const std::int64_t B = 4, S = 3, E = 16, per = B / world;
    auto adam = adam_factory({.lr = 1e-3});
    auto batch = [&](int step) {
        manual_seed(300 + static_cast<std::uint64_t>(step));
        return std::pair{randn({B, S, E}, {.dtype = f64}), randn({B, S, E}, {.dtype = f64})};
    };
    auto backward = [](nn::TransformerEncoder& m, const Tensor& x, const Tensor& y) {
        Tape tape;
        losses::mse_loss(m(x), y).backward();
    };
    auto zero_step = [&](nn::TransformerEncoder& m, dist::ZeroRedundancyOptimizer& z, int step) {
        auto [x, y] = batch(step);
        backward(m, slice(x, 0, me * per, (me + 1) * per), slice(y, 0, me * per, (me + 1) * per));
        z.step();
        z.zero_grad();
    };
    nn::TransformerEncoder model = small_encoder(E, f64, 41);
    dist::ZeroRedundancyOptimizer zero(model.parameters(), adam);
    for (int step = 0; step < 2; ++step) zero_step(model, zero, step);

    // rank 0 writes the checkpoint, in the layout of one process
    Tensor pid = from_vector(std::vector<std::int64_t>{static_cast<std::int64_t>(::getpid())}, {1});
    dist::broadcast(pid, 0);
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("spool_zero_" + std::to_string(pid.item<std::int64_t>()) + ".safetensors"))
                                 .string();
    const optim::StateDict full = zero.consolidate_state_dict(0);
    if (me == 0) {
        auto single = adam(model.parameters());
        single->load_state_dict(full);
        io::save_checkpoint(path, model, single.get(), nullptr, {.step = 2});
    }
    dist::barrier();

    // one process: a plain Adam over another model takes it, then the whole batch's step
    nn::TransformerEncoder one = small_encoder(E, f64, 42);
    optim::Adam adam_one(one.parameters(), {.lr = 1e-3});
    CHECK(io::load_checkpoint(path, one, &adam_one, nullptr).step == 2);
    // a fresh ZeRO, the resume recipe
    nn::TransformerEncoder again = small_encoder(E, f64, 43);
    dist::ZeroRedundancyOptimizer zero_again(again.parameters(), adam);
    auto whole = adam(again.parameters());
    io::load_checkpoint(path, again, whole.get(), nullptr);
    zero_again.load_state_dict(whole->state_dict());
    dist::barrier();
    if (me == 0) std::filesystem::remove(path);

    zero_step(model, zero, 2);
    zero_step(again, zero_again, 2);
    auto [x, y] = batch(2);
    backward(one, x, y);
    adam_one.step();
    const auto got = model.parameters(), resumed = again.parameters(), single = one.parameters();
    bool ok = true;
    // the DDP-against-one-process tolerance: the batch's gradient is summed in another order
    // (the key bias's, zero in exact arithmetic, is rounding noise of ~1e-14 on both sides)
    const double worst = compare_params(single, got, test::ddp_f32, ok);
    CHECK(ok);
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(resumed[i].tolist() == got[i].tolist());
    if (me == 0) MESSAGE("ZeRO-1 resumed in one process, one step on: largest relative difference ", worst);
}

TEST_CASE("ZeRO-1 errors: bad factory results, parameters that differ between ranks, bad dtypes")
{
    setup();
    nn::Linear lin({.in_features = 3, .out_features = 2});
    CHECK_THROWS_WITH_AS(
        dist::ZeroRedundancyOptimizer(lin.parameters(), [](std::vector<Tensor>) { return nullptr; }),
        "ZeroRedundancyOptimizer: the optimizer factory returned no optimizer", ValueError);
    CHECK_THROWS_WITH_AS(dist::ZeroRedundancyOptimizer(lin.parameters(),
                                                       [&](std::vector<Tensor>) {
                                                           return std::make_unique<optim::SGD>(lin.parameters());
                                                       }),
                         doctest::Contains("the optimizer factory must build the optimizer over the"), ValueError);
    CHECK_THROWS_WITH_AS(dist::ZeroRedundancyOptimizer({}, adam_factory({})),
                         "ZeroRedundancyOptimizer: got an empty parameter list", ValueError);
    CHECK_THROWS_WITH_AS(dist::ZeroRedundancyOptimizer({zeros({2}, {.dtype = i64})}, adam_factory({})),
                         "ZeroRedundancyOptimizer: parameter 0 must be float32 or float64; got int64 (2,)", TypeError);
    // rank 0 float32, rank 1 float64: every rank refuses, none hangs
    Tensor p = zeros({5}, {.dtype = dist::rank() == 0 ? f32 : f64});
    CHECK_THROWS_WITH_AS(dist::ZeroRedundancyOptimizer({p}, adam_factory({})),
                         doctest::Contains("parameters differ from another rank's in number, size or dtype"),
                         ValueError);
    dist::barrier();
}

TEST_CASE("ZeRO-1 edge cases: a rank holding only padding, SGD, the non-finite guard agreed by every rank")
{
    setup();
    const int me = dist::rank();
    auto sgd = [](std::vector<Tensor> p) {
        return std::make_unique<optim::SGD>(std::move(p), optim::SGDOptions{.lr = 0.5, .momentum = 0.9});
    };
    // one element over 2 ranks: rank 1's block is padding, and its optimizer holds an empty tensor
    Tensor w = full({1}, 2.0);
    dist::ZeroRedundancyOptimizer zero({w}, sgd);
    CHECK(zero.pieces().size() == (me == 0 ? 1u : 0u));
    CHECK(zero.optimizer().parameters().size() == 1);
    for (int step = 0; step < 2; ++step) {
        w.set_grad(full({1}, 1.0 + me));  // averaged: 1.5
        CHECK(zero.step());
        zero.zero_grad();
    }
    // SGD with momentum 0.9: 2 - 0.5 * 1.5, then - 0.5 * (0.9 * 1.5 + 1.5)
    CHECK(w.item() == doctest::Approx(2.0 - 0.75 - 0.5 * 2.85).epsilon(1e-7));
    CHECK(same_on_all_ranks(w));
    CHECK(zero.state_bytes() == (me == 0 ? 4u : 0u));

    // a NaN in rank 0's shard only: with the guard on, no rank changes anything
    Tensor a = full({6}, 1.0), b = full({6}, 1.0);
    dist::ZeroRedundancyOptimizer guarded({a, b}, sgd);  // rank 0 owns a, rank 1 owns b
    guarded.optimizer().skip_nonfinite(true);
    a.set_grad(full({6}, me == 0 ? std::nan("") : 1.0));
    b.set_grad(full({6}, 1.0));
    CHECK_FALSE(guarded.step());
    guarded.zero_grad();
    CHECK(a.tolist() == std::vector<double>(6, 1.0));
    CHECK(b.tolist() == std::vector<double>(6, 1.0));
    a.set_grad(full({6}, 1.0));
    b.set_grad(full({6}, 1.0));
    CHECK(guarded.step());
    CHECK(b.tolist() == std::vector<double>(6, 0.5));
    CHECK(same_on_all_ranks(a));
}
