// A data-parallel program outside spool's tree, built by scripts/consumers.sh through the
// installed spool-dist.pc and through find_package(spool CONFIG) (spool::dist), and run as
// 2 ranks under mpirun. It checks real values: an all-reduce sums the ranks' numbers, and
// DistributedDataParallel averages the ranks' gradients of one Linear layer. Exits 1 on a
// mismatch.
#include <cmath>
#include <cstdio>
#include <vector>

#include "dist/ddp.hpp"
#include "spool.hpp"

using namespace spool;

int main(int argc, char** argv)
{
    dist::init(&argc, &argv);
    const int rank = dist::rank(), world = dist::world_size();
    int failures = 0;

    Tensor t = full({3}, rank + 1.0);
    dist::all_reduce(t);  // 1 + 2 + ... + world
    const double total = world * (world + 1) / 2.0;
    for (double v : t.tolist<double>()) failures += v != total;

    // weight gradient of sum(x W^T) with x = [rank + 1, 1]: every row is x; averaged over the ranks
    nn::Linear lin({.in_features = 2, .out_features = 2, .bias = false});
    dist::DistributedDataParallel ddp(lin);
    {
        Tape tape;
        tape.backward(sum(lin(from_vector(std::vector<double>{rank + 1.0, 1.0}, {1, 2}))));
    }
    ddp.finish_gradient_sync();
    const double mean_x0 = total / world;
    const std::vector<double> want = {mean_x0, 1, mean_x0, 1};
    const std::vector<double> got = lin.weight.grad().tolist<double>();
    for (std::size_t i = 0; i < want.size(); ++i) failures += std::abs(got[i] - want[i]) > 1e-6;

    if (failures) std::printf("consumer_dist: rank %d of %d: %d values differ\n", rank, world, failures);
    else if (rank == 0) std::printf("consumer_dist: %d ranks agree\n", world);
    return failures ? 1 : 0;
}
