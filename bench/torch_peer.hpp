// Shared by the LibTorch peer programs (train_step_torch, decode_torch): LibTorch's two
// thread pools set from one "ATEN/BLAS" setting, and the OpenBLAS kernel set reported to the
// parent. Header-only, bench-only; needs LibTorch (and OpenBLAS when SPOOL_HAVE_OPENBLAS).
#pragma once
#include <cstdio>
#include <string>

#include <torch/torch.h>

#include "bench/child.hpp"

#ifdef SPOOL_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename();
#endif

namespace spool::bench {

/// The kernel set OpenBLAS chose (after OPENBLAS_CORETYPE), or "unknown".
inline const char* openblas_core_name()
{
#ifdef SPOOL_HAVE_OPENBLAS
    return openblas_get_corename();
#else
    return "unknown";
#endif
}

/// ATen's OpenMP threads and OpenBLAS's threads (LibTorch's GEMMs run in OpenBLAS's own
/// pool, which torch::set_num_threads does not touch); prints "CORE <kernel set>" for the parent.
inline void set_peer_threads(int aten, int blas)
{
    torch::set_num_threads(aten);
#ifdef SPOOL_HAVE_OPENBLAS
    openblas_set_num_threads(blas);
#else
    (void)blas;
#endif
    std::printf("CORE %s\n", openblas_core_name());
}

inline void set_peer_threads(const std::string& setting)
{
    const auto [aten, blas] = parse_setting(setting);
    set_peer_threads(aten, blas);
}

}  // namespace spool::bench
