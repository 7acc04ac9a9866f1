// Compile-time shape of the fused attention kernels: one 64-row query tile (or 64-key tile) per CTA,
// 4 warps of 16 rows, K/V (forward, dQ) or Q/dO (dK/dV) streamed through a 2-stage cp.async ring.
// Tiles equal the mask policies' kTile (attnkit/mask.h), so the policy's tile lists, classes and row
// masks apply unchanged. Shared-memory tiles are dense [64][D] with a 16-byte-chunk XOR swizzle (no
// padding), which keeps ldmatrix and cp.async conflict-free and every kernel within the 99 KiB that
// sm_86/sm_89 allow per block. The byte counts here are mirrored by scripts/gen-instantiations.mjs
// (compile-gate manifest); every generated translation unit static_asserts that they agree.
#pragma once
#include <cstddef>
#include <cstdint>

#include "attnkit/mask.h"

namespace attnkit::cuda::fmha {

template <typename T_, int D_>
struct Traits {
  using T = T_;  // __half or __nv_bfloat16
  static constexpr int kD = D_;  // head dim of q, k and v (Dv == D on the CUDA path)
  static_assert(kD == 32 || kD == 64 || kD == 128, "head dims 32, 64, 128");

  static constexpr int kBlockM = 64;  // query rows per tile
  static constexpr int kBlockN = 64;  // keys per tile
  static_assert(kBlockM == kTile && kBlockN == kTile, "tiles must match the mask policies' kTile");
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = kD / 8;  // 16-byte chunks per row

  // Elements and bytes of one [64][D] tile.
  static constexpr int kTileElems = kBlockM * kD;
  static constexpr int kTileBytes = kTileElems * 2;

  // dK/dV: queries of a staged 64-row tile processed per step by each warp. At D = 128 the float32
  // dK and dV accumulators take 128 registers per thread; with 32-query steps ptxas spilled on sm_80,
  // with 16 the S^T and dP^T tiles (16 x kQSub each) fit (252-254 of 255 registers, no spills).
  static constexpr int kQSub = kD <= 64 ? 64 : 16;

  // Resident CTAs per SM the forward is compiled for (__launch_bounds__): 4 caps it at 128 registers
  // (16 warps per SM) where that costs no spills; at D = 128 the 64 x 128 output accumulator needs
  // more, and 2 CTAs already fill sm_80's shared memory.
  static constexpr int kFwdMinBlocks = kD <= 64 ? 4 : 1;

  // Dynamic shared memory per kernel (bytes).
  //   forward: Q, then 2 stages of (K, V).
  static constexpr size_t kFwdSmem = size_t(5) * kTileBytes;
  //   dQ: Q, dO, then 2 stages of (K, V).
  static constexpr size_t kDqSmem = size_t(6) * kTileBytes;
  //   dK/dV: K, V, then 2 stages of (Q, dO, 64 LSE*log2e, 64 delta, 64 row masks).
  static constexpr size_t kStageExtra = kBlockM * (4 + 4 + 8);
  static constexpr size_t kDkdvSmem = size_t(6) * kTileBytes + 2 * kStageExtra;
};

// Element offset of (row, col) in a swizzled [64][D] tile; col % 8 is kept, the 16-byte chunk index
// is XORed with a row-dependent value so that 8 consecutive rows of one chunk column (what ldmatrix
// and the row-major cp.async pattern touch at once) land in 8 distinct bank groups. Rows are 128 B or
// more for D >= 64 (XOR with row % 8); for D = 32 (64-byte rows, 2 rows per 128 B) with (row / 2) % 4.
template <int D>
ATTNKIT_HD int swz(int row, int col) {
  constexpr int kChunks = D / 8;
  const int chunk = col >> 3;
  const int x = kChunks >= 8 ? (row & 7) : ((row >> 1) & 3);
  return row * D + ((chunk ^ x) << 3) + (col & 7);
}

}  // namespace attnkit::cuda::fmha
