// BlockSparseMaskT<QTile, KTile>: attention restricted to listed key blocks (FlexAttention-style
// BlockMask), as a tile policy (mask.h); BlockSparseMask is the 64 x 64 shape of the CPU kernels.
//
// The mask (BlockMaskView) is, per (b|1, h|1) and query block of bq tokens, a sorted list of *full*
// key blocks (every in-range element visible) and a sorted list of *partial* key blocks, each with
// its element bitmap (bq rows of bk bits, in ceil(bk / 32) 32-bit words per row, bit j of a row =
// key k0 + j). Block sizes are powers of two in 16..128 and need not equal the kernels' tiles, so
// the policy goes through a plan (BlockSparsePlan, built per op by the host for the tile shape) that lists for
// every kernel query tile the kernel key tiles that hold a listed block, with their class, and the
// transposed lists for dK/dV. Row masks are assembled from the blocks' status and bitmaps.
#pragma once
#include "attnkit/mask.h"

namespace attnkit {
inline namespace ATTNKIT_ISA_NS {

struct BlockMaskView {
  int64_t B = 1, H = 1;    // mask batch and head extents (1 = shared by all)
  int64_t nq = 0, nk = 0;  // tokens
  int64_t bq = 64, bk = 64;
  int64_t qb = 0, kb = 0;  // blocks: ceil(nq / bq), ceil(nk / bk)
  const int32_t* full_off = nullptr;  // [B * H * qb + 1]
  const int32_t* full_idx = nullptr;
  const int32_t* part_off = nullptr;  // [B * H * qb + 1]
  const int32_t* part_idx = nullptr;
  const uint32_t* part_bits = nullptr;  // per partial block: bq * words() words

  ATTNKIT_HD int64_t words() const { return (bk + 31) / 32; }
  ATTNKIT_HD int64_t row(int64_t bh, int64_t q_block) const { return bh * qb + q_block; }

  // Index in the row's list of key block k, or -1 (lists are sorted ascending).
  ATTNKIT_HD static int64_t find(const int32_t* idx, int64_t lo, int64_t hi, int64_t k) {
    const int64_t end = hi;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (idx[mid] < k) lo = mid + 1; else hi = mid;
    }
    return lo < end && idx[lo] == k ? lo : -1;
  }
  // Status of block (q_block, k_block) in mask row bh: 0 absent, 1 full, 2 partial (*part = its
  // index into part_idx / part_bits).
  ATTNKIT_HD int status(int64_t bh, int64_t q_block, int64_t k_block, int64_t* part) const {
    const int64_t r = row(bh, q_block);
    if (find(full_idx, full_off[r], full_off[r + 1], k_block) >= 0) return 1;
    const int64_t i = find(part_idx, part_off[r], part_off[r + 1], k_block);
    if (i < 0) return 0;
    *part = i;
    return 2;
  }
  // bits [col, col + n) (n <= 64) of row r of partial block i. Kernel tiles start at multiples of
  // their (power-of-two) size and blocks at multiples of theirs, so col is a multiple of 32 whenever
  // n > 1 spans words; the general case is handled too (test/block-sparse.test.ts covers 16..128).
  ATTNKIT_HD uint64_t part_row_bits(int64_t i, int64_t r, int64_t col, int64_t n) const {
    const uint32_t* w = part_bits + (i * bq + r) * words();
    const int64_t nw = words();
    const int64_t w0 = col >> 5, sh = col & 31;
    // 96 bits starting at word w0 (words past the row read as 0), shifted down by sh
    const uint64_t lo = uint64_t(w[w0]) | (w0 + 1 < nw ? uint64_t(w[w0 + 1]) << 32 : 0);
    const uint64_t hi = w0 + 2 < nw ? uint64_t(w[w0 + 2]) : 0;
    uint64_t out = (lo >> sh) | (sh ? hi << (64 - sh) : 0);
    return n >= 64 ? out : out & ((uint64_t(1) << n) - 1);
  }
};

// Kernel-tile lists derived from a BlockMaskView (see block_sparse.cc). Per mask row bh:
// query tile qt lists [kv_off[bh * nqt + qt], kv_off[... + 1]) entries of kv_tile / kv_cls (key
// tiles ascending); key tile kt lists [q_off[bh * nkt + kt], ...) entries of q_tile / q_cls.
struct BlockSparsePlan {
  int64_t nqt = 0, nkt = 0;
  const int32_t* kv_off = nullptr;
  const int32_t* kv_tile = nullptr;
  const uint8_t* kv_cls = nullptr;
  const int32_t* q_off = nullptr;
  const int32_t* q_tile = nullptr;
};

template <int QTile, int KTile>
struct BlockSparseGroupT {
  static_assert(QTile > 0 && (QTile & (QTile - 1)) == 0 && KTile > 0 && (KTile & (KTile - 1)) == 0 && KTile <= 64,
                "tiles are powers of two, and a key tile's row mask is one 64-bit word");
  // Key blocks (at least 16 tokens, a power of two) that can overlap one key tile (at most 64).
  static constexpr int kMaxBlocks = 4;
  static_assert(KTile / 16 <= kMaxBlocks, "more key blocks per key tile than tile_masks keeps statuses for");

  const BlockMaskView* m = nullptr;
  const BlockSparsePlan* plan = nullptr;
  int64_t bh = 0;  // mask row (b % B, h % H)

  ATTNKIT_HD int64_t q_tiles() const { return plan->nqt; }
  ATTNKIT_HD int64_t k_tiles() const { return plan->nkt; }
  ATTNKIT_HD int64_t q_rows(int64_t qt) const { return imin(QTile, m->nq - qt * QTile); }
  ATTNKIT_HD int64_t q_token(int64_t p) const { return p < m->nq ? p : -1; }
  ATTNKIT_HD int64_t k_token(int64_t p) const { return p < m->nk ? p : -1; }
  ATTNKIT_HD void q_tile_tokens(int64_t t, int64_t* out) const {
    for (int64_t j = 0; j < QTile; ++j) out[j] = q_token(t * QTile + j);
  }
  ATTNKIT_HD void k_tile_tokens(int64_t t, int64_t* out) const {
    for (int64_t j = 0; j < KTile; ++j) out[j] = k_token(t * KTile + j);
  }

  ATTNKIT_HD int64_t kv_count(int64_t qt) const {
    const int64_t r = bh * plan->nqt + qt;
    return plan->kv_off[r + 1] - plan->kv_off[r];
  }
  ATTNKIT_HD int64_t kv_at(int64_t qt, int64_t i) const {
    return plan->kv_tile[plan->kv_off[bh * plan->nqt + qt] + i];
  }
  ATTNKIT_HD int64_t q_count(int64_t kt) const {
    const int64_t r = bh * plan->nkt + kt;
    return plan->q_off[r + 1] - plan->q_off[r];
  }
  ATTNKIT_HD int64_t q_at(int64_t kt, int64_t i) const {
    return plan->q_tile[plan->q_off[bh * plan->nkt + kt] + i];
  }
  ATTNKIT_HD TileClass classify(int64_t qt, int64_t kt) const {
    const int64_t r = bh * plan->nqt + qt;
    const int64_t i = BlockMaskView::find(plan->kv_tile, plan->kv_off[r], plan->kv_off[r + 1], kt);
    return i < 0 ? TileClass::Skip : TileClass(plan->kv_cls[i]);
  }

  ATTNKIT_HD bool allows(int64_t q, int64_t k) const {
    if (q >= m->nq || k >= m->nk) return false;
    int64_t part = 0;
    const int st = m->status(bh, q / m->bq, k / m->bk, &part);
    if (st == 2) return (m->part_row_bits(part, q % m->bq, k % m->bk, 1) & 1u) != 0;
    return st == 1;
  }

  // Row masks of the tile pair: per row, the key blocks overlapping kt contribute all their
  // in-range columns (full) or their bitmap row (partial). The CPU's whole-tile form: the blocks'
  // statuses are looked up once per query block.
  ATTNKIT_HD void tile_masks(int64_t qt, int64_t kt, uint64_t* out) const {
    const int64_t k0 = kt * KTile, k1 = imin(m->nk, k0 + KTile);
    const int64_t kb0 = k0 / m->bk, kb1 = (k1 - 1) / m->bk;  // key blocks overlapping the tile
    int64_t cur_qb = -1;
    int st[kMaxBlocks] = {0, 0, 0, 0};  // (spelled out: `= {}` makes GCC emit other code for the CPU kernels)
    int64_t part[kMaxBlocks] = {0, 0, 0, 0};
    for (int64_t r = 0; r < QTile; ++r) {
      const int64_t q = qt * QTile + r;
      if (q >= m->nq || k0 >= k1) {
        out[r] = 0;
        continue;
      }
      const int64_t qblock = q / m->bq;
      if (qblock != cur_qb) {  // statuses change only at query block boundaries
        cur_qb = qblock;
        for (int64_t b = kb0; b <= kb1; ++b) st[b - kb0] = m->status(bh, qblock, b, &part[b - kb0]);
      }
      uint64_t mask = 0;
      for (int64_t b = kb0; b <= kb1; ++b) {
        const int s = st[b - kb0];
        if (s == 0) continue;
        const int64_t c0 = imax(b * m->bk, k0), c1 = imin((b + 1) * m->bk, k1);  // [c0, c1) in tile
        const uint64_t bits = s == 1 ? bit_range(0, c1 - c0 - 1)
                                     : m->part_row_bits(part[b - kb0], q % m->bq, c0 - b * m->bk, c1 - c0);
        mask |= bits << (c0 - k0);
      }
      out[r] = mask;
    }
  }
  // One row of tile_masks, for a thread that owns query q: no per-thread array (a GPU would put a
  // dynamically indexed one in local memory), the statuses are looked up per block.
  ATTNKIT_HD uint64_t row_mask(int64_t q, int64_t kt) const {
    const int64_t k0 = kt * KTile, k1 = imin(m->nk, k0 + KTile);
    if (q >= m->nq || k0 >= k1) return 0;
    uint64_t mask = 0;
    for (int64_t b = k0 / m->bk; b <= (k1 - 1) / m->bk; ++b) {
      int64_t part = 0;
      const int st = m->status(bh, q / m->bq, b, &part);
      mask |= block_row_bits(q, k0, k1, b, st, part);
    }
    return mask;
  }

 private:
  // Row q's visible keys of key block b (status st, partial index part) inside [k0, k1), as bits from k0.
  ATTNKIT_HD uint64_t block_row_bits(int64_t q, int64_t k0, int64_t k1, int64_t b, int st, int64_t part) const {
    if (st == 0) return 0;
    const int64_t c0 = imax(b * m->bk, k0), c1 = imin((b + 1) * m->bk, k1);  // [c0, c1) in tile
    const uint64_t bits = st == 1 ? bit_range(0, c1 - c0 - 1) : m->part_row_bits(part, q % m->bq, c0 - b * m->bk, c1 - c0);
    return bits << (c0 - k0);
  }
};

template <int QTile, int KTile>
struct BlockSparseMaskT {
  static constexpr int kQTile = QTile, kKTile = KTile;
  BlockMaskView view;
  BlockSparsePlan plan;  // built for QTile x KTile tiles
  int64_t B = 1, H = 1;  // problem batch and heads

  ATTNKIT_HD int64_t groups() const { return 1; }
  ATTNKIT_HD int64_t max_q_tiles() const { return plan.nqt; }
  ATTNKIT_HD int64_t max_k_tiles() const { return plan.nkt; }
  ATTNKIT_HD BlockSparseGroupT<QTile, KTile> group(int64_t, int64_t b, int64_t h) const {
    BlockSparseGroupT<QTile, KTile> g;
    g.m = &view;
    g.plan = &plan;
    g.bh = (b % view.B) * view.H + (h % view.H);
    return g;
  }
};

using BlockSparseGroup = BlockSparseGroupT<kTile, kTile>;
using BlockSparseMask = BlockSparseMaskT<kTile, kTile>;

}  // namespace ATTNKIT_ISA_NS
}  // namespace attnkit
