// AVX-512 (F/BW/VL/DQ) tile primitives: 32 zmm registers -> 6 x 4 accumulators. bfloat16 inputs
// are widened to float32 on this level.
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2")
#define KNAME avx512
#define KSTR "avx512"
#define KISA Isa::Avx512
#define VW 16
#define MR 6
#define NV 4
#define KBF16 0
#include "kernels_impl.inc"
#else
#include "kernels.h"
namespace attnkit::cpu {
const CpuKernels& kernels_avx512() { return kernels_generic(); }
}
#endif
