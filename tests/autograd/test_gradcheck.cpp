// The gradcheck suite: every op of the op table, every sample case, in float64 with
// PyTorch's defaults. Run one op with -sc=<name>, e.g. -sc=matmul.
#include <doctest/doctest.h>

#include <cstdio>

#include "autograd/op_table.hpp"
#include "spool.hpp"

using namespace spool;

namespace {
// doctest runs the test body once per subcase, so the tallies live outside it
int g_ops = 0, g_cases = 0, g_failed = 0;
}  // namespace

TEST_CASE("gradcheck suite: every op in the table")
{
    for (const auto& spec : op_table()) {
        SUBCASE(op_name(spec.kind))
        {
            ++g_ops;
            int i = 0;
            for (const auto& c : spec.cases) {
                manual_seed(1000 + 17 * static_cast<int>(spec.kind) + i++);
                auto inputs = make_inputs(c);
                auto res = gradcheck(c.fn, inputs, c.opts);
                INFO(std::string(op_name(spec.kind)), " [", c.label, "]: ", res.message);
                CHECK(res.ok);
                CHECK(res.checked > 0);
                CHECK(res.full_jacobian);
                g_failed += !res.ok;
                ++g_cases;
            }
        }
    }
}

TEST_CASE("gradcheck suite: summary")
{
    if (g_failed == 0) std::printf("gradcheck: %d ops, %d cases, all passed\n", g_ops, g_cases);
    else std::printf("gradcheck: %d ops, %d cases, %d failed\n", g_ops, g_cases, g_failed);
    CHECK(g_failed == 0);
}

TEST_CASE("the op table has one row per op, each with cases")
{
    REQUIRE(static_cast<int>(op_table().size()) == op_count);
    for (int i = 0; i < op_count; ++i) {
        CHECK(static_cast<int>(op_table()[i].kind) == i);
        CHECK_FALSE(op_table()[i].cases.empty());
    }
}

TEST_CASE("gradcheck catches a wrong gradient")
{
    // exp with a backward that is off by 1%: must be reported
    auto bad_exp = [](const std::vector<Tensor>& x) {
        Value y = exp(x[0].detach()).value();
        return record(OpKind::Exp, {x[0]}, y, [y](const Value& dy, Grads& dx) {
            Tensor g = Tensor(dy) * Tensor(y) * 1.01;
            dx.add(0, g.value());
        });
    };
    manual_seed(1);
    Tensor x = randn({3}, {.dtype = f64, .requires_grad = true});
    auto res = gradcheck(bad_exp, {x});
    CHECK_FALSE(res.ok);
    CHECK(res.message.find("gradcheck: mismatch at input 0 element 0") == 0);
}

TEST_CASE("random-direction check for large inputs")
{
    manual_seed(2);
    Tensor a = randn({40, 50}, {.dtype = f64, .requires_grad = true});
    Tensor b = randn({50, 30}, {.dtype = f64, .requires_grad = true});
    auto fn = [](const std::vector<Tensor>& x) { return tanh(matmul(x[0], x[1]) * 0.1); };
    auto res = gradcheck(fn, {a, b});
    CHECK(res.ok);
    CHECK_FALSE(res.full_jacobian);
    CHECK(res.checked == 4);
    CHECK_FALSE(a.grad().defined());  // gradcheck leaves the inputs' gradients as they were
}

TEST_CASE("gradcheck of a composite: a 2-layer MLP with GELU and log_softmax")
{
    manual_seed(3);
    Tensor x = randn({4, 3}, {.dtype = f64});
    Tensor w1 = randn({3, 5}, {.dtype = f64, .requires_grad = true});
    Tensor w2 = randn({5, 2}, {.dtype = f64, .requires_grad = true});
    auto fn = [x](const std::vector<Tensor>& p) { return log_softmax(matmul(gelu(matmul(x, p[0])), p[1]), -1); };
    auto res = gradcheck(fn, {w1, w2});
    INFO(res.message);
    CHECK(res.ok);
    CHECK_THROWS_AS(gradcheck(fn, {to(w1, f32).detach().requires_grad_(), w2}), TypeError);
}
