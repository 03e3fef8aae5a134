// A 2-rank job for tests/dist/failures.py: one all-reduce that works, then rank 1 fails —
// `hang` (sleeps instead of joining the next all-reduce) or `kill` (SIGKILLs itself) — and
// rank 0 runs into the next all-reduce with a 2 s timeout. Exit 3: rank 0 caught DistError.
#include <csignal>
#include <cstring>
#include <iostream>
#include <thread>

#include "dist/dist.hpp"
#include "spool.hpp"

using namespace spool;

int main(int argc, char** argv)
{
    const bool kill = argc > 1 && std::strcmp(argv[1], "kill") == 0;
    dist::init(&argc, &argv);
    dist::set_timeout(2);
    Tensor t = ones({5});
    dist::all_reduce(t);  // both ranks are up and talking
    if (t.at(0) != dist::world_size()) return 1;
    if (dist::rank() == 1) {
        if (kill) std::raise(SIGKILL);
        std::this_thread::sleep_for(std::chrono::seconds(600));
        return 0;
    }
    try {
        dist::all_reduce(t);
    } catch (const dist::DistError& e) {
        std::cerr << "caught: " << e.what() << std::endl;
        return 3;
    }
    std::cerr << "rank 0: the all-reduce completed without rank 1" << std::endl;
    return 0;
}
