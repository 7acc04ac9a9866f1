// AVX2 + FMA tile primitives: 16 ymm registers -> 6 x 2 accumulators.
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#define KNAME avx2
#define KSTR "avx2"
#define KISA Isa::Avx2
#define VW 8
#define MR 6
#define NV 2
#define KBF16 0
#include "kernels_impl.inc"
#else
#include "kernels.h"
namespace attnkit::cpu {
const CpuKernels& kernels_avx2() { return kernels_generic(); }
}
#endif
