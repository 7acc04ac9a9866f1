// NeighborhoodMaskT<R, QTile, KTile>: NATTEN's neighborhood attention (R = 1, 2, 3 spatial axes)
// with per-axis kernel size, stride, dilation and causality, as a tile policy (mask.h), over query
// tiles of QTile and key tiles of KTile tokens; NeighborhoodMask<R> is the 64 x 64 shape of the CPU
// kernels.
//
// Semantics per axis (docs/neighborhood.md, NATTEN's reference mask): dilation d splits the axis
// into d interleaved groups (token x is in group x % d at in-group index x / d); a query and a key
// must share the group on every axis. With window halves left = k/2, right = k/2 + (k%2 - 1):
//   non-causal: leader = min((i/s)*s + s/2, Lg-1); start = clamp(leader - left, 0, Lg - k);
//               end = start + k   (shifted, never truncated, at the borders)
//   causal:     leader = min((i/s)*s + s-1, Lg-1); start = max(leader - k + 1, 0);
//               end = min(i + 1, Lg)
// and a key is visible when it is inside the window on every axis.
//
// Layout for the kernel (token permutation, GNA style, done inside the kernels' packing): each
// dilation group is a group of the problem; its sub-grid is cut into boxes of tq tokens per axis for
// the queries (the box volume is QTile) and of tk tokens per axis for the keys (volume KTile), and
// numbered box by box, row-major, the last axis fastest, inside a box too. Positions past the
// sub-grid's edge are padding. Window start and end never decrease with the query index, so the
// keys a box of queries can see lie in the box spanned by the first query's start and the last
// query's end: the key tiles to visit form a box of tiles, and the queries that can see a box of
// keys form a box too (found by binary search on those monotone ends).
#pragma once
#include "attnkit/mask.h"

namespace attnkit {
inline namespace ATTNKIT_ISA_NS {

struct NaAxis {
  int64_t L = 1;   // tokens along the axis
  int64_t d = 1;   // dilation
  int64_t g = 0;   // dilation group of this view
  int64_t Lg = 1;  // tokens of the group: ceil((L - g) / d)
  int64_t k = 1, s = 1;
  bool causal = false;
  int64_t left = 0;
  int64_t tq = 1, tk = 1;    // query and key tile extents (powers of two)
  int64_t ntq = 1, ntk = 1;  // query and key tiles along the axis: ceil(Lg / tq), ceil(Lg / tk)
  // Where this axis's intra-tile coordinate sits in a tile position: bits [low, low + log2 t), low
  // = log2 of the extents of the later axes, for query and key tiles.
  int low_q = 0, low_k = 0;
  uint64_t rep_k = 0;  // the key-tile positions whose coordinate on this axis is 0
  int64_t token_stride = 1;  // row-major stride of this axis in the token grid

  ATTNKIT_HD int64_t start(int64_t i) const {
    if (causal) return imax(imin((i / s) * s + s - 1, Lg - 1) - k + 1, 0);
    const int64_t lead = imin((i / s) * s + s / 2, Lg - 1);
    return imin(imax(lead - left, 0), Lg - k);
  }
  ATTNKIT_HD int64_t end(int64_t i) const { return causal ? imin(i + 1, Lg) : start(i) + k; }

  // First i in [lo, hi) with end(i) > key (hi if none): end is non-decreasing.
  ATTNKIT_HD int64_t first_end_after(int64_t key, int64_t lo, int64_t hi) const {
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (end(mid) > key) hi = mid; else lo = mid + 1;
    }
    return lo;
  }
  // One past the last i in [lo, hi) with start(i) <= key: start is non-decreasing.
  ATTNKIT_HD int64_t last_start_upto(int64_t key, int64_t lo, int64_t hi) const {
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (start(mid) <= key) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  // Key tiles the query tile qt (axis tile coordinate) must visit: [*a, *b).
  ATTNKIT_HD void key_tiles(int64_t qt, int64_t* a, int64_t* b) const {
    const int64_t qa = qt * tq, qb = imin(Lg, qa + tq);
    *a = start(qa) / tk;
    *b = ceil_div(end(qb - 1), tk);
  }
  // Query tiles that may see key tile kt: [*a, *b).
  ATTNKIT_HD void query_tiles(int64_t kt, int64_t* a, int64_t* b) const {
    const int64_t ka = kt * tk, kb = imin(Lg, ka + tk);
    const int64_t qa = first_end_after(ka, 0, Lg), qb = last_start_upto(kb - 1, 0, Lg);
    *a = qa < qb ? qa / tq : 0;
    *b = qa < qb ? ceil_div(qb, tq) : 0;
  }
  // 0: no query of [qa, qb) sees a key of [ka, kb); 1: all see all; 2: some.
  ATTNKIT_HD int axis_class(int64_t qa, int64_t qb, int64_t ka, int64_t kb) const {
    if (start(qb - 1) <= ka && end(qa) >= kb) return 1;
    const int64_t i = first_end_after(ka, qa, qb);
    return i < qb && start(i) < kb ? 2 : 0;
  }
  // Bit j: key kt*tk + j is a real key inside query i's window.
  ATTNKIT_HD uint64_t bits(int64_t i, int64_t kt) const {
    const int64_t k0 = kt * tk;
    return bit_range(imax(start(i), k0) - k0, imin(imin(end(i), Lg), k0 + tk) - 1 - k0);
  }
  // The key-tile positions whose coordinate on this axis is c: those of coordinate 0, shifted.
  ATTNKIT_HD uint64_t key_pattern(int64_t c) const { return rep_k << (c << low_k); }
};

// One dilation group of an R-dimensional problem.
template <int R, int QTile, int KTile>
struct NaGroupT {
  NaAxis ax[R];

  ATTNKIT_HD int64_t q_tiles() const {
    int64_t n = 1;
    for (int a = 0; a < R; ++a) n *= ax[a].ntq;
    return n;
  }
  ATTNKIT_HD int64_t k_tiles() const {
    int64_t n = 1;
    for (int a = 0; a < R; ++a) n *= ax[a].ntk;
    return n;
  }
  ATTNKIT_HD int64_t q_rows(int64_t) const { return QTile; }

  // Tile index <-> per-axis tile coordinates (row-major, last axis fastest), of query or key tiles.
  ATTNKIT_HD void tile_coords(int64_t tile, int64_t* tc, bool key) const {
    for (int a = R - 1; a >= 0; --a) {
      const int64_t nt = key ? ax[a].ntk : ax[a].ntq;
      tc[a] = tile % nt;
      tile /= nt;
    }
  }
  ATTNKIT_HD int64_t tile_index(const int64_t* tc, bool key) const {
    int64_t idx = 0;
    for (int a = 0; a < R; ++a) idx = idx * (key ? ax[a].ntk : ax[a].ntq) + tc[a];
    return idx;
  }
  // Axis-a coordinate inside a query (key) tile of tile position j.
  ATTNKIT_HD int64_t intra(int a, int64_t j, bool key) const {
    return key ? (j >> ax[a].low_k) & (ax[a].tk - 1) : (j >> ax[a].low_q) & (ax[a].tq - 1);
  }

  // In-group coordinates of a query (key) position; false for padding.
  ATTNKIT_HD bool coords(int64_t pos, int64_t* c, bool key) const {
    const int64_t tile = key ? KTile : QTile;
    int64_t tc[R];
    tile_coords(pos / tile, tc, key);
    const int64_t j = pos % tile;
    bool valid = true;
    for (int a = 0; a < R; ++a) {
      c[a] = tc[a] * (key ? ax[a].tk : ax[a].tq) + intra(a, j, key);
      valid = valid && c[a] < ax[a].Lg;
    }
    return valid;
  }
  // Token index (row-major over the full axes) of a query (key) position, or -1 for padding.
  ATTNKIT_HD int64_t token(int64_t pos, bool key) const {
    int64_t c[R];
    if (!coords(pos, c, key)) return -1;
    int64_t idx = 0;
    for (int a = 0; a < R; ++a) idx += (ax[a].g + ax[a].d * c[a]) * ax[a].token_stride;
    return idx;
  }
  // The tokens of all positions of a query (key) tile (-1 for padding), without per-position divisions.
  ATTNKIT_HD void tile_tokens(int64_t tile, int64_t* out, bool key) const {
    int64_t tc[R];
    tile_coords(tile, tc, key);
    for (int64_t j = 0; j < (key ? KTile : QTile); ++j) {
      int64_t idx = 0;
      bool valid = true;
      for (int a = 0; a < R; ++a) {
        const int64_t c = tc[a] * (key ? ax[a].tk : ax[a].tq) + intra(a, j, key);
        valid = valid && c < ax[a].Lg;
        idx += (ax[a].g + ax[a].d * c) * ax[a].token_stride;
      }
      out[j] = valid ? idx : -1;
    }
  }
  ATTNKIT_HD void q_tile_tokens(int64_t tile, int64_t* out) const { tile_tokens(tile, out, false); }
  ATTNKIT_HD void k_tile_tokens(int64_t tile, int64_t* out) const { tile_tokens(tile, out, true); }
  ATTNKIT_HD int64_t q_token(int64_t pos) const { return token(pos, false); }
  ATTNKIT_HD int64_t k_token(int64_t pos) const { return token(pos, true); }

  ATTNKIT_HD bool allows(int64_t qp, int64_t kp) const {
    int64_t qc[R], kc[R];
    if (!coords(qp, qc, false) || !coords(kp, kc, true)) return false;
    for (int a = 0; a < R; ++a)
      if (kc[a] < ax[a].start(qc[a]) || kc[a] >= ax[a].end(qc[a])) return false;
    return true;
  }

  // Forward: the key tiles of query tile qt form a box; kv_at decodes the i-th (row-major).
  ATTNKIT_HD int64_t kv_count(int64_t qt) const {
    int64_t tc[R], n = 1;
    tile_coords(qt, tc, false);
    for (int a = 0; a < R; ++a) {
      int64_t lo, hi;
      ax[a].key_tiles(tc[a], &lo, &hi);
      n *= hi - lo;
    }
    return n;
  }
  ATTNKIT_HD int64_t kv_at(int64_t qt, int64_t i) const {
    int64_t tc[R], lo[R], w[R], kc[R];
    tile_coords(qt, tc, false);
    for (int a = 0; a < R; ++a) {
      int64_t hi;
      ax[a].key_tiles(tc[a], &lo[a], &hi);
      w[a] = hi - lo[a];
    }
    for (int a = R - 1; a >= 0; --a) {
      kc[a] = lo[a] + i % w[a];
      i /= w[a];
    }
    return tile_index(kc, true);
  }
  // Backward: the query tiles that may see key tile kt form a box.
  ATTNKIT_HD int64_t q_count(int64_t kt) const {
    int64_t tc[R], n = 1;
    tile_coords(kt, tc, true);
    for (int a = 0; a < R; ++a) {
      int64_t lo, hi;
      ax[a].query_tiles(tc[a], &lo, &hi);
      n *= hi - lo;
    }
    return n;
  }
  ATTNKIT_HD int64_t q_at(int64_t kt, int64_t i) const {
    int64_t tc[R], lo[R], w[R], qc[R];
    tile_coords(kt, tc, true);
    for (int a = 0; a < R; ++a) {
      int64_t hi;
      ax[a].query_tiles(tc[a], &lo[a], &hi);
      w[a] = hi - lo[a];
    }
    for (int a = R - 1; a >= 0; --a) {
      qc[a] = lo[a] + i % w[a];
      i /= w[a];
    }
    return tile_index(qc, false);
  }

  ATTNKIT_HD TileClass classify(int64_t qt, int64_t kt) const {
    int64_t qc[R], kc[R];
    tile_coords(qt, qc, false);
    tile_coords(kt, kc, true);
    bool full = true;
    for (int a = 0; a < R; ++a) {
      const NaAxis& x = ax[a];
      const int64_t qa = qc[a] * x.tq, qb = imin(x.Lg, qa + x.tq);
      const int64_t ka = kc[a] * x.tk, kb = imin(x.Lg, ka + x.tk);
      if (qa >= qb || ka >= kb) return TileClass::Skip;
      const int c = x.axis_class(qa, qb, ka, kb);
      if (c == 0) return TileClass::Skip;
      full = full && c == 1 && kb - ka == x.tk;  // padding keys must be masked
    }
    return full ? TileClass::Full : TileClass::Partial;
  }

  // All QTile row masks of the tile pair (qt, kt) at once, factorized per axis: a key position is
  // visible to a query when its coordinate on every axis is in that axis's window of the query's
  // coordinate, so each row mask is the AND of one mask per axis, built from the axis's window
  // bits and the key-tile position patterns. (The CPU's whole-tile form: its table of QTile words
  // per axis is local memory on a GPU, where a thread computes its own row with row_mask.)
  ATTNKIT_HD void tile_masks(int64_t qt, int64_t kt, uint64_t* out) const {
    int64_t qtc[R], ktc[R];
    tile_coords(qt, qtc, false);
    tile_coords(kt, ktc, true);
    uint64_t at[R][QTile];  // at[a][c]: visible key positions for query axis-a coordinate c
    for (int a = 0; a < R; ++a) {
      const NaAxis& x = ax[a];
      for (int64_t c = 0; c < x.tq; ++c) {
        const int64_t qc = qtc[a] * x.tq + c;
        uint64_t bits = qc < x.Lg ? x.bits(qc, ktc[a]) : 0;
        uint64_t m = 0;
        if (x.low_k == 0) {
          // the last axis: rep_k has one bit per period of tk and bits < 2^tk, so the shifted
          // copies do not overlap and their OR is a product
          m = x.rep_k * bits;
        } else {
          while (bits) {
            m |= x.key_pattern(ctz64(bits));
            bits &= bits - 1;
          }
        }
        at[a][c] = m;
      }
    }
    for (int64_t j = 0; j < QTile; ++j) {
      uint64_t m = ~uint64_t(0);
      for (int a = 0; a < R; ++a) m &= at[a][intra(a, j, false)];
      out[j] = m;
    }
  }

  ATTNKIT_HD uint64_t row_mask(int64_t qp, int64_t kt) const {
    int64_t qc[R], kc[R];
    if (!coords(qp, qc, false)) return 0;
    tile_coords(kt, kc, true);
    uint64_t b[R];
    for (int a = 0; a < R; ++a) {
      b[a] = ax[a].bits(qc[a], kc[a]);
      if (!b[a]) return 0;
    }
    uint64_t m = 0;
    if constexpr (R == 1) {
      m = b[0];
    } else if constexpr (R == 2) {
      for (int64_t x = 0; x < ax[0].tk; ++x)
        if ((b[0] >> x) & 1u) m |= b[1] << (x * ax[1].tk);
    } else {
      for (int64_t x = 0; x < ax[0].tk; ++x) {
        if (!((b[0] >> x) & 1u)) continue;
        for (int64_t y = 0; y < ax[1].tk; ++y)
          if ((b[1] >> y) & 1u) m |= b[R - 1] << ((x * ax[1].tk + y) * ax[R - 1].tk);
      }
    }
    return m;
  }
};

template <int R, int QTile, int KTile>
struct NeighborhoodMaskT {
  static_assert(QTile > 0 && (QTile & (QTile - 1)) == 0 && KTile > 0 && (KTile & (KTile - 1)) == 0 && KTile <= 64,
                "tiles are powers of two, and a key tile's row mask is one 64-bit word");
  static constexpr int kQTile = QTile, kKTile = KTile;
  // The CUDA kernels keep a view of this policy (some 100 bytes of per-axis fields) in shared memory,
  // built once per CTA (native/cuda/fmha/tile.cuh, cta_view); the CPU kernels ignore it.
  static constexpr bool kViewsInSharedMemory = true;

  // Per-axis problem (group index 0 in each); group(g) fills in the group's own index and length.
  NaAxis base[R];

  // Validated by the caller: 1 < k, s <= k, k * d <= L, tq >= 1 and tk >= 1 powers of two, product
  // of tq = QTile, product of tk = KTile (tk = nullptr: the key tiles have the query tiles' shape).
  static NeighborhoodMaskT make(const int64_t* L, const int64_t* k, const int64_t* s, const int64_t* d,
                                const bool* causal, const int64_t* tq, const int64_t* tk = nullptr) {
    NeighborhoodMaskT m;
    for (int a = 0; a < R; ++a) {
      NaAxis& x = m.base[a];
      x.L = L[a];
      x.d = d[a];
      x.k = k[a];
      x.s = s[a];
      x.causal = causal[a];
      x.left = k[a] / 2;
      x.tq = tq[a];
      x.tk = tk ? tk[a] : tq[a];
    }
    return m;
  }

  ATTNKIT_HD int64_t groups() const {
    int64_t n = 1;
    for (int a = 0; a < R; ++a) n *= base[a].d;
    return n;
  }
  ATTNKIT_HD NaGroupT<R, QTile, KTile> group(int64_t g) const {
    NaGroupT<R, QTile, KTile> out;
    for (int a = R - 1; a >= 0; --a) {
      NaAxis x = base[a];
      x.g = g % x.d;
      g /= x.d;
      x.Lg = ceil_div(x.L - x.g, x.d);
      x.ntq = ceil_div(x.Lg, x.tq);
      x.ntk = ceil_div(x.Lg, x.tk);
      out.ax[a] = x;
    }
    int low_q = 0, low_k = 0;
    int64_t stride = 1;
    for (int a = R - 1; a >= 0; --a) {
      NaAxis& x = out.ax[a];
      x.low_q = low_q;
      x.low_k = low_k;
      low_q += ctz64(uint64_t(x.tq));
      low_k += ctz64(uint64_t(x.tk));
      x.token_stride = stride;
      stride *= x.L;
      x.rep_k = 0;
      for (int64_t j = 0; j < KTile; ++j)
        if (out.intra(a, j, true) == 0) x.rep_k |= uint64_t(1) << j;
    }
    return out;
  }
  // The view kernels use for batch b, head h (the same for every b and h here).
  ATTNKIT_HD NaGroupT<R, QTile, KTile> group(int64_t g, int64_t, int64_t) const { return group(g); }
  // Group 0 is the largest on every axis.
  ATTNKIT_HD int64_t max_q_tiles() const { return group(0).q_tiles(); }
  ATTNKIT_HD int64_t max_k_tiles() const { return group(0).k_tiles(); }
};

template <int R>
using NaGroup = NaGroupT<R, kTile, kTile>;
template <int R>
using NeighborhoodMask = NeighborhoodMaskT<R, kTile, kTile>;

}  // namespace ATTNKIT_ISA_NS
}  // namespace attnkit
