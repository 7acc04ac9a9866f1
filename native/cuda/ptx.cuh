// Every inline-PTX instruction attnkit's CUDA kernels use, and the only file of the project with
// inline asm (test/build.test.ts checks that). Each wrapper has three bodies:
//   device pass of nvcc (__CUDA_ARCH__)  the PTX instruction;
//   host pass of nvcc                    nothing (device-only code is parsed but never run there);
//   g++ (the SIMT emulator)              the emulator's model of the instruction, computed from the
//                                        exact PTX fragment layouts (native/simt/fragments.h), with
//                                        the caller's file:line for its reports.
// The compile gate's PTX check (test/compile-gate/ptx_wrappers.cu, docs/gpu-verification.md) holds
// the first and third together: each device string must be, instruction for instruction, the variant
// the emulator's branch models. A new wrapper needs its kernel ptx_<name> in that file.
// Destination operands come first, as in PTX. Shared-memory operands are ordinary (generic) pointers;
// the wrappers convert them. Requires sm_80 or newer (cp.async, mma.m16n8k16 for bf16).
//
// Fragments (g = lane / 4, t = lane % 4; see ../../docs/gpu-verification.md):
//   A 16x16 row-major, uint32_t a[4] of f16x2/bf16x2:  a_i -> (g + 8*((i>>1)&1), 2t + (i&1) + 8*(i>>2))
//   B 16x8 col, uint32_t b[2]:                          b_i -> (k = 2t + (i&1) + 8*(i>>1), n = g)
//   C/D 16x8 f32, float c[4]:                           c_i -> (g + 8*(i>>1), 2t + (i&1))
//   ldmatrix: lanes 8j..8j+7 give the row addresses of matrix j; register j of lane l holds
//   M_j[g][2t], M_j[g][2t+1] (M_j[2t][g], M_j[2t+1][g] with .trans), low half first.
#pragma once
#include <cstdint>
#include <type_traits>

#include "cuda_compat.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "native/cuda/ptx.cuh needs sm_80 or newer (cp.async, mma.sync m16n8k16)"
#endif

namespace attnkit::ptx {

#if defined(__CUDA_ARCH__)
// 32-bit shared-state-space address of a generic pointer into shared memory.
ATTNKIT_DEVICE uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
#endif

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 -------------------------------
// d = a * b + c for one warp (all 32 lanes, converged). d may alias c.

ATTNKIT_DEVICE void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                     const float (&c)[4] ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#elif !defined(__CUDACC__)
  ::simt::detail::mma_m16n8k16(::simt::detail::MmaType::F16, d, a, b, c, simt_site);
#endif
}

ATTNKIT_DEVICE void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                      const float (&c)[4] ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#elif !defined(__CUDACC__)
  ::simt::detail::mma_m16n8k16(::simt::detail::MmaType::BF16, d, a, b, c, simt_site);
#endif
}

// The same, chosen by element type (__half or __nv_bfloat16).
template <typename T>
ATTNKIT_DEVICE void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                 const float (&c)[4] ATTNKIT_SITE_PARAM) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value,
                "mma_m16n8k16<T>: T must be __half or __nv_bfloat16");
  if constexpr (std::is_same<T, __half>::value) {
    mma_m16n8k16_f16(d, a, b, c ATTNKIT_SITE_ARG);
  } else {
    mma_m16n8k16_bf16(d, a, b, c ATTNKIT_SITE_ARG);
  }
}

// ---- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 -------------------------------------
// Each lane passes one 16-byte-aligned row address in shared memory (lanes 0-7 for .x1, 0-15 for .x2,
// all for .x4; the others' addresses are ignored). All 32 lanes must execute it.

ATTNKIT_DEVICE void ldmatrix_x1(uint32_t (&r)[1], const void* smem_row ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(smem_u32(smem_row))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::ldmatrix(1, false, r, smem_row, simt_site);
#endif
}

ATTNKIT_DEVICE void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(smem_row))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::ldmatrix(2, false, r, smem_row, simt_site);
#endif
}

ATTNKIT_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::ldmatrix(4, false, r, smem_row, simt_site);
#endif
}

ATTNKIT_DEVICE void ldmatrix_x1_trans(uint32_t (&r)[1], const void* smem_row ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(smem_u32(smem_row))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::ldmatrix(1, true, r, smem_row, simt_site);
#endif
}

ATTNKIT_DEVICE void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(smem_row))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::ldmatrix(2, true, r, smem_row, simt_site);
#endif
}

ATTNKIT_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem_row))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::ldmatrix(4, true, r, smem_row, simt_site);
#endif
}

// ---- cp.async.cg.shared.global (16 bytes, L2 only) and its groups -----------------------------------
// The destination must not be read before the cp_async_wait that completes its group (the emulator
// keeps it poisoned, 0xFF, until then); a thread must not return with copies in flight.

ATTNKIT_DEVICE void cp_async_16(void* smem_dst, const void* gmem_src ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem_dst)),
               "l"(__cvta_generic_to_global(gmem_src))
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::cp_async_16(smem_dst, gmem_src, 16, simt_site);
#endif
}

// Copies src_bytes (0..16) and fills the rest of the 16 bytes with zeros; with src_bytes == 0 nothing
// is read, so a tail tile may pass any in-bounds (e.g. clamped) source pointer.
ATTNKIT_DEVICE void cp_async_16_zfill(void* smem_dst, const void* gmem_src, int src_bytes ATTNKIT_SITE_PARAM) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem_dst)),
               "l"(__cvta_generic_to_global(gmem_src)), "r"(src_bytes)
               : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::cp_async_16(smem_dst, gmem_src, src_bytes, simt_site);
#endif
}

ATTNKIT_DEVICE void cp_async_commit(ATTNKIT_SITE_PARAM0) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::cp_async_commit(simt_site);
#endif
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
ATTNKIT_DEVICE void cp_async_wait(ATTNKIT_SITE_PARAM0) {
  static_assert(N >= 0 && N <= 7, "cp.async.wait_group takes an immediate 0..7");
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::cp_async_wait_group(N, simt_site);
#endif
}

// Commits the open group and waits for every copy of this thread.
ATTNKIT_DEVICE void cp_async_wait_all(ATTNKIT_SITE_PARAM0) {
#if defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#elif !defined(__CUDACC__)
  ::simt::detail::cp_async_commit(simt_site);
  ::simt::detail::cp_async_wait_group(0, simt_site);
#endif
}

// ---- Packing (no PTX needed; here because every mma kernel needs them) -----------------------------

// Two floats rounded to nearest even into one f16x2 / bf16x2 register, `lo` in the low half.
ATTNKIT_DEVICE uint32_t pack_f16x2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t r;
  static_assert(sizeof(h) == sizeof(r), "");
  __builtin_memcpy(&r, &h, sizeof r);
  return r;
}

ATTNKIT_DEVICE uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  static_assert(sizeof(h) == sizeof(r), "");
  __builtin_memcpy(&r, &h, sizeof r);
  return r;
}

template <typename T>
ATTNKIT_DEVICE uint32_t pack2(float lo, float hi) {
  static_assert(std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value,
                "pack2<T>: T must be __half or __nv_bfloat16");
  if constexpr (std::is_same<T, __half>::value) {
    return pack_f16x2(lo, hi);
  } else {
    return pack_bf16x2(lo, hi);
  }
}

}  // namespace attnkit::ptx
