#include "tensor/threads.hpp"

#include <omp.h>

#include "tensor/errors.hpp"

namespace spool {

namespace {
int g_threads = 0;  // 0 = not set yet: use OpenMP's default
}

void set_num_threads(int n)
{
    SPOOL_CHECK(n >= 1, ValueError, "set_num_threads: thread count must be >= 1; got ", n);
    g_threads = n;
    omp_set_num_threads(n);
}

int get_num_threads()
{
    if (g_threads == 0) g_threads = omp_get_max_threads();
    return g_threads;
}

}  // namespace spool
