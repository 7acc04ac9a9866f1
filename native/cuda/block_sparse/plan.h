// The device form of a BlockSparsePlan (attnkit/mask_block_sparse.h): which 64 x 64 kernel tile pairs
// of each mask row hold a listed block, with their class, and the transposed lists for dK/dV, in one
// int32 buffer that the caller owns and caches with the mask (src/masks/block-mask.ts). Host and
// device code alike (no CUDA types): the binding sizes the buffer with plan_ints(), the launcher and
// the plan kernel (plan.cuh) address it with plan_view().
//
// Layout (int32 elements), for R mask rows (mask B x H), nqt query tiles and nkt key tiles:
//   kv_off [R * nqt + 1] | q_off [R * nkt + 1] | kv_tile [cap] | q_tile [cap] | kv_cls [cap bytes]
// cap bounds the tile pairs: each listed block (full or partial, capacity of the index lists) covers
// max(1, bq / 64) x max(1, bk / 64) tile pairs, and there are at most R * nqt * nkt pairs.
#pragma once
#include <cstdint>

#include "attnkit/mask_block_sparse.h"

namespace attnkit::cuda::block_sparse {

// The kernels' tile (both axes): the fmha kernels run with the policy at its 64 x 64 shape.
constexpr int64_t kPlanTile = 64;

struct PlanLayout {
  int64_t rows = 0, nqt = 0, nkt = 0;  // mask rows (B * H of the mask), query and key tiles
  int64_t cap = 0;                     // entries of kv_tile / q_tile / kv_cls
  int64_t kv_off = 0, q_off = 0, kv_tile = 0, q_tile = 0, kv_cls = 0;  // int32 offsets
  int64_t ints = 0;                    // total int32 elements
};

// `listed`: the capacity of the mask's full plus partial index lists.
ATTNKIT_HD PlanLayout plan_layout(int64_t mask_rows, int64_t nq, int64_t nk, int64_t bq, int64_t bk, int64_t listed) {
  PlanLayout l;
  l.rows = mask_rows;
  l.nqt = ceil_div(nq, kPlanTile);
  l.nkt = ceil_div(nk, kPlanTile);
  const int64_t per_block = imax(1, bq / kPlanTile) * imax(1, bk / kPlanTile);
  l.cap = imin(l.rows * l.nqt * l.nkt, listed * per_block);
  l.kv_off = 0;
  l.q_off = l.kv_off + l.rows * l.nqt + 1;
  l.kv_tile = l.q_off + l.rows * l.nkt + 1;
  l.q_tile = l.kv_tile + l.cap;
  l.kv_cls = l.q_tile + l.cap;
  l.ints = l.kv_cls + ceil_div(l.cap, 4);
  return l;
}

ATTNKIT_HD PlanLayout plan_layout(const BlockMaskView& m, int64_t listed) {
  return plan_layout(m.B * m.H, m.nq, m.nk, m.bq, m.bk, listed);
}

// The plan's lists inside the buffer `base` (plan_layout(...).ints int32 elements).
ATTNKIT_HD BlockSparsePlan plan_view(const PlanLayout& l, const int32_t* base) {
  BlockSparsePlan p;
  p.nqt = l.nqt;
  p.nkt = l.nkt;
  p.kv_off = base + l.kv_off;
  p.q_off = base + l.q_off;
  p.kv_tile = base + l.kv_tile;
  p.q_tile = base + l.q_tile;
  p.kv_cls = reinterpret_cast<const uint8_t*>(base + l.kv_cls);
  return p;
}

// What the plan kernel (plan.cuh, generated/bs_plan.cu: build_plan) reads and writes.
struct PlanArgs {
  BlockMaskView m;                     // device pointers
  int64_t full_cap = 0, part_cap = 0;  // elements of full_idx / part_idx
  PlanLayout l;
  int32_t* base = nullptr;  // the plan buffer, l.ints elements
};

}  // namespace attnkit::cuda::block_sparse
