// Thread count for spool's parallel kernels (spool's own pool underneath: tensor/parallel.hpp).
#pragma once

namespace spool {

/// Number of threads spool's kernels use (GEMM, large row-wise kernels). n >= 1.
void set_num_threads(int n);
/// Current thread count. Default: SPOOL_NUM_THREADS, else OMP_NUM_THREADS, else the number of
/// CPUs the process may run on.
/// The n - 1 helper threads are spool's own: they sleep when there is no work, and a helper that
/// finds itself on the CPU of the thread that called the kernel moves to the process's other CPUs
/// (it changes its own CPU affinity, never the caller's): on a machine shared with a busy process
/// the two would otherwise take turns on one core.
int get_num_threads();

}  // namespace spool
