// AVX-512 + AMX tile primitives: bfloat16 Q.K^T and P.V on AMX tiles (TDPBF16PS, 16 x 16 float32
// accumulators), everything else as on the AVX-512 BF16 level. On the Sapphire Rapids CI machine a
// core does 120 GFLOP/s with vdpbf16ps but about 3 TFLOP/s with AMX.
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2,amx-tile,amx-bf16")
#define KNAME amx
#define KSTR "amx"
#define KISA Isa::Amx
#define VW 16
#define MR 6
#define NV 4
#define KBF16 1
#define KAMX 1
#include "kernels_impl.inc"
#else
#include "kernels.h"
namespace attnkit::cpu {
const CpuKernels& kernels_amx() { return kernels_avx512bf16(); }
}
#endif
