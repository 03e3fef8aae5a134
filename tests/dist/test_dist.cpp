// dist/: collectives, bucketing, no_sync, the timeout, and DDP's equivalence with one
// process on the whole batch. Runs under `mpirun -np 2` (tests/meson.build); every rank runs
// every test case in the same order, so their collectives match. Values are chosen so that
// sums over ranks are exact in float32, and the expected results are computed on each rank.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "dist/ddp.hpp"
#include "dist/dist.hpp"
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
/// N optimizer steps of a 2-layer TransformerEncoder, data parallel over the ranks (each rank
/// B / world rows of every batch) and, on every rank, in one process on the whole batch B.
/// Returns the largest relative difference between the two over every element of magnitude
/// above 1e-3 (where relative differences mean something), every parameter and step.
template <class Opt, class OptOptions>
double ddp_matches_one_process(const OptOptions& opt_options, int steps, DType dt)
{
    const int me = dist::rank(), world = dist::world_size();
    const std::int64_t B = 4, S = 5, E = 16;
    manual_seed(21);
    nn::TransformerEncoder model({.layer = {.d_model = E, .nhead = 2, .dim_feedforward = 32, .dropout = 0.0,
                                            .batch_first = true, .dtype = dt},
                                  .num_layers = 2});
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
