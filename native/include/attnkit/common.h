// Portability macros shared by host code, CUDA device code and the SIMT emulator.
// ATTNKIT_HD marks functions that run on both sides (mask policies, index math); every header under
// include/attnkit/ may be included from .cc and .cu alike, so none of them includes the Node-API headers or STL
// containers.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ATTNKIT_HD __host__ __device__ __forceinline__
#else
#define ATTNKIT_HD inline
#endif

// CPU kernels are compiled once per instruction set (generic, AVX2, AVX-512, AVX-512 BF16). Inline
// functions they share with the rest of the addon are placed in a per-ISA inline namespace so that
// the linker can never fold an AVX-512 copy of a helper into code that runs on an older CPU.
#ifndef ATTNKIT_ISA_NS
#define ATTNKIT_ISA_NS isa_generic
#endif

namespace attnkit {

ATTNKIT_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
ATTNKIT_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
ATTNKIT_HD int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
ATTNKIT_HD int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
// Index of the lowest set bit of x (x != 0), on host and device alike.
ATTNKIT_HD int ctz64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(x)) - 1;
#else
  return __builtin_ctzll(x);
#endif
}

}  // namespace attnkit
