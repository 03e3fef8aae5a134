// Internal: the table of one compilation of tensor/gemm_arch.cpp (one instruction set), and the
// namespaces that exist in this build. tensor/gemm.cpp picks a table at first use.
#pragma once
#include <cstdint>

namespace spool::kernels {

struct GemmTable {
    const char* name;  ///< the instruction set, as xsimd names it ("avx512bw", "fma3+avx2", "sse2")
    void (*gemm_f)(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
                   const float*, std::int64_t, float, float*, std::int64_t, const float*);
    void (*gemm_d)(bool, bool, std::int64_t, std::int64_t, std::int64_t, double, const double*, std::int64_t,
                   const double*, std::int64_t, double, double*, std::int64_t, const double*);
    void (*batched_f)(std::int64_t, bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                      std::int64_t, std::int64_t, const float*, std::int64_t, std::int64_t, float, float*,
                      std::int64_t, std::int64_t);
    void (*batched_d)(std::int64_t, bool, bool, std::int64_t, std::int64_t, std::int64_t, double, const double*,
                      std::int64_t, std::int64_t, const double*, std::int64_t, std::int64_t, double, double*,
                      std::int64_t, std::int64_t);
};

// One table per compilation; meson defines SPOOL_ARCH_NATIVE (one, -march=native) or
// SPOOL_ARCH_PORTABLE (three, chosen by the CPU at run time).
namespace native { const GemmTable& gemm_table(); }
namespace x86_64 { const GemmTable& gemm_table(); }
namespace avx2 { const GemmTable& gemm_table(); }
namespace avx512 { const GemmTable& gemm_table(); }

}  // namespace spool::kernels
