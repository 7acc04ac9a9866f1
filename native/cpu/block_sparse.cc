// Block-sparse attention on the CPU: builds the kernel-tile plan of a BlockMask (which 64-token key
// tiles each 64-token query tile visits, Full or Partial, and the transposed lists for dK/dV) and
// runs the generic fused driver with it. Plan building is O(listed blocks) per op.
#include "block_sparse.h"

#include <vector>

#include "fmha.h"

namespace attnkit::cpu {
namespace {

struct PlanStorage {
  std::vector<int32_t> kv_off, kv_tile, q_off, q_tile;
  std::vector<uint8_t> kv_cls;
  BlockSparsePlan plan;
};

void build_plan(const BlockMaskView& m, PlanStorage& ps) {
  const int64_t nqt = ceil_div(m.nq, kTile), nkt = ceil_div(m.nk, kTile);
  const int64_t rows = m.B * m.H;
  ps.kv_off.assign(size_t(rows * nqt + 1), 0);
  std::vector<int32_t> full_pairs(size_t(nkt), 0), seen(size_t(nkt), -1);
  std::vector<int32_t> touched;
  for (int64_t bh = 0; bh < rows; ++bh) {
    for (int64_t qt = 0; qt < nqt; ++qt) {
      const int64_t q0 = qt * kTile, q1 = imin(m.nq, q0 + kTile);
      const int64_t qb0 = q0 / m.bq, qb1 = (q1 - 1) / m.bq;
      const int64_t stamp = bh * nqt + qt;
      touched.clear();
      for (int64_t qb = qb0; qb <= qb1; ++qb) {
        const int64_t r = m.row(bh, qb);
        for (int pass = 0; pass < 2; ++pass) {
          const int32_t* off = pass == 0 ? m.full_off : m.part_off;
          const int32_t* idx = pass == 0 ? m.full_idx : m.part_idx;
          for (int64_t i = off[r]; i < off[r + 1]; ++i) {
            const int64_t kb = idx[i];
            const int64_t kt0 = kb * m.bk / kTile, kt1 = imin(nkt - 1, ((kb + 1) * m.bk - 1) / kTile);
            for (int64_t kt = kt0; kt <= kt1; ++kt) {
              if (seen[size_t(kt)] != stamp) {
                seen[size_t(kt)] = int32_t(stamp);
                full_pairs[size_t(kt)] = 0;
                touched.push_back(int32_t(kt));
              }
              if (pass == 0) full_pairs[size_t(kt)]++;
            }
          }
        }
      }
      std::sort(touched.begin(), touched.end());
      for (int32_t kt : touched) {
        // Full: every (query block, key block) pair over the tile pair is a full block, and the
        // key tile has no padding.
        const int64_t k0 = int64_t(kt) * kTile, k1 = imin(m.nk, k0 + kTile);
        const int64_t kblocks = (k1 - 1) / m.bk - k0 / m.bk + 1;
        const bool full = k1 - k0 == kTile && full_pairs[size_t(kt)] == (qb1 - qb0 + 1) * kblocks;
        ps.kv_tile.push_back(kt);
        ps.kv_cls.push_back(uint8_t(full ? TileClass::Full : TileClass::Partial));
      }
      ps.kv_off[size_t(stamp + 1)] = int32_t(ps.kv_tile.size());
    }
  }
  // Transpose (counting sort by key tile; query tiles come out ascending).
  ps.q_off.assign(size_t(rows * nkt + 1), 0);
  for (int64_t bh = 0; bh < rows; ++bh)
    for (int64_t qt = 0; qt < nqt; ++qt)
      for (int64_t i = ps.kv_off[size_t(bh * nqt + qt)]; i < ps.kv_off[size_t(bh * nqt + qt + 1)]; ++i)
        ps.q_off[size_t(bh * nkt + ps.kv_tile[size_t(i)] + 1)]++;
  for (size_t i = 1; i < ps.q_off.size(); ++i) ps.q_off[i] += ps.q_off[i - 1];
  ps.q_tile.assign(ps.kv_tile.size(), 0);
  std::vector<int32_t> fill(ps.q_off.begin(), ps.q_off.end() - 1);
  for (int64_t bh = 0; bh < rows; ++bh)
    for (int64_t qt = 0; qt < nqt; ++qt)
      for (int64_t i = ps.kv_off[size_t(bh * nqt + qt)]; i < ps.kv_off[size_t(bh * nqt + qt + 1)]; ++i)
        ps.q_tile[size_t(fill[size_t(bh * nkt + ps.kv_tile[size_t(i)])]++)] = int32_t(qt);
  ps.plan.nqt = nqt;
  ps.plan.nkt = nkt;
  ps.plan.kv_off = ps.kv_off.data();
  ps.plan.kv_tile = ps.kv_tile.data();
  ps.plan.kv_cls = ps.kv_cls.data();
  ps.plan.q_off = ps.q_off.data();
  ps.plan.q_tile = ps.q_tile.data();
}

}  // namespace

void block_sparse_forward(const AttentionFwdParams& p, const BlockMaskView& view) {
  PlanStorage ps;
  build_plan(view, ps);
  BlockSparseMask mask{view, ps.plan, p.shape.B, p.shape.H};
  fmha::forward(p, mask, "blockSparseAttention");
}

void block_sparse_backward(const AttentionBwdParams& p, const BlockMaskView& view) {
  PlanStorage ps;
  build_plan(view, ps);
  BlockSparseMask mask{view, ps.plan, p.shape.B, p.shape.H};
  fmha::backward(p, mask, "blockSparseAttentionBackward");
}

}  // namespace attnkit::cpu
