// Training checkpoints: what is saved comes back exactly (model, Adam moments and step
// counts, Noam schedule, RNG, counters, user JSON); a file that does not fit is refused
// with model, optimizer and schedule untouched; resuming in a fresh process
// (checkpoint_child) gives the same losses and parameters, bit for bit, as never stopping;
// rotation; a writer SIGKILLed at random moments always leaves a complete newest file; a
// full disk (RLIMIT_FSIZE) is a clear error with the previous checkpoint intact; and a NaN
// batch under the optimizer's guard is reported and changes nothing.
#include <doctest/doctest.h>

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "io/temp_dir.hpp"
#include "io/training_setup.hpp"
#include "messages.hpp"

using namespace spool;
using namespace spool::io;
using spool::test::message_of;
using spool::test::TempDir;
using spool::test::TrainingRun;

extern char** environ;

namespace {

std::string bytes_of(const Value& v) { return {static_cast<const char*>(v.raw()), v.nbytes()}; }

/// Everything a module, an optimizer and a schedule hold, as bytes: equal means bit-identical.
std::vector<std::string> snapshot(const nn::Module& model, const optim::Optimizer& opt, const optim::LRScheduler& sched)
{
    std::vector<std::string> out;
    for (const auto& [name, t] : model.state_dict()) out.push_back(name + "=" + bytes_of(t.value()));
    for (const optim::StateDict& sd : {opt.state_dict(), sched.state_dict()})
        for (const auto& [key, e] : sd) {
            std::string v;
            if (const auto* i = std::get_if<std::int64_t>(&e)) v = "i" + std::to_string(*i);
            if (const auto* d = std::get_if<double>(&e)) v = "d" + std::string(reinterpret_cast<const char*>(d), 8);
            if (const auto* s = std::get_if<std::string>(&e)) v = "s" + *s;
            if (const auto* t = std::get_if<Value>(&e)) v = "t" + bytes_of(*t);
            out.push_back(key + "=" + v);
        }
    return out;
}

/// Run checkpoint_child with args; returns its pid (not waited for).
pid_t spawn_child(const std::vector<std::string>& args)
{
    std::vector<std::string> all{SPOOL_CHECKPOINT_CHILD};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    REQUIRE(::posix_spawn(&pid, SPOOL_CHECKPOINT_CHILD, nullptr, nullptr, argv.data(), environ) == 0);
    return pid;
}

/// Run checkpoint_child to the end; true when it exits 0.
bool run_child(const std::vector<std::string>& args)
{
    const pid_t pid = spawn_child(args);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

// ---- round trip --------------------------------------------------------------------------------

TEST_CASE("a checkpoint restores model, Adam moments and steps, Noam schedule, RNG, counters and user JSON")
{
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    TrainingRun a(1);
    for (std::int64_t s = 0; s < 3; ++s) a.step(s);
    const RngState rng = get_rng_state();
    save_checkpoint(path, *a.model, a.opt.get(), a.sched.get(),
                    {.step = 3, .epoch = 1, .user = R"({"config": {"lr": 1.0}, "metrics": [2.5, 2.25]})"});
    CHECK(get_rng_state().seed == rng.seed);  // saving draws nothing
    CHECK(get_rng_state().offset == rng.offset);

    // the layout: model.* and optimizer.* tensors, the rest as JSON in __metadata__
    const SafetensorsFile f = load_safetensors(path);
    CHECK(f.metadata.at("format") == "spool-checkpoint");
    CHECK(f.metadata.at("step") == "3");
    CHECK(f.metadata.at("epoch") == "1");
    CHECK(f.metadata.at("user") == R"({"config":{"lr":1.0},"metrics":[2.5,2.25]})");
    CHECK(f.metadata.at("rng") == "{\"offset\":" + std::to_string(rng.offset) + ",\"seed\":1}");
    std::size_t model_tensors = 0, moments = 0;
    for (const auto& [name, t] : f.tensors) {
        model_tensors += name.rfind("model.", 0) == 0;
        moments += name.rfind("optimizer.state.", 0) == 0;
    }
    CHECK(model_tensors == a.model->state_dict().size());
    CHECK(moments == 2 * a.opt->parameters().size());  // exp_avg and exp_avg_sq of every parameter

    manual_seed(99);  // the load must restore the generator
    TrainingRun b(2);
    const TrainingState st = load_checkpoint(path, *b.model, b.opt.get(), b.sched.get());
    CHECK(st.step == 3);
    CHECK(st.epoch == 1);
    CHECK(st.user == R"({"config":{"lr":1.0},"metrics":[2.5,2.25]})");
    CHECK(st.rng.seed == 1);
    CHECK(get_rng_state().seed == rng.seed);
    CHECK(get_rng_state().offset == rng.offset);
    CHECK(snapshot(*b.model, *b.opt, *b.sched) == snapshot(*a.model, *a.opt, *a.sched));
    CHECK(b.sched->last_epoch() == 3);
    CHECK(b.opt->lr(0) == a.opt->lr(0));
}

TEST_CASE("save_checkpoint refuses bad arguments before writing")
{
    TempDir dir;
    const std::string path = dir / "c.safetensors";
    nn::Linear m(2, 2);
    CHECK(message_of<ValueError>([&] { save_checkpoint(path, m, nullptr, nullptr, {.user = "[1]"}); }) ==
          "save_checkpoint: user must be a JSON object; got array");
    CHECK(message_of<ValueError>([&] { save_checkpoint(path, m, nullptr, nullptr, {.user = "{"}); })
              .rfind("save_checkpoint: user is not valid JSON (", 0) == 0);
    CHECK(message_of<ValueError>([&] { save_checkpoint(path, m, nullptr, nullptr, {.step = -1}); }) ==
          "save_checkpoint: step and epoch must be >= 0; got step -1 and epoch 0");
    CHECK(std::filesystem::is_empty(dir.path));
}

// ---- a file that does not fit changes nothing --------------------------------------------------

TEST_CASE("a rejected checkpoint leaves model, optimizer, schedule and RNG exactly as they were")
{
    TempDir dir;
    TrainingRun saved(1);
    saved.step(0);
    const std::string good = dir / "good.safetensors";
    save_checkpoint(good, *saved.model, saved.opt.get(), saved.sched.get(), {.step = 1});

    TrainingRun target(2);
    target.step(0);
    target.step(1);
    const auto before = snapshot(*target.model, *target.opt, *target.sched);
    RngState rng_before{};
    auto unchanged = [&] {
        CHECK(snapshot(*target.model, *target.opt, *target.sched) == before);
        CHECK(get_rng_state().seed == rng_before.seed);
        CHECK(get_rng_state().offset == rng_before.offset);
    };
    auto load_into_target = [&](const std::string& p) {
        rng_before = get_rng_state();
        (void)load_checkpoint(p, *target.model, target.opt.get(), target.sched.get());
    };

    SUBCASE("another model shape")
    {
        nn::Linear other(3, 4);
        optim::Adam opt(other.named_parameters());
        const std::string p = dir / "linear.safetensors";
        save_checkpoint(p, other, &opt, nullptr, {});
        const std::string m = message_of<ValueError>([&] { load_into_target(p); });
        CHECK(m.rfind("load_checkpoint: " + p + ": the checkpoint does not fit the model (Seq2SeqTransformer): '", 0) == 0);
        CHECK(m.find("' is missing") != std::string::npos);
        CHECK(m.find("'src_embed.weight' is missing") != std::string::npos);
        CHECK(m.find(" more") == m.size() - 5);  // the list is cut after 8 problems: "...; and N more"
        unchanged();
    }
    SUBCASE("a shape and a dtype that differ")
    {
        TrainingRun wide(3);
        wide.model->to(f64);  // every parameter float64: names and shapes fit, dtypes do not
        const std::string p = dir / "f64.safetensors";
        save_checkpoint(p, *wide.model, nullptr, nullptr, {});
        const std::string m = message_of<ValueError>([&] { load_into_target(p); });
        CHECK(m.find("' is (11, 16) float64 but the model's is (11, 16) float32") != std::string::npos);
        CHECK(m.find("and ") != std::string::npos);  // a long list is cut: "...; and N more"
        unchanged();
    }
    SUBCASE("optimizer state whose shapes do not fit the parameters")
    {
        TrainingRun other(7);
        std::vector<Tensor> reversed = other.model->parameters();
        std::reverse(reversed.begin(), reversed.end());
        optim::Adam adam(reversed);  // state.0 belongs to the model's last parameter
        const Tensor ids = from_vector(std::vector<std::int64_t>(6, 1), {3, 2});
        {
            Tape tape;
            tape.backward(sum((*other.model)(ids, ids)));
        }
        adam.step();
        const std::string p = dir / "reversed.safetensors";
        save_checkpoint(p, *other.model, &adam, other.sched.get(), {});
        const std::string m = message_of<ValueError>([&] { load_into_target(p); });
        CHECK(m.rfind("load_checkpoint: " + p + ": the checkpoint does not fit the optimizer (Adam): 'state.0.exp_avg' is (11,) float32 "
                      "but parameter 0 is (11, 16) float32", 0) == 0);
        unchanged();
    }
    SUBCASE("optimizer state of another kind (refused after the model checks passed)")
    {
        TrainingRun other(4);
        optim::SGD sgd(other.model->named_parameters(), {.lr = 0.1, .momentum = 0.9});
        const std::string p = dir / "sgd.safetensors";
        save_checkpoint(p, *other.model, &sgd, other.sched.get(), {});
        CHECK(message_of<ValueError>([&] { load_into_target(p); }).find("Adam") != std::string::npos);
        unchanged();
    }
    SUBCASE("schedule of another kind: the optimizer, already loaded, is rolled back")
    {
        TrainingRun other(5);
        optim::WarmupLR warm(*other.opt, {.warmup_steps = 2, .total_steps = 10});
        const std::string p = dir / "warmup.safetensors";
        save_checkpoint(p, *other.model, other.opt.get(), &warm, {});
        CHECK(message_of<ValueError>([&] { load_into_target(p); }).find("WarmupLR") != std::string::npos);
        unchanged();
    }
    SUBCASE("no optimizer state in the file")
    {
        const std::string p = dir / "weights_only.safetensors";
        save_checkpoint(p, *saved.model, nullptr, nullptr, {});
        CHECK(message_of<ValueError>([&] { load_into_target(p); }) ==
              "load_checkpoint: " + p + ": holds no optimizer state");
        unchanged();
        // weights only is fine when no optimizer is asked for
        TrainingRun eval(6);
        (void)load_checkpoint(p, *eval.model, nullptr, nullptr);
        CHECK(snapshot(*eval.model, *saved.opt, *saved.sched) == snapshot(*saved.model, *saved.opt, *saved.sched));
    }
    SUBCASE("a truncated file and a plain safetensors file")
    {
        const std::string bytes = spool::test::read_file(good);
        const std::string cut = dir / "cut.safetensors";
        spool::test::write_file(cut, bytes.substr(0, bytes.size() - 100));
        CHECK(message_of<IoError>([&] { load_into_target(cut); }).rfind("safetensors: " + cut + ": ", 0) == 0);
        const std::string plain = dir / "plain.safetensors";
        save_safetensors(plain, saved.model->state_dict());
        CHECK(message_of<IoError>([&] { load_into_target(plain); }) ==
              "load_checkpoint: " + plain + ": not a spool checkpoint (its __metadata__ has no \"format\": \"spool-checkpoint\")");
        unchanged();
    }
    // and the good file does load
    load_into_target(good);
    CHECK(snapshot(*target.model, *target.opt, *target.sched) == snapshot(*saved.model, *saved.opt, *saved.sched));
}

// ---- exact resume in a fresh process -----------------------------------------------------------

TEST_CASE("resume is exact: N steps straight == k steps, save, load in a fresh process, N-k more (1 or 2 threads)")
{
    TempDir dir;
    constexpr int N = 8;
    const std::string straight = dir / "straight.safetensors";
    REQUIRE(run_child({"train", "-", std::to_string(N), "-", straight, "2"}));
    // the parts run at 1 or 2 threads: spool's kernels give the same bits at any thread count
    for (const auto& [k, threads] : {std::pair{3, "1"}, std::pair{5, "2"}}) {
        CAPTURE(k);
        CAPTURE(threads);
        const std::string ckpt = dir / ("k" + std::to_string(k) + ".safetensors");
        const std::string first = dir / "first.safetensors", second = dir / "second.safetensors";
        REQUIRE(run_child({"train", "-", std::to_string(k), ckpt, first, threads}));
        REQUIRE(run_child({"train", ckpt, std::to_string(N), "-", second, threads}));

        const SafetensorsFile want = load_safetensors(straight), a = load_safetensors(first),
                              b = load_safetensors(second);
        // losses: the first k from one process, the other N - k from the fresh one
        std::vector<double> losses = a.tensors.at(0).second.tolist();
        const std::vector<double> rest = b.tensors.at(0).second.tolist();
        losses.insert(losses.end(), rest.begin(), rest.end());
        const std::vector<double> want_losses = want.tensors.at(0).second.tolist();
        REQUIRE(losses.size() == want_losses.size());
        for (std::size_t i = 0; i < losses.size(); ++i) {
            CAPTURE(i);
            CHECK(std::memcmp(&losses[i], &want_losses[i], sizeof(double)) == 0);
        }
        CHECK(losses[N - 1] < losses[0]);  // it does train
        // parameters, bit for bit
        REQUIRE(b.tensors.size() == want.tensors.size());
        for (std::size_t i = 1; i < b.tensors.size(); ++i) {
            CAPTURE(b.tensors[i].first);
            CHECK(b.tensors[i].first == want.tensors[i].first);
            CHECK(bytes_of(b.tensors[i].second.value()) == bytes_of(want.tensors[i].second.value()));
        }
    }
}

// ---- rotation ----------------------------------------------------------------------------------

TEST_CASE("save_checkpoint_in keeps the newest keep_last files; latest_checkpoint finds the highest step")
{
    TempDir dir;
    const std::string d = dir / "run";
    CHECK_FALSE(latest_checkpoint(d).has_value());  // no directory yet
    nn::Linear m(2, 3);
    optim::Adam opt(m.named_parameters());
    for (std::int64_t step : {1, 2, 9, 10, 11})
        CHECK(save_checkpoint_in(d, m, &opt, nullptr, {.step = step}, {.keep_last = 3}) == checkpoint_path(d, step));
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(d)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"ckpt-10.safetensors", "ckpt-11.safetensors", "ckpt-9.safetensors"});
    CHECK(latest_checkpoint(d) == checkpoint_path(d, 11));  // by step, not by name

    // what a killed writer leaves (a temporary of a dead process) goes at the next save;
    // files that are not checkpoints stay
    spool::test::write_file(d + "/ckpt-12.safetensors.tmp.999999999.00000000deadbeef", "partial");
    spool::test::write_file(d + "/notes.txt", "mine");
    spool::test::write_file(d + "/ckpt-x.safetensors", "not a step");
    CHECK(latest_checkpoint(d) == checkpoint_path(d, 11));
    save_checkpoint_in(d, m, &opt, nullptr, {.step = 12}, {.keep_last = 3});
    CHECK_FALSE(std::filesystem::exists(d + "/ckpt-12.safetensors.tmp.999999999.00000000deadbeef"));
    CHECK(std::filesystem::exists(d + "/notes.txt"));
    CHECK(std::filesystem::exists(d + "/ckpt-x.safetensors"));
    CHECK_FALSE(std::filesystem::exists(checkpoint_path(d, 9)));
    CHECK(latest_checkpoint(d) == checkpoint_path(d, 12));
    CHECK(message_of<ValueError>([&] { (void)checkpoint_path(d, -1); }) == "checkpoint_path: step must be >= 0; got -1");
}

// ---- faults: kill, full disk -------------------------------------------------------------------

TEST_CASE("a writer SIGKILLed at random moments always leaves a complete newest checkpoint")
{
    TempDir dir;
    const std::string d = dir / "run";
    std::mt19937_64 rng(20261130);
    int passed = 0;
    std::int64_t last_step = 0;
    constexpr int trials = 50;
    for (int trial = 0; trial < trials; ++trial) {
        CAPTURE(trial);
        const pid_t pid = spawn_child({"saveloop", d});
        // most kills wait for the child to have saved once (so they land in its save loop:
        // mid-write, mid-rename, mid-rotation); every fifth kills it while it starts or resumes
        if (trial % 5 != 4) {
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
            auto step_on_disk = [&] {
                const auto p = latest_checkpoint(d);
                return p ? std::stoll(std::filesystem::path(*p).stem().string().substr(5)) : 0;
            };
            while (step_on_disk() <= last_step && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30'000));
        REQUIRE(::kill(pid, SIGKILL) == 0);
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));

        const auto latest = latest_checkpoint(d);
        REQUIRE(latest.has_value());
        nn::Linear model(256, 256);
        optim::Adam opt(model.named_parameters());
        optim::NoamLR sched(opt, {.d_model = 256, .warmup_steps = 10});
        const TrainingState st = load_checkpoint(*latest, model, &opt, &sched);
        CHECK(st.step >= last_step);  // never goes back
        last_step = st.step;
        bool complete = true;
        for (const Tensor& p : model.parameters())
            for (std::int64_t i = 0; i < p.numel(); ++i) complete = complete && p.data<float>()[i] == float(st.step);
        CHECK(complete);
        CHECK(std::get<std::int64_t>(opt.state_dict().at("state.0.step")) == 1);
        passed += complete;
    }
    MESSAGE(passed, " of ", trials, " kills left a complete newest checkpoint; last step ", last_step);
    CHECK(passed == trials);
    CHECK(last_step > trials);  // the children made progress between kills
}

TEST_CASE("a full disk (RLIMIT_FSIZE) is a clear IoError and the previous checkpoint stays intact")
{
    TempDir dir;
    const std::string path = dir / "ckpt.safetensors";
    nn::Linear model(64, 64);
    optim::Adam opt(model.named_parameters());
    save_checkpoint(path, model, &opt, nullptr, {.step = 1});
    const std::string before = spool::test::read_file(path);

    for (Tensor& p : model.parameters()) p.data<float>()[0] = 42.0f;  // a newer state that cannot be written
    // past the limit write() fails with EFBIG instead of raising SIGXFSZ, which would kill us
    struct sigaction ignore {}, old_action {};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGXFSZ, &ignore, &old_action) == 0);
    rlimit old_limit{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    rlimit small = old_limit;
    small.rlim_cur = 8192;  // a disk with 8 KB free; the checkpoint is ~17 KB
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    const std::string m = message_of<IoError>([&] { save_checkpoint(path, model, &opt, nullptr, {.step = 2}); });
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    REQUIRE(::sigaction(SIGXFSZ, &old_action, nullptr) == 0);

    CHECK(m == "safetensors: cannot save '" + path + "': cannot write: File too large");
    CHECK(spool::test::read_file(path) == before);
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path)) ++files;
    CHECK(files == 1);  // the temporary file is gone
    nn::Linear fresh(64, 64);
    CHECK(load_checkpoint(path, fresh, nullptr, nullptr).step == 1);
    CHECK(fresh.weight.data<float>()[0] != 42.0f);
}

// ---- the NaN guard -----------------------------------------------------------------------------

TEST_CASE("a poisoned batch under the optimizer's non-finite guard is reported and changes nothing")
{
    TempDir dir;
    TrainingRun run(1);
    std::vector<std::string> reports;
    run.opt->skip_nonfinite(true, [&](const optim::SkipReport& r) { reports.push_back(r.message); });
    run.step(0);
    run.step(1);
    const auto before = snapshot(*run.model, *run.opt, *run.sched);

    const double loss = run.step(2, /*poisoned=*/true);
    CHECK(std::isnan(loss));
    REQUIRE(reports.size() == 1);
    CHECK(reports[0].rfind("Adam: step skipped: the gradient of parameter '", 0) == 0);
    CHECK(reports[0].find("' holds NaN or Inf; 1 step(s) skipped so far") != std::string::npos);
    CHECK(run.opt->skipped_steps() == 1);
    // parameters, moments, step counts and the schedule as they were; only the counter moved
    auto after = snapshot(*run.model, *run.opt, *run.sched);
    CHECK(after.size() == before.size());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < after.size() && i < before.size(); ++i)
        if (after[i] != before[i]) {
            CHECK(after[i] == "skipped_steps=i1");
            ++differing;
        }
    CHECK(differing == 1);

    // the skip is in the checkpoint; training goes on from it
    const std::string path = dir / "ckpt.safetensors";
    save_checkpoint(path, *run.model, run.opt.get(), run.sched.get(), {.step = 3});
    TrainingRun resumed(9);
    (void)load_checkpoint(path, *resumed.model, resumed.opt.get(), resumed.sched.get());
    CHECK(resumed.opt->skipped_steps() == 1);
    CHECK(std::isfinite(resumed.step(3)));
}

TEST_CASE("under anomaly mode a poisoned batch throws naming the op, and nothing is applied")
{
    // (a Linear, not the Transformer: anomaly mode also flags the -inf of a causal mask)
    manual_seed(1);
    nn::Linear model(4, 3);
    optim::Adam opt(model.named_parameters());
    optim::NoamLR sched(opt, {.d_model = 4, .warmup_steps = 2});
    auto train_step = [&](const Tensor& x) {
        Tape tape;
        tape.backward(sum(model(x)));
        if (opt.step()) sched.step();
        opt.zero_grad();
    };
    train_step(ones({2, 4}));
    const auto before = snapshot(model, opt, sched);
    detect_anomaly(true);
    const std::string m = message_of<ValueError>([&] { train_step(full({2, 4}, std::nan(""))); });
    detect_anomaly(false);
    CHECK(m == "linear: output contains NaN (anomaly mode); shape (2, 3)");
    CHECK(snapshot(model, opt, sched) == before);
    for (const Tensor& p : model.parameters()) CHECK_FALSE(p.grad().defined());
    train_step(ones({2, 4}));  // a clean batch trains as usual
    CHECK(snapshot(model, opt, sched) != before);
}
