// Builds a mask's BlockSparsePlan on the device (layout: plan.h), in five deterministic steps of one
// kernel (a translation unit holds one kernel: the compile gate's rule), each a launch in stream order:
//   count   one thread per (mask row, query tile): walks the key tiles that hold a listed block of the
//           tile's query blocks in ascending order (a merge of the blocks' sorted full and partial
//           lists, by binary search: no per-thread array) and writes their number;
//   scan    one CTA: the counts become offsets (exclusive prefix sums, clamped to the capacity);
//   fill    the same walk writes each key tile and its class: Full when the key tile has no padding
//           and every (query block, key block) pair over the tile pair is a full block, else Partial;
//   tcount  one thread per (mask row, key tile): the query tiles whose list holds it (binary search);
//   scan, tfill   their offsets, then the query tiles in ascending order.
// The lists are exactly what native/cpu/block_sparse.cc builds on the host (tests/blockSparse_test.cc
// compares them). Work is O(listed blocks x log) for the forward lists and O(tiles x log) per key tile
// for the transposed ones. Reads of the mask's lists are clamped to their capacities and writes to the
// plan's, so no mask can make these kernels touch memory outside their buffers.
#pragma once
#include "../cuda_compat.cuh"
#include "../fmha/check.h"
#include "plan.h"

namespace attnkit::cuda::block_sparse {

enum class PlanStep : int { Count = 0, Scan = 1, Fill = 2, TCount = 3, TScan = 4, TFill = 5 };

constexpr int kPlanThreads = 128;

// First position in idx[lo, hi) whose value is >= k.
ATTNKIT_DEVICE int64_t lower_bound(const int32_t* idx, int64_t lo, int64_t hi, int64_t k) {
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (idx[mid] < k) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// The [lo, hi) range of mask row r in a list (offsets clamped to the list's capacity).
ATTNKIT_DEVICE void row_range(const int32_t* off, int64_t r, int64_t cap, int64_t& lo, int64_t& hi) {
  hi = imax(0, imin(off[r + 1], cap));
  lo = imax(0, imin(off[r], hi));
}

// Calls emit(i, kt, cls) for the i-th key tile (ascending) of query tile qt in mask row bh; returns
// the number of tiles.
template <typename Emit>
ATTNKIT_DEVICE int64_t walk(const PlanArgs& a, int64_t bh, int64_t qt, Emit&& emit) {
  const BlockMaskView& m = a.m;
  const int64_t T = kPlanTile, nkt = a.l.nkt;
  const int64_t q0 = qt * T, q1 = imin(m.nq, q0 + T);
  if (q0 >= q1) return 0;
  const int64_t qb0 = q0 / m.bq, qb1 = (q1 - 1) / m.bq;
  int64_t n = 0;
  for (int64_t cur = -1;;) {
    // The next key tile after cur that a listed block reaches: per list, the first block that
    // ends past tile cur (key block kb covers tiles kb * bk / T .. ((kb + 1) * bk - 1) / T).
    const int64_t first_kb = (cur + 1) * T / m.bk;
    int64_t next = nkt;
    for (int64_t qb = qb0; qb <= qb1; ++qb)
      for (int pass = 0; pass < 2; ++pass) {
        const int32_t* off = pass == 0 ? m.full_off : m.part_off;
        const int32_t* idx = pass == 0 ? m.full_idx : m.part_idx;
        int64_t lo, hi;
        row_range(off, m.row(bh, qb), pass == 0 ? a.full_cap : a.part_cap, lo, hi);
        const int64_t j = lower_bound(idx, lo, hi, first_kb);
        if (j < hi) next = imin(next, imax(cur + 1, int64_t(idx[j]) * m.bk / T));
      }
    if (next >= nkt) return n;
    // Full: no key padding, and every (query block, key block) pair over the tile pair listed full.
    const int64_t k0 = next * T, k1 = imin(m.nk, k0 + T);
    const int64_t kb0 = k0 / m.bk, kb1 = (k1 - 1) / m.bk;
    bool full = k1 - k0 == T;
    for (int64_t qb = qb0; qb <= qb1 && full; ++qb) {
      int64_t lo, hi;
      row_range(m.full_off, m.row(bh, qb), a.full_cap, lo, hi);
      full = lower_bound(m.full_idx, lo, hi, kb1 + 1) - lower_bound(m.full_idx, lo, hi, kb0) == kb1 - kb0 + 1;
    }
    emit(n, next, full ? TileClass::Full : TileClass::Partial);
    ++n;
    cur = next;
  }
}

// Exclusive prefix sums of a[0, n) in place, a[n] = the total; every value clamped to cap. One CTA:
// each thread sums a contiguous chunk, thread 0 scans the chunk sums, each thread rewrites its chunk.
ATTNKIT_DEVICE void scan(int32_t* a, int64_t n, int64_t cap, int64_t* sums) {
  const int64_t t = threadIdx.x, per = ceil_div(n, kPlanThreads);
  const int64_t begin = imin(n, t * per), end = imin(n, begin + per);
  int64_t s = 0;
  for (int64_t i = begin; i < end; ++i) s += a[i];
  sums[t] = s;
  __syncthreads();
  if (t == 0) {
    int64_t acc = 0;
    for (int j = 0; j < kPlanThreads; ++j) {
      const int64_t x = sums[j];
      sums[j] = acc;
      acc += x;
    }
    a[n] = static_cast<int32_t>(imin(acc, cap));
  }
  __syncthreads();
  int64_t acc = sums[t];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t x = a[i];
    a[i] = static_cast<int32_t>(imin(acc, cap));
    acc += x;
  }
}

__global__ void __launch_bounds__(kPlanThreads, 1) bs_plan_kernel(const PlanArgs a, const PlanStep step) {
  const PlanLayout& l = a.l;
  int32_t* const kv_off = a.base + l.kv_off;
  int32_t* const q_off = a.base + l.q_off;
  int32_t* const kv_tile = a.base + l.kv_tile;
  int32_t* const q_tile = a.base + l.q_tile;
  uint8_t* const kv_cls = reinterpret_cast<uint8_t*>(a.base + l.kv_cls);
  if (step == PlanStep::Scan || step == PlanStep::TScan) {
    ATTNKIT_DYNAMIC_SMEM(int64_t, sums);
    if (step == PlanStep::Scan) scan(kv_off, l.rows * l.nqt, l.cap, sums);
    else scan(q_off, l.rows * l.nkt, l.cap, sums);
    return;
  }
  const int64_t r = int64_t(blockIdx.x) * kPlanThreads + threadIdx.x;
  if (step == PlanStep::Count || step == PlanStep::Fill) {
    if (r >= l.rows * l.nqt) return;
    const int64_t bh = r / l.nqt, qt = r % l.nqt;
    if (step == PlanStep::Count) {
      kv_off[r] = static_cast<int32_t>(walk(a, bh, qt, [](int64_t, int64_t, TileClass) {}));
    } else {
      const int64_t o = kv_off[r], end = kv_off[r + 1];
      walk(a, bh, qt, [&](int64_t i, int64_t kt, TileClass cls) {
        if (o + i < end) {
          kv_tile[o + i] = static_cast<int32_t>(kt);
          kv_cls[o + i] = static_cast<uint8_t>(cls);
        }
      });
    }
    return;
  }
  // TCount / TFill: key tile kt of mask row bh, over the query tiles' lists (ascending qt).
  if (r >= l.rows * l.nkt) return;
  const int64_t bh = r / l.nkt, kt = r % l.nkt;
  int64_t n = 0;
  const int64_t o = step == PlanStep::TFill ? q_off[r] : 0, end = step == PlanStep::TFill ? q_off[r + 1] : 0;
  for (int64_t qt = 0; qt < l.nqt; ++qt) {
    const int64_t row = bh * l.nqt + qt;
    if (BlockMaskView::find(kv_tile, kv_off[row], kv_off[row + 1], kt) < 0) continue;
    if (step == PlanStep::TFill && o + n < end) q_tile[o + n] = static_cast<int32_t>(qt);
    ++n;
  }
  if (step == PlanStep::TCount) q_off[r] = static_cast<int32_t>(n);
}

// The six launches, in stream order.
inline void launch_plan(const PlanArgs& a, cudaStream_t stream) {
  auto* kernel = &bs_plan_kernel;
  const auto blocks = [](int64_t n) { return static_cast<unsigned>(imax(1, ceil_div(n, kPlanThreads))); };
  const size_t sums = kPlanThreads * sizeof(int64_t);
  const int64_t fwd = a.l.rows * a.l.nqt, inv = a.l.rows * a.l.nkt;
  ATTNKIT_LAUNCH(kernel, blocks(fwd), kPlanThreads, 0, stream, a, PlanStep::Count);
  ATTNKIT_LAUNCH(kernel, 1, kPlanThreads, sums, stream, a, PlanStep::Scan);
  ATTNKIT_LAUNCH(kernel, blocks(fwd), kPlanThreads, 0, stream, a, PlanStep::Fill);
  ATTNKIT_LAUNCH(kernel, blocks(inv), kPlanThreads, 0, stream, a, PlanStep::TCount);
  ATTNKIT_LAUNCH(kernel, 1, kPlanThreads, sums, stream, a, PlanStep::TScan);
  ATTNKIT_LAUNCH(kernel, blocks(inv), kPlanThreads, 0, stream, a, PlanStep::TFill);
  fmha::check_launch("bs_plan_kernel");
}

}  // namespace attnkit::cuda::block_sparse
