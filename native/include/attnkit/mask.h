// The mask-policy contract shared by every fused softmax kernel (CPU and CUDA).
//
// Kernels see a problem as one or more *groups* (dense: one; neighborhood: one per dilation group),
// each a sequence of query positions cut into query tiles of QTile positions and a sequence of key
// positions cut into key tiles of KTile positions. The tile shape is a template parameter of each
// policy (DenseMaskT<QTile, KTile>, BlockSparseMaskT<QTile, KTile>, NeighborhoodMaskT<R, QTile, KTile>);
// DenseMask, BlockSparseMask and NeighborhoodMask<R> are the kTile x kTile shape (64 x 64) of the
// CPU kernels. A key tile's row mask is one 64-bit word, so KTile <= 64.
// group(g, b, h) is the view for batch b and head h (block-sparse masks differ per batch and head;
// the token mapping never does).
// A position maps to a token of the tensors (q_token/k_token) or to padding (-1). Per group a policy
// answers, host and device alike:
//   allows(qp, kp)        may query position qp see key position kp? (what the references mean)
//   kv_count/kv_at(qt, i) the key tiles query tile qt must visit (forward, dQ)
//   q_count/q_at(kt, i)   the query tiles that may see key tile kt (the inverse, for dK/dV)
//   classify(qt, kt)      Skip (no visible element), Full (every key position of the tile is a
//                         real token that every query of the tile sees: no element masking), or
//                         Partial
//   row_mask(qp, kt)      bit j set iff qp sees key position kt * KTile + j (padding never)
//   tile_masks(qt, kt, m) the QTile row masks of a tile pair at once (what the CPU kernels use)
//   q_tile_tokens / k_tile_tokens(t, out)   the tokens of a tile's positions at once
// Every method is host+device (ATTNKIT_HD). The per-row ones (all but tile_masks and the tile-token
// forms, which keep a table per call: the CPU's whole-tile methods) keep no per-thread array a GPU
// would put in local memory, so each thread of a device kernel can call them;
// test/compile-gate/policies.cu compiles them for sm_80 and sm_90 under the compile gate (no local
// memory, no spills), test/compile-gate/policies_host.cc checks every method at several tile shapes.
// classify and row_mask must agree exactly with allows (for real queries); test/policy.test.ts and
// test/neighborhood-policy.test.ts check that exhaustively on small shapes at 64 x 64.
#pragma once
#include "attnkit/common.h"

namespace attnkit {

enum class TileClass : int32_t { Skip = 0, Full = 1, Partial = 2 };

// Positions per query tile and per key tile of the shipped (CPU) kernels: the policies' default shape.
constexpr int64_t kTile = 64;

// Bits [lo, hi] (inclusive, 0 <= lo, hi < 64) of a 64-bit mask; 0 when lo > hi.
ATTNKIT_HD uint64_t bit_range(int64_t lo, int64_t hi) {
  if (lo > hi) return 0;
  const uint64_t upto_hi = hi >= 63 ? ~uint64_t(0) : ((uint64_t(1) << (hi + 1)) - 1);
  return upto_hi & ~((uint64_t(1) << lo) - 1);
}

}  // namespace attnkit
