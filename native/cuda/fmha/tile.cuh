// Warp- and CTA-level tile primitives of the fused attention kernels, destination first:
//   load_tile      CTA: cp.async a [64][D] tile of rows gathered through a position -> token map
//                  (token < 0: zero-filled), into the swizzled layout of kernel_traits.h
//   gemm_nt        warp: acc[16 x N] += A[16 x K] * B^T, A rows and B rows (K-major) in shared memory
//   gemm_rt        warp: acc[16 x N] += P[16 x K] * B, P the f32 accumulator fragments of an earlier
//                  product (rounded to T here), B row-major [K][N] in shared memory (ldmatrix.trans)
//   quad_max/sum   the four lanes holding one accumulator row
//   stage_rows     warp: its 16 accumulator rows, rounded to T, into a swizzled shared tile
//   store_tile     CTA: a swizzled shared tile to its token rows in global memory, 16 bytes a thread
//   cta_view       CTA: the mask policy's view of (group, batch, head), where every thread reads it
// Fragment layouts (g = lane / 4, t = lane % 4): accumulator element i of n-tile j is
// (row g + 8 * (i / 2), column 8j + 2t + i % 2); see ../ptx.cuh.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#include "../ptx.cuh"
#include "kernel_traits.h"

namespace attnkit::cuda::fmha {

namespace ptx = ::attnkit::ptx;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

ATTNKIT_DEVICE void copy16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
#else
  std::memcpy(dst, src, 16);
#endif
}

ATTNKIT_DEVICE void store_u32(void* dst, uint32_t v) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint32_t*>(dst) = v;
#else
  std::memcpy(dst, &v, 4);
#endif
}

// Rows pos0 .. pos0 + 63 of a tensor whose token n starts at base + n * row_stride (elements), into
// the swizzled tile s. Rows whose token is negative (padding, tails) are zero-filled without reading.
template <typename Tr, typename TokenOf>
ATTNKIT_DEVICE void load_tile(typename Tr::T* s, const typename Tr::T* base, int64_t row_stride, int64_t pos0,
                              TokenOf token) {
  constexpr int kIters = Tr::kBlockM * Tr::kChunks / Tr::kThreads;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = static_cast<int>(threadIdx.x) + it * Tr::kThreads;
    const int row = c / Tr::kChunks, col = (c % Tr::kChunks) * 8;
    const int64_t n = token(pos0 + row);
    const typename Tr::T* src = n >= 0 ? base + n * row_stride + col : base;
    ptx::cp_async_16_zfill(s + swz<Tr::kD>(row, col), src, n >= 0 ? 16 : 0);
  }
}

// acc[16 x N] += A[16 x K] * B[N x K]^T for one warp: A is rows a_row0.. of tile sA, B rows b_row0..
// of tile sB (both swizzled [64][D] with D = Tr::kD, K <= D). ldmatrix.x4 at row lane % 16, column
// (lane / 16) * 8 gives A; at row (lane % 8) + (lane / 16) * 8, column ((lane / 8) % 2) * 8 it gives
// the B fragments of two n-tiles.
template <typename Tr, int N, int K>
ATTNKIT_DEVICE void gemm_nt(float (&acc)[N / 8][4], const typename Tr::T* sA, int a_row0, const typename Tr::T* sB,
                            int b_row0) {
  constexpr int D = Tr::kD;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int kk = 0; kk < K; kk += 16) {
    uint32_t a[4];
    ptx::ldmatrix_x4(a, sA + swz<D>(a_row0 + lane % 16, kk + (lane / 16) * 8));
#pragma unroll
    for (int n = 0; n < N; n += 16) {
      uint32_t r[4];
      ptx::ldmatrix_x4(r, sB + swz<D>(b_row0 + n + lane % 8 + (lane / 16) * 8, kk + ((lane / 8) % 2) * 8));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_m16n8k16<typename Tr::T>(acc[n / 8], a, b0, acc[n / 8]);
      ptx::mma_m16n8k16<typename Tr::T>(acc[n / 8 + 1], a, b1, acc[n / 8 + 1]);
    }
  }
}

// acc[16 x N] += P[16 x K] * B[K x N] for one warp: P given as the accumulator fragments of a
// 16 x K product (rounded to T here; columns 16s..16s+15 of P are n-tiles 2s and 2s + 1, which is
// exactly the A fragment of k-step s), B rows b_row0.. of the swizzled tile sB, read with
// ldmatrix.x4.trans at row lane % 16, column (lane / 16) * 8 (the B fragments of two n-tiles).
template <typename Tr, int N, int K>
ATTNKIT_DEVICE void gemm_rt(float (&acc)[N / 8][4], const float (&p)[K / 8][4], const typename Tr::T* sB,
                            int b_row0) {
  using T = typename Tr::T;
  constexpr int D = Tr::kD;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int s = 0; s < K / 16; ++s) {
    const uint32_t a[4] = {ptx::pack2<T>(p[2 * s][0], p[2 * s][1]), ptx::pack2<T>(p[2 * s][2], p[2 * s][3]),
                           ptx::pack2<T>(p[2 * s + 1][0], p[2 * s + 1][1]),
                           ptx::pack2<T>(p[2 * s + 1][2], p[2 * s + 1][3])};
#pragma unroll
    for (int n = 0; n < N; n += 16) {
      uint32_t r[4];
      ptx::ldmatrix_x4_trans(r, sB + swz<D>(b_row0 + 16 * s + lane % 16, n + (lane / 16) * 8));
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      ptx::mma_m16n8k16<T>(acc[n / 8], a, b0, acc[n / 8]);
      ptx::mma_m16n8k16<T>(acc[n / 8 + 1], a, b1, acc[n / 8 + 1]);
    }
  }
}

template <int N>
ATTNKIT_DEVICE void zero(float (&acc)[N][4]) {
#pragma unroll
  for (int j = 0; j < N; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[j][i] = 0.f;
}

ATTNKIT_DEVICE float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

ATTNKIT_DEVICE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The warp's 16 x N accumulator rows, times row_scale[r] for rows g + 8r, rounded to T, into rows
// row0.. of the swizzled tile s.
template <typename Tr, int N>
ATTNKIT_DEVICE void stage_rows(typename Tr::T* s, int row0, const float (&acc)[N / 8][4], const float (&row_scale)[2]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int j = 0; j < N / 8; ++j)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      store_u32(s + swz<Tr::kD>(row0 + g + 8 * r, 8 * j + 2 * t),
                ptx::pack2<typename Tr::T>(acc[j][2 * r] * row_scale[r], acc[j][2 * r + 1] * row_scale[r]));
}

// The swizzled tile s (64 rows of D) to rows pos0.. of a tensor (token n at base + n * row_stride);
// rows with a negative token are not written.
template <typename Tr, typename TokenOf>
ATTNKIT_DEVICE void store_tile(typename Tr::T* base, int64_t row_stride, const typename Tr::T* s, int64_t pos0,
                               TokenOf token) {
  constexpr int kIters = Tr::kBlockM * Tr::kChunks / Tr::kThreads;
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = static_cast<int>(threadIdx.x) + it * Tr::kThreads;
    const int row = c / Tr::kChunks, col = (c % Tr::kChunks) * 8;
    const int64_t n = token(pos0 + row);
    if (n >= 0) copy16(base + n * row_stride + col, s + swz<Tr::kD>(row, col));
  }
}

// Zeros to the token rows pos0 .. pos0 + 63 (a tile with nothing to accumulate).
template <typename Tr, typename TokenOf>
ATTNKIT_DEVICE void zero_rows(typename Tr::T* base, int64_t row_stride, int64_t pos0, TokenOf token) {
  constexpr int kIters = Tr::kBlockM * Tr::kChunks / Tr::kThreads;
  const uint32_t z[4] = {0, 0, 0, 0};
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int c = static_cast<int>(threadIdx.x) + it * Tr::kThreads;
    const int row = c / Tr::kChunks, col = (c % Tr::kChunks) * 8;
    const int64_t n = token(pos0 + row);
    if (n >= 0) copy16(base + n * row_stride + col, z);
  }
}

// A policy whose view is the same for every batch and head has a group(g) overload (mask.h: dense,
// neighborhood); block-sparse views differ per (b, h) and have only group(g, b, h).
template <typename Mask, typename = void>
struct head_invariant_views : std::false_type {};
template <typename Mask>
struct head_invariant_views<Mask, std::void_t<decltype(std::declval<const Mask&>().group(int64_t()))>>
    : std::true_type {};

// Whether the policy's views live in shared memory (cta_view builds them there, once per CTA): the
// policy says so with `static constexpr bool kViewsInSharedMemory = true` (neighborhood attention).
// A policy whose group() returns a small view by value (the block-sparse device policy) keeps it in
// registers like a reference view, and the kernels keep their register-tuned shape for it.
template <typename Mask, typename = void>
struct views_in_shared_memory : std::false_type {};
template <typename Mask>
struct views_in_shared_memory<Mask, std::void_t<decltype(Mask::kViewsInSharedMemory)>>
    : std::bool_constant<Mask::kViewsInSharedMemory> {};
template <typename Mask>
constexpr bool builds_views = views_in_shared_memory<Mask>::value;

// Resident CTAs per SM the forward is compiled for: the traits' choice (4 at D <= 64: 128 registers)
// for a policy with reference views; 1 (up to 255 registers) for one that builds its views, whose
// int64 window arithmetic per row does not fit 128 registers next to the accumulators (it spilled).
template <typename Tr, typename Mask>
constexpr int fwd_min_blocks = builds_views<Mask> ? 1 : Tr::kFwdMinBlocks;

// dK/dV: queries per step (the S^T and dP^T tiles are 16 x QS per warp): the traits' choice, halved
// at D = 64 for a policy that builds its views (its window arithmetic at the top of every work item
// spilled next to the dK/dV accumulators and two 16 x 64 score tiles).
template <typename Tr, typename Mask>
constexpr int dkdv_qsub = builds_views<Mask> && Tr::kQSub > 32 ? 32 : Tr::kQSub;

// The policy's view of (group grp, batch b, head h) for the CTA. A policy whose group() returns a
// reference (dense: the kernel parameter itself) is read where it is. One that builds its view by
// value (neighborhood attention: some 100 bytes of per-axis fields and int64 arithmetic per axis) has
// it built once, by thread 0, into static shared memory, so that no thread holds it in registers
// (with the view in registers the neighborhood kernels spilled and used a stack frame). Every thread
// of the CTA must call it, at the same point (it has a barrier), once per kernel.
template <typename Mask>
ATTNKIT_DEVICE decltype(auto) cta_view(const Mask& mask, int64_t grp, int64_t b, int64_t h) {
  using V = decltype(mask.group(grp, b, h));
  if constexpr (!builds_views<Mask>) {
    return mask.group(grp, b, h);
  } else {
    alignas(16) __shared__ unsigned char slot[sizeof(V)];
    if (threadIdx.x == 0) new (slot) V(mask.group(grp, b, h));
    __syncthreads();
    return static_cast<const V&>(*reinterpret_cast<const V*>(slot));
  }
}

}  // namespace attnkit::cuda::fmha
