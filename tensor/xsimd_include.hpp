// Internal: the one way spool includes xsimd (tensor/simd.hpp, tensor/gemm_arch.cpp, bench/).
// - GCC 12's AVX-512 headers trip -Wuninitialized on their own _mm512_undefined_* (GCC bug 105593).
// - Without optimisation (-O0: -Dbuildtype=debug) GCC 12 defines _mm512_mask_blend_epi8/16 as
//   macros that cast their operands straight to __v64qi/__v32hi, which an xsimd batch cannot be
//   cast to; xsimd 8.1's AVX-512BW select names them in a branch other types never take, so
//   every xsimd::log (and more) failed to compile. Redefined here to go through __m512i first,
//   as GCC's other macros do.
#pragma once

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__AVX512BW__) && !defined(__OPTIMIZE__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#undef _mm512_mask_blend_epi8
#define _mm512_mask_blend_epi8(U, A, W) \
    ((__m512i)__builtin_ia32_blendmb_512_mask((__v64qi)(__m512i)(A), (__v64qi)(__m512i)(W), (__mmask64)(U)))
#undef _mm512_mask_blend_epi16
#define _mm512_mask_blend_epi16(U, A, W) \
    ((__m512i)__builtin_ia32_blendmw_512_mask((__v32hi)(__m512i)(A), (__v32hi)(__m512i)(W), (__mmask32)(U)))
#endif
#include <xsimd/xsimd.hpp>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#pragma GCC diagnostic pop
