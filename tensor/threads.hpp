// Thread count for spool's parallel kernels (spool's own pool underneath: tensor/parallel.hpp).
#pragma once

namespace spool {

/// Number of threads spool's kernels use (GEMM, large row-wise kernels). n >= 1.
void set_num_threads(int n);
/// Current thread count. Default: SPOOL_NUM_THREADS, else OMP_NUM_THREADS, else the number of
/// CPUs the process may run on.
int get_num_threads();

}  // namespace spool
