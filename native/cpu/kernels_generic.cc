// Portable tile primitives: GCC vector extensions lowered to the baseline ISA (SSE2 on x86-64,
// NEON on arm64), so the addon loads and runs on any CPU.
#define KNAME generic
#define KSTR "generic"
#define KISA Isa::Generic
#define VW 4
#define MR 4
#define NV 2
#define KBF16 0
#include "kernels_impl.inc"
