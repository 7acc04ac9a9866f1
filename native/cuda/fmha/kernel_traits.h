// Compile-time shape of the fused attention kernels: a query tile of BM rows (or a key tile of BN
// keys, dK/dV) per CTA, Warps warps of 16 rows, K/V (forward, dQ) or Q/dO (dK/dV) streamed through a
// 2-stage cp.async ring. The tile shape is a template parameter that the generated instantiations
// give (native/cuda/instantiations.json); the kernels still use the mask policies' tile lists, classes
// and 64-bit row masks unchanged, so for now BM == BN == kTile (attnkit/mask.h), asserted here.
// Shared-memory tiles are dense [rows][D] with a 16-byte-chunk XOR swizzle (no padding), which keeps
// ldmatrix and cp.async conflict-free and every kernel within the 99 KiB that sm_86/sm_89 allow per
// block. The byte counts here are computed the same way by scripts/gen-instantiations.mjs (compile-gate
// manifest); every generated translation unit static_asserts that they agree.
#pragma once
#include <cstddef>
#include <cstdint>

#include "attnkit/mask.h"

namespace attnkit::cuda::fmha {

template <typename T_, int D_, int BM_, int BN_, int Warps_>
struct Traits {
  using T = T_;  // __half or __nv_bfloat16
  static constexpr int kD = D_;  // head dim of q, k and v (Dv == D on the CUDA path)
  // swz() permutes the 16-byte chunks of a row by XOR, which stays inside a power-of-two row; above
  // 128 the dK/dV accumulators would not fit the register file.
  static_assert(kD >= 32 && kD <= 128 && (kD & (kD - 1)) == 0, "head dim: a power of two from 32 to 128");

  static constexpr int kBlockM = BM_;  // query rows per tile
  static constexpr int kBlockN = BN_;  // keys per tile
  static_assert(kBlockM == kTile && kBlockN == kTile, "tiles must match the mask policies' kTile");
  static constexpr int kWarps = Warps_;
  static_assert(kWarps * 16 == kBlockM && kWarps * 16 == kBlockN, "each warp owns 16 query rows (16 keys in dK/dV)");
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = kD / 8;  // 16-byte chunks per row

  // Elements and bytes of a [BM][D] query tile and a [BN][D] key tile. The kernels address every
  // staged tile with kTileElems, which the BM == BN assertion above makes exact.
  static constexpr int kQTileBytes = kBlockM * kD * 2;
  static constexpr int kKTileBytes = kBlockN * kD * 2;
  static constexpr int kTileElems = kBlockM * kD;

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
  static constexpr size_t kFwdSmem = size_t(kQTileBytes) + 4 * size_t(kKTileBytes);
  //   dQ: Q, dO, then 2 stages of (K, V).
  static constexpr size_t kDqSmem = 2 * size_t(kQTileBytes) + 4 * size_t(kKTileBytes);
  //   dK/dV: K, V, then 2 stages of (Q, dO, BM LSE*log2e, BM delta, BM row masks).
  static constexpr size_t kStageExtra = kBlockM * (4 + 4 + 8);
  static constexpr size_t kDkdvSmem = 2 * size_t(kKTileBytes) + 2 * (2 * size_t(kQTileBytes) + kStageExtra);
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
