// spool's hand-written kernels against the same computation written with xtensor + xsimd
// (issue 11: where xtensor is within 10%, it replaces the hand-written code). Cases:
// broadcast add/mul ([2048,256] + [256], a column [2048,1], an outer sum [2048,1] + [1,256]),
// same-shape add, sum and mean over the last and
// the first dim of [2048,1024], permute (0,2,1,3) of [32,64,4,64] (the attention head split)
// and a 2-d transpose of [1024,1024]; float32, one thread. Both sides write into a fresh
// spool buffer (the same caching allocator), xtensor through noalias assignment into an
// adaptor over it; reductions are xtensor's lazy reducers (the immediate strategy does not
// build with xtensor 0.24.3 and g++ 12 in C++20, or crashes). Samples alternate spool, xtensor, spool, ...; each line prints medians
// (microseconds per call), min and max, ratio = xtensor / spool, and the largest difference
// between the two results. Flags: --quick (fewer samples), --reps N.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <xtensor/xmanipulation.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xreducer.hpp>

#include "autograd/xtensor.hpp"
#include "bench/bench_util.hpp"
#include "spool.hpp"
#include "tensor/kernels.hpp"

using namespace spool;
using spool::bench::now_s;
using spool::bench::stats_of;

namespace {

/// A fresh float32 buffer of shape s holding xtensor expression e, assigned through an
/// adaptor with noalias (no temporary).
template <class E>
Value eval_into(const Shape& s, const E& e)
{
    Value v = Value::empty(s, DType::f32);
    auto out = xt::adapt(v.data<float>(), static_cast<std::size_t>(v.numel()), xt::no_ownership(),
                         xt::dynamic_shape<std::size_t>(s.begin(), s.end()));
    xt::noalias(out) = e;
    return v;
}

struct Case {
    std::string name, shape;
    std::function<Value()> spool_side, xtensor_side;
};

double max_abs_diff(const Value& a, const Value& b)
{
    if (!(a.shape() == b.shape())) return INFINITY;
    double d = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i) d = std::max(d, std::abs(a.at(i) - b.at(i)));
    return d;
}

/// Calls per sample so that one sample takes about 2 ms.
int calls_per_sample(const std::function<Value()>& f)
{
    f();
    double t0 = now_s();
    f();
    double t = now_s() - t0;
    return std::max(1, static_cast<int>(2e-3 / std::max(t, 1e-7)));
}

double sample_us(const std::function<Value()>& f, int calls)
{
    double t0 = now_s();
    for (int i = 0; i < calls; ++i) f();
    return (now_s() - t0) / calls * 1e6;
}

}  // namespace

int main(int argc, char** argv)
{
    int reps = 31;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") reps = 9;
        else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: xtensor_kernels [--quick] [--reps N]\n");
            return 2;
        }
    }
    set_num_threads(1);
    manual_seed(0);
    spool::bench::machine_line("xtensor_kernels_machine").num("threads", 1).print();

    Tensor a = randn({2048, 256}), b = randn({256}), c = randn({2048, 256});
    Tensor col = randn({2048, 1}), row = randn({1, 256});
    Tensor big = randn({2048, 1024});
    Tensor heads = randn({32, 64, 4, 64});
    Tensor sq = randn({1024, 1024});
    auto xa = as_xtensor<float>(a), xb = as_xtensor<float>(b), xc = as_xtensor<float>(c);
    auto xcol = as_xtensor<float>(col), xrow = as_xtensor<float>(row);
    auto xbig = as_xtensor<float>(big), xheads = as_xtensor<float>(heads), xsq = as_xtensor<float>(sq);

    std::vector<Case> cases;
    // ---- broadcast elementwise --------------------------------------------------------------
    cases.push_back({"add_bcast", "[2048,256]+[256]", [&] { return kernels::add(a.value(), b.value()); },
                     [&] { return eval_into({2048, 256}, xa + xb); }});
    cases.push_back({"mul_bcast", "[2048,256]*[256]", [&] { return kernels::mul(a.value(), b.value()); },
                     [&] { return eval_into({2048, 256}, xa * xb); }});
    cases.push_back({"mul_col", "[2048,256]*[2048,1]", [&] { return kernels::mul(a.value(), col.value()); },
                     [&] { return eval_into({2048, 256}, xa * xcol); }});
    cases.push_back({"add_outer", "[2048,1]+[1,256]", [&] { return kernels::add(col.value(), row.value()); },
                     [&] { return eval_into({2048, 256}, xcol + xrow); }});
    cases.push_back({"add_same", "[2048,256]+[2048,256]", [&] { return kernels::add(a.value(), c.value()); },
                     [&] { return eval_into({2048, 256}, xa + xc); }});
    // ---- reductions ---------------------------------------------------------------------------
    const auto lazy_keep = xt::keep_dims | xt::evaluation_strategy::lazy;
    cases.push_back({"sum_last", "[2048,1024] dim 1", [&] { return kernels::sum(big.value(), 1); },
                     [&] { return eval_into({2048, 1}, xt::sum(xbig, {1}, lazy_keep)); }});
    cases.push_back({"sum_first", "[2048,1024] dim 0", [&] { return kernels::sum(big.value(), 0); },
                     [&] { return eval_into({1, 1024}, xt::sum(xbig, {0}, lazy_keep)); }});
    cases.push_back({"mean_last", "[2048,1024] dim 1", [&] { return mean(big, {1}).value(); },
                     [&] { return eval_into({2048}, xt::mean(xbig, {1}, xt::evaluation_strategy::lazy)); }});
    // ---- layout -------------------------------------------------------------------------------
    cases.push_back({"permute_0213", "[32,64,4,64] (0,2,1,3)",
                     [&] { return kernels::permute(heads.value(), {0, 2, 1, 3}); },
                     [&] { return eval_into({32, 4, 64, 64}, xt::transpose(xheads, {0, 2, 1, 3})); }});
    cases.push_back({"transpose_2d", "[1024,1024] (1,0)", [&] { return kernels::permute(sq.value(), {1, 0}); },
                     [&] { return eval_into({1024, 1024}, xt::transpose(xsq)); }});

    for (const auto& k : cases) {
        const double diff = max_abs_diff(k.spool_side(), k.xtensor_side());
        const int n_spool = calls_per_sample(k.spool_side), n_xt = calls_per_sample(k.xtensor_side);
        std::vector<double> ts, tx;
        for (int r = 0; r < reps; ++r) {  // interleaved: drift in the machine hits both sides
            ts.push_back(sample_us(k.spool_side, n_spool));
            tx.push_back(sample_us(k.xtensor_side, n_xt));
        }
        const auto s = stats_of(ts), x = stats_of(tx);
        spool::bench::Json("xtensor_kernels")
            .str("case", k.name)
            .str("shape", k.shape)
            .stats("spool_us", s)
            .stats("xtensor_us", x)
            .num("ratio", x.median / s.median)
            .num("max_abs_diff", diff)
            .num("samples", reps)
            .print();
    }
    return 0;
}
