// AVX-512 with BF16 dot products (vdpbf16ps): bfloat16 Q.K^T and P.V run on pairs, twice the
// float32 FMA rate (Sapphire Rapids, Zen 4 and newer).
#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c,bmi,bmi2")
#define KNAME avx512bf16
#define KSTR "avx512bf16"
#define KISA Isa::Avx512Bf16
#define VW 16
#define MR 6
#define NV 4
#define KBF16 1
#include "kernels_impl.inc"
#else
#include "kernels.h"
namespace attnkit::cpu {
const CpuKernels& kernels_avx512bf16() { return kernels_generic(); }
}
#endif
