// The op-level profiler (tensor/profiler.hpp): exact call counts per op kind and pass,
// bytes allocated per op against the known output sizes, self vs total time of nested
// regions, the report's rows, disable() and reset(). No timing values are asserted beyond
// their signs and sums.
#include <doctest/doctest.h>

#include <sstream>

#include "spool.hpp"

using namespace spool;

namespace {

/// The row of name and pass, or a row with calls == 0.
profiler::Row find(const std::vector<profiler::Row>& rows, const std::string& name, profiler::Pass pass)
{
    for (const auto& r : rows)
        if (r.name == name && r.pass == pass) return r;
    return {};
}

/// Profiling on for one test case, from an empty table; afterwards empty again and on or
/// off as before (SPOOL_PROFILE=1 may have switched it on).
struct Profiling {
    bool was = profiler::enabled();
    Profiling()
    {
        profiler::reset();
        profiler::enable();
    }
    ~Profiling()
    {
        profiler::reset();
        if (was) profiler::enable();
        else profiler::disable();
    }
};

}  // namespace

TEST_CASE("profiler: matmul + relu + sum count one call each per pass, bytes of their outputs")
{
    Tensor a = randn({2, 3}, {.requires_grad = true});
    Tensor b = randn({3, 4}, {.requires_grad = true});
    Profiling on;
    {
        Tape tape;
        Tensor loss = sum(relu(matmul(a, b)));
        tape.backward(loss);
    }
    profiler::disable();
    const auto rows = profiler::rows();
    using profiler::Pass;
    for (const char* op : {"matmul", "relu", "sum"}) {
        CAPTURE(op);
        CHECK(find(rows, op, Pass::forward).calls == 1);
        CHECK(find(rows, op, Pass::backward).calls == 1);
    }
    CHECK(find(rows, "tape.backward", Pass::backward).calls == 1);
    CHECK(rows.size() == 7);  // 3 ops × 2 passes + the tape's backward

    // forward: matmul's output (2, 4) f32 = 32 bytes, relu's (2, 4) = 32; sum reduces one dim
    // at a time, so besides its 4-byte output it allocates the (1, 4) partial sum, 16 bytes
    CHECK(find(rows, "matmul", Pass::forward).bytes == 32);
    CHECK(find(rows, "relu", Pass::forward).bytes == 32);
    CHECK(find(rows, "sum", Pass::forward).bytes == 16 + 4);
    // backward: sum's gradient to (2, 4), relu's to (2, 4), matmul's to a (2, 3) and b (3, 4)
    CHECK(find(rows, "sum", Pass::backward).bytes == 32);
    CHECK(find(rows, "relu", Pass::backward).bytes == 32);
    CHECK(find(rows, "matmul", Pass::backward).bytes == 24 + 48);
    // the tape's own row encloses them all and allocates nothing itself (the gradients move
    // into the leaves' grad)
    const auto tape_row = find(rows, "tape.backward", Pass::backward);
    CHECK(tape_row.bytes == 32 + 32 + 24 + 48);
    CHECK(tape_row.self_bytes == 0);

    double self_sum = 0;
    for (const auto& r : rows) {
        CAPTURE(r.name);
        CHECK(r.total_ms >= 0);
        CHECK(r.self_ms >= 0);
        CHECK(r.self_ms <= r.total_ms);
        self_sum += r.self_ms;
    }
    // the tape's row encloses every backward row: its total is their totals plus its self time
    double bwd_ops = 0;
    for (const char* op : {"matmul", "relu", "sum"}) bwd_ops += find(rows, op, Pass::backward).total_ms;
    CHECK(tape_row.total_ms == doctest::Approx(tape_row.self_ms + bwd_ops).epsilon(1e-9));
    CHECK(self_sum <= tape_row.total_ms + find(rows, "matmul", Pass::forward).total_ms +
                          find(rows, "relu", Pass::forward).total_ms + find(rows, "sum", Pass::forward).total_ms +
                          1e-9);
    // sorted by total time
    for (std::size_t i = 1; i < rows.size(); ++i) CHECK(rows[i - 1].total_ms >= rows[i].total_ms);
}

TEST_CASE("profiler: ops run without a tape count as forward calls; counts add up over calls")
{
    Tensor x = randn({5, 7});
    Profiling on;
    for (int i = 0; i < 3; ++i) (void)tanh(x * 2.0);
    profiler::disable();
    const auto rows = profiler::rows();
    CHECK(rows.size() == 2);
    CHECK(find(rows, "tanh", profiler::Pass::forward).calls == 3);
    CHECK(find(rows, "mul_scalar", profiler::Pass::forward).calls == 3);
    CHECK(find(rows, "tanh", profiler::Pass::forward).bytes == 3 * 35 * 4);
    CHECK(find(rows, "mul_scalar", profiler::Pass::forward).bytes == 3 * 35 * 4);
}

TEST_CASE("profiler: a composite op's total includes its nested ops, its self time does not")
{
    // matmul of two vectors is reshape(matmul_nd(unsqueeze(a, 0), unsqueeze(b, 1)), {}):
    // three reshapes nested inside one matmul
    Tensor a = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {6});
    Tensor b = from_vector(std::vector<float>{6, 5, 4, 3, 2, 1}, {6});
    Profiling on;
    Tensor c = matmul(a, b);
    profiler::disable();
    const auto rows = profiler::rows();
    const auto mm = find(rows, "matmul", profiler::Pass::forward);
    const auto rs = find(rows, "reshape", profiler::Pass::forward);
    CHECK(mm.calls == 1);
    CHECK(rs.calls == 3);
    CHECK(mm.self_ms <= mm.total_ms);
    CHECK(mm.total_ms == doctest::Approx(mm.self_ms + rs.total_ms).epsilon(1e-9));
    // reshapes are views (no bytes); the (1, 1) product is matmul's own 4 bytes
    CHECK(rs.bytes == 0);
    CHECK(mm.bytes == 4);
    CHECK(mm.self_bytes == 4);
    CHECK(c.item() == 56.0);  // 6 + 10 + 12 + 12 + 10 + 6
}

TEST_CASE("profiler: disable() stops counting, enable() resumes, reset() clears")
{
    Tensor x = randn({4});
    Profiling on;
    (void)relu(x);
    profiler::disable();
    CHECK_FALSE(profiler::enabled());
    (void)relu(x);
    (void)exp(x);
    auto rows = profiler::rows();
    CHECK(rows.size() == 1);
    CHECK(find(rows, "relu", profiler::Pass::forward).calls == 1);
    CHECK(find(rows, "exp", profiler::Pass::forward).calls == 0);

    profiler::enable();
    (void)relu(x);
    CHECK(find(profiler::rows(), "relu", profiler::Pass::forward).calls == 2);  // counts add to what was there

    profiler::reset();
    CHECK(profiler::rows().empty());
    (void)exp(x);
    rows = profiler::rows();
    CHECK(rows.size() == 1);
    CHECK(find(rows, "exp", profiler::Pass::forward).calls == 1);
}

TEST_CASE("profiler: report() prints a header and one line per row; report_json() one object per row")
{
    Tensor w = randn({3, 2}, {.requires_grad = true});
    Tensor x = randn({4, 3});
    optim::SGD opt({w}, {.lr = 0.1});
    Profiling on;
    for (int step = 0; step < 2; ++step) {
        Tape tape;
        Tensor loss = mean(tanh(matmul(x, w)));
        tape.backward(loss);
        opt.step();
        opt.zero_grad();
    }
    profiler::disable();
    const auto rows = profiler::rows();
    CHECK(find(rows, "SGD", profiler::Pass::optimizer).calls == 2);
    CHECK(find(rows, "tanh", profiler::Pass::backward).calls == 2);
    CHECK(find(rows, "tanh", profiler::Pass::backward).bytes == 2 * 8 * 4);  // dy·(1 − y²), (4, 2) f32

    std::ostringstream table;
    profiler::report(table);
    const std::string t = table.str();
    CAPTURE(t);
    CHECK(t.find("spool profile: ") == 0);
    CHECK(t.find("in 16 calls") != std::string::npos);  // 2 steps × (3 fwd + 3 bwd + tape.backward + SGD)
    for (const char* head : {"op", "pass", "calls", "total ms", "self ms", "self %", "mean us", "MB alloc"})
        CHECK(t.find(head) != std::string::npos);
    std::istringstream lines(t);
    std::string line;
    int n = 0;
    bool saw_sgd = false, saw_tanh_bwd = false;
    while (std::getline(lines, line)) {
        ++n;
        saw_sgd |= line.rfind("SGD ", 0) == 0 && line.find(" optim ") != std::string::npos;
        saw_tanh_bwd |= line.rfind("tanh ", 0) == 0 && line.find(" bwd ") != std::string::npos;
    }
    CHECK(n == static_cast<int>(rows.size()) + 2);  // the summary line, the header, the rows
    CHECK(saw_sgd);
    CHECK(saw_tanh_bwd);

    std::ostringstream json;
    profiler::report_json(json);
    std::istringstream jl(json.str());
    n = 0;
    while (std::getline(jl, line)) {
        CAPTURE(line);
        CHECK(line.rfind("{\"profile\":\"op\",\"name\":\"", 0) == 0);
        CHECK(line.back() == '}');
        ++n;
    }
    CHECK(n == static_cast<int>(rows.size()));
    CHECK(json.str().find("\"name\":\"SGD\",\"pass\":\"optim\",\"calls\":2,") != std::string::npos);
}
