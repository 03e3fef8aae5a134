// A fresh process for the checkpoint tests (test_checkpoint.cpp runs it), so that a resume
// starts from nothing but the file, and a killed writer is a whole process:
//   checkpoint_child train <from-checkpoint|-> <until-step> <save-checkpoint|-> <results> [threads]
//     builds the run of training_setup.hpp (another init seed when resuming: loading
//     must overwrite everything), trains up to until-step, optionally saves a checkpoint,
//     and writes the losses and the final parameters to results (safetensors)
//   checkpoint_child saveloop <dir>
//     resumes from the newest checkpoint in dir (or starts at step 0), then saves one
//     checkpoint per step forever, every parameter set to the step number, keeping the
//     last 2: the parent SIGKILLs it at random moments
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "io/training_setup.hpp"

using namespace spool;

namespace {

int train(const std::string& from, std::int64_t until, const std::string& save, const std::string& results)
{
    test::TrainingRun run(from == "-" ? 0 : 12345);
    std::int64_t step = 0;
    if (from != "-") step = io::load_checkpoint(from, *run.model, run.opt.get(), run.sched.get()).step;
    std::vector<double> losses;
    for (; step < until; ++step) losses.push_back(run.step(step));
    if (save != "-")
        io::save_checkpoint(save, *run.model, run.opt.get(), run.sched.get(),
                            {.step = step, .epoch = 0, .user = R"({"config": {"d_model": 16}, "loss": )" +
                                                                   std::to_string(losses.back()) + "}"});
    io::NamedTensors out{{"losses", from_vector(losses, {static_cast<std::int64_t>(losses.size())}, {.dtype = f64})}};
    for (const auto& [name, p] : run.model->named_parameters()) out.emplace_back(name, p);
    io::save_safetensors(results, out);
    return 0;
}

[[noreturn]] void save_loop(const std::string& dir)
{
    nn::Linear model(256, 256);
    optim::Adam opt(model.named_parameters());
    optim::NoamLR sched(opt, {.d_model = 256, .warmup_steps = 10});
    std::int64_t step = 0;
    if (auto latest = io::latest_checkpoint(dir)) {
        step = io::load_checkpoint(*latest, model, &opt, &sched).step;
    } else {  // one real update, so that the optimizer has moments to save
        Tape tape;
        tape.backward(sum(model(ones({2, 256}))));
        opt.step();
        sched.step();
    }
    for (;;) {
        ++step;
        for (Tensor& p : model.parameters()) {
            float* d = p.data<float>();
            for (std::int64_t i = 0; i < p.numel(); ++i) d[i] = static_cast<float>(step);
        }
        io::save_checkpoint_in(dir, model, &opt, &sched, {.step = step}, {.keep_last = 2});
    }
}

}  // namespace

int main(int argc, char** argv)
{
    try {
        const std::vector<std::string> args(argv + 1, argv + argc);
        if ((args.size() == 5 || args.size() == 6) && args[0] == "train") {
            if (args.size() == 6) set_num_threads(std::stoi(args[5]));
            return train(args[1], std::stoll(args[2]), args[3], args[4]);
        }
        if (args.size() == 2 && args[0] == "saveloop") save_loop(args[1]);
        std::fprintf(stderr, "usage: checkpoint_child train <from|-> <until> <save|-> <results> [threads] | saveloop <dir>\n");
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "checkpoint_child: %s\n", e.what());
        return 1;
    }
}
