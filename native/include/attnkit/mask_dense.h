// DenseMaskT<QTile, KTile>: full, causal and sliding-window attention (FlashAttention 2
// conventions), over query tiles of QTile and key tiles of KTile positions; DenseMask is the
// 64 x 64 shape of the shipped kernels.
// Query i is aligned with key position i + (Nk - Nq) (bottom-right alignment, so a decoder's last
// query sees every key); it sees key j when  qa - left <= j <= qa + right  (left/right < 0 mean
// unbounded; causal clamps right to 0). Each row's visible set is one interval whose ends never
// decrease with the row, which is what makes the tile classification below exact.
#pragma once
#include "attnkit/mask.h"

namespace attnkit {
inline namespace ATTNKIT_ISA_NS {

template <int QTile, int KTile>
struct DenseMaskT {
  static_assert(QTile > 0 && KTile > 0 && KTile <= 64, "a key tile's row mask is one 64-bit word");
  static constexpr int kQTile = QTile, kKTile = KTile;

  int64_t nq = 0, nk = 0;
  int64_t left = -1, right = -1;  // window half-widths; -1 = unbounded

  static DenseMaskT make(int64_t nq, int64_t nk, bool causal, int64_t left, int64_t right) {
    DenseMaskT m;
    m.nq = nq;
    m.nk = nk;
    m.left = left;
    m.right = causal ? (right < 0 ? 0 : imin(right, 0)) : right;
    return m;
  }

  // Visible keys of row q: [lo, hi] clipped to [0, nk); empty when lo > hi.
  ATTNKIT_HD int64_t row_lo(int64_t q) const {
    int64_t qa = q + (nk - nq);
    return left < 0 ? 0 : imax(0, qa - left);
  }
  ATTNKIT_HD int64_t row_hi(int64_t q) const {
    int64_t qa = q + (nk - nq);
    return right < 0 ? nk - 1 : imin(nk - 1, qa + right);
  }

  ATTNKIT_HD bool allows(int64_t q, int64_t k) const {
    return k >= row_lo(q) && k <= row_hi(q);
  }

  // Keys that any row of [q0, q1) may see: [lo, hi); empty when lo >= hi.
  ATTNKIT_HD void key_range(int64_t q0, int64_t q1, int64_t* lo, int64_t* hi) const {
    *lo = row_lo(q0);
    *hi = row_hi(q1 - 1) + 1;
  }

  // Queries that may see some key of [k0, k1): [lo, hi). Rows whose interval is empty are excluded
  // by the kernel's per-tile classify.
  ATTNKIT_HD void query_range(int64_t k0, int64_t k1, int64_t* lo, int64_t* hi) const {
    int64_t off = nk - nq;
    // row_hi(q) >= k0  <=>  q >= k0 - right - off (when right bounded)
    *lo = right < 0 ? 0 : imax(0, k0 - right - off);
    // row_lo(q) <= k1 - 1  <=>  q <= k1 - 1 + left - off (when left bounded)
    *hi = left < 0 ? nq : imin(nq, k1 - 1 + left - off + 1);
  }

  ATTNKIT_HD TileClass classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
    if (q0 >= q1 || k0 >= k1) return TileClass::Skip;
    // Both interval ends grow with the row: the last row has the largest lo, the first the
    // smallest hi, so those two rows decide whether every element is visible.
    if (row_lo(q1 - 1) <= k0 && row_hi(q0) >= k1 - 1) return TileClass::Full;
    // Rows whose interval reaches into [k0, k1) form the range query_range() gives; the first such
    // row inside the tile (if any) has a non-empty intersection, so scanning stops at once.
    int64_t ra, rb;
    query_range(k0, k1, &ra, &rb);
    for (int64_t q = imax(ra, q0); q < imin(rb, q1); ++q)
      if (imax(row_lo(q), k0) <= imin(row_hi(q), k1 - 1)) return TileClass::Partial;
    return TileClass::Skip;
  }

  // ---- tile interface (mask.h); a dense problem is a single group.
  ATTNKIT_HD int64_t groups() const { return 1; }
  ATTNKIT_HD const DenseMaskT& group(int64_t) const { return *this; }
  // The view kernels use for batch b, head h (the same for every b and h here).
  ATTNKIT_HD const DenseMaskT& group(int64_t, int64_t, int64_t) const { return *this; }
  ATTNKIT_HD int64_t max_q_tiles() const { return ceil_div(nq, QTile); }
  ATTNKIT_HD int64_t max_k_tiles() const { return ceil_div(nk, KTile); }
  ATTNKIT_HD int64_t q_tiles() const { return max_q_tiles(); }
  ATTNKIT_HD int64_t k_tiles() const { return max_k_tiles(); }
  // Rows of query tile qt the kernel computes (trailing padding is skipped).
  ATTNKIT_HD int64_t q_rows(int64_t qt) const { return imin(QTile, nq - qt * QTile); }
  ATTNKIT_HD int64_t q_token(int64_t p) const { return p < nq ? p : -1; }
  ATTNKIT_HD int64_t k_token(int64_t p) const { return p < nk ? p : -1; }
  ATTNKIT_HD void q_tile_tokens(int64_t t, int64_t* out) const {
    for (int64_t j = 0; j < QTile; ++j) out[j] = q_token(t * QTile + j);
  }
  ATTNKIT_HD void k_tile_tokens(int64_t t, int64_t* out) const {
    for (int64_t j = 0; j < KTile; ++j) out[j] = k_token(t * KTile + j);
  }

  ATTNKIT_HD void kv_tile_range(int64_t qt, int64_t* a, int64_t* b) const {
    int64_t lo, hi;
    key_range(qt * QTile, imin(nq, (qt + 1) * QTile), &lo, &hi);
    *a = lo < hi ? lo / KTile : 0;
    *b = lo < hi ? ceil_div(hi, KTile) : 0;
  }
  ATTNKIT_HD int64_t kv_count(int64_t qt) const {
    int64_t a, b;
    kv_tile_range(qt, &a, &b);
    return b - a;
  }
  ATTNKIT_HD int64_t kv_at(int64_t qt, int64_t i) const {
    int64_t a, b;
    kv_tile_range(qt, &a, &b);
    return a + i;
  }
  ATTNKIT_HD void q_tile_range(int64_t kt, int64_t* a, int64_t* b) const {
    int64_t lo, hi;
    query_range(kt * KTile, imin(nk, (kt + 1) * KTile), &lo, &hi);
    *a = lo < hi ? lo / QTile : 0;
    *b = lo < hi ? ceil_div(hi, QTile) : 0;
  }
  ATTNKIT_HD int64_t q_count(int64_t kt) const {
    int64_t a, b;
    q_tile_range(kt, &a, &b);
    return b - a;
  }
  ATTNKIT_HD int64_t q_at(int64_t kt, int64_t i) const {
    int64_t a, b;
    q_tile_range(kt, &a, &b);
    return a + i;
  }
  ATTNKIT_HD TileClass classify(int64_t qt, int64_t kt) const {
    const int64_t k0 = kt * KTile, k1 = imin(nk, k0 + KTile);
    const TileClass c = classify(qt * QTile, imin(nq, (qt + 1) * QTile), k0, k1);
    return c == TileClass::Full && k1 - k0 < KTile ? TileClass::Partial : c;
  }
  ATTNKIT_HD void tile_masks(int64_t qt, int64_t kt, uint64_t* out) const {
    for (int64_t r = 0; r < QTile; ++r) out[r] = row_mask(qt * QTile + r, kt);
  }
  ATTNKIT_HD uint64_t row_mask(int64_t q, int64_t kt) const {
    if (q >= nq) return 0;
    const int64_t k0 = kt * KTile;
    const int64_t lo = imax(row_lo(q), k0), hi = imin(row_hi(q), imin(nk, k0 + KTile) - 1);
    return bit_range(lo - k0, hi - k0);
  }
};

using DenseMask = DenseMaskT<kTile, kTile>;

}  // namespace ATTNKIT_ISA_NS
}  // namespace attnkit
