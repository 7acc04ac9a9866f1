// NeighborhoodMask<R>: NATTEN's neighborhood attention (R = 1, 2, 3 spatial axes) with per-axis
// kernel size, stride, dilation and causality, as a tile policy (mask.h).
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
// dilation group is a group of the problem; its sub-grid is cut into boxes of `tile` tokens per axis
// (the box volume is kTile = 64) and numbered box by box, row-major, the last axis fastest, inside a
// box too. Positions past the sub-grid's edge are padding. Window start and end never decrease with
// the query index, so the keys a box of queries can see lie in the box spanned by the first query's
// start and the last query's end: the key tiles to visit form a box of tiles, and the queries that
// can see a box of keys form a box too (found by binary search on those monotone ends).
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
  int64_t t = 1;   // tile extent (a power of two: the tile volume is 64)
  int64_t nt = 1;  // tiles along the axis: ceil(Lg / t)
  int shift = 0;   // log2(t) + log2 of the extents of the later axes: where this axis's intra-tile
                   // coordinate sits in a position's low 6 bits
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

  // Tiles of keys the query tile qt (axis tile coordinate) must visit: [*a, *b).
  ATTNKIT_HD void key_tiles(int64_t qt, int64_t* a, int64_t* b) const {
    const int64_t qa = qt * t, qb = imin(Lg, qa + t);
    *a = start(qa) / t;
    *b = ceil_div(end(qb - 1), t);
  }
  // Tiles of queries that may see key tile kt: [*a, *b).
  ATTNKIT_HD void query_tiles(int64_t kt, int64_t* a, int64_t* b) const {
    const int64_t ka = kt * t, kb = imin(Lg, ka + t);
    const int64_t qa = first_end_after(ka, 0, Lg), qb = last_start_upto(kb - 1, 0, Lg);
    *a = qa < qb ? qa / t : 0;
    *b = qa < qb ? ceil_div(qb, t) : 0;
  }
  // 0: no query of [qa, qb) sees a key of [ka, kb); 1: all see all; 2: some.
  ATTNKIT_HD int axis_class(int64_t qa, int64_t qb, int64_t ka, int64_t kb) const {
    if (start(qb - 1) <= ka && end(qa) >= kb) return 1;
    const int64_t i = first_end_after(ka, qa, qb);
    return i < qb && start(i) < kb ? 2 : 0;
  }
  // Bit j: key kt*t + j is a real key inside query i's window.
  ATTNKIT_HD uint64_t bits(int64_t i, int64_t kt) const {
    const int64_t k0 = kt * t;
    return bit_range(imax(start(i), k0) - k0, imin(imin(end(i), Lg), k0 + t) - 1 - k0);
  }
};

// One dilation group of an R-dimensional problem.
template <int R>
struct NaGroup {
  NaAxis ax[R];

  ATTNKIT_HD int64_t q_tiles() const {
    int64_t n = 1;
    for (int a = 0; a < R; ++a) n *= ax[a].nt;
    return n;
  }
  ATTNKIT_HD int64_t k_tiles() const { return q_tiles(); }
  ATTNKIT_HD int64_t q_rows(int64_t) const { return kTile; }

  // Tile index <-> per-axis tile coordinates (row-major, last axis fastest).
  ATTNKIT_HD void tile_coords(int64_t tile, int64_t* tc) const {
    for (int a = R - 1; a >= 0; --a) {
      tc[a] = tile % ax[a].nt;
      tile /= ax[a].nt;
    }
  }
  ATTNKIT_HD int64_t tile_index(const int64_t* tc) const {
    int64_t idx = 0;
    for (int a = 0; a < R; ++a) idx = idx * ax[a].nt + tc[a];
    return idx;
  }
  // Axis-a coordinate inside a tile of tile position j (< 64).
  ATTNKIT_HD int64_t intra(int a, int64_t j) const { return (j >> (ax[a].shift - log2t(a))) & (ax[a].t - 1); }
  ATTNKIT_HD int log2t(int a) const { return __builtin_ctzll(uint64_t(ax[a].t)); }

  // In-group coordinates of a position; false for padding.
  ATTNKIT_HD bool coords(int64_t pos, int64_t* c) const {
    int64_t tc[R];
    tile_coords(pos / kTile, tc);
    const int64_t j = pos % kTile;
    bool valid = true;
    for (int a = 0; a < R; ++a) {
      c[a] = tc[a] * ax[a].t + intra(a, j);
      valid = valid && c[a] < ax[a].Lg;
    }
    return valid;
  }
  // Token index (row-major over the full axes) of a position, or -1 for padding.
  ATTNKIT_HD int64_t token(int64_t pos) const {
    int64_t c[R];
    if (!coords(pos, c)) return -1;
    int64_t idx = 0;
    for (int a = 0; a < R; ++a) idx += (ax[a].g + ax[a].d * c[a]) * ax[a].token_stride;
    return idx;
  }
  // The tokens of all 64 positions of a tile (-1 for padding), without per-position divisions.
  ATTNKIT_HD void tile_tokens(int64_t tile, int64_t* out) const {
    int64_t tc[R];
    tile_coords(tile, tc);
    for (int64_t j = 0; j < kTile; ++j) {
      int64_t idx = 0;
      bool valid = true;
      for (int a = 0; a < R; ++a) {
        const int64_t c = tc[a] * ax[a].t + intra(a, j);
        valid = valid && c < ax[a].Lg;
        idx += (ax[a].g + ax[a].d * c) * ax[a].token_stride;
      }
      out[j] = valid ? idx : -1;
    }
  }
  ATTNKIT_HD void q_tile_tokens(int64_t tile, int64_t* out) const { tile_tokens(tile, out); }
  ATTNKIT_HD void k_tile_tokens(int64_t tile, int64_t* out) const { tile_tokens(tile, out); }
  ATTNKIT_HD int64_t q_token(int64_t pos) const { return token(pos); }
  ATTNKIT_HD int64_t k_token(int64_t pos) const { return token(pos); }

  ATTNKIT_HD bool allows(int64_t qp, int64_t kp) const {
    int64_t qc[R], kc[R];
    if (!coords(qp, qc) || !coords(kp, kc)) return false;
    for (int a = 0; a < R; ++a)
      if (kc[a] < ax[a].start(qc[a]) || kc[a] >= ax[a].end(qc[a])) return false;
    return true;
  }

  // Forward: the key tiles of query tile qt form a box; kv_at decodes the i-th (row-major).
  ATTNKIT_HD int64_t kv_count(int64_t qt) const {
    int64_t tc[R], n = 1;
    tile_coords(qt, tc);
    for (int a = 0; a < R; ++a) {
      int64_t lo, hi;
      ax[a].key_tiles(tc[a], &lo, &hi);
      n *= hi - lo;
    }
    return n;
  }
  ATTNKIT_HD int64_t kv_at(int64_t qt, int64_t i) const {
    int64_t tc[R], lo[R], w[R], kc[R];
    tile_coords(qt, tc);
    for (int a = 0; a < R; ++a) {
      int64_t hi;
      ax[a].key_tiles(tc[a], &lo[a], &hi);
      w[a] = hi - lo[a];
    }
    for (int a = R - 1; a >= 0; --a) {
      kc[a] = lo[a] + i % w[a];
      i /= w[a];
    }
    return tile_index(kc);
  }
  // Backward: the query tiles that may see key tile kt form a box.
  ATTNKIT_HD int64_t q_count(int64_t kt) const {
    int64_t tc[R], n = 1;
    tile_coords(kt, tc);
    for (int a = 0; a < R; ++a) {
      int64_t lo, hi;
      ax[a].query_tiles(tc[a], &lo, &hi);
      n *= hi - lo;
    }
    return n;
  }
  ATTNKIT_HD int64_t q_at(int64_t kt, int64_t i) const {
    int64_t tc[R], lo[R], w[R], qc[R];
    tile_coords(kt, tc);
    for (int a = 0; a < R; ++a) {
      int64_t hi;
      ax[a].query_tiles(tc[a], &lo[a], &hi);
      w[a] = hi - lo[a];
    }
    for (int a = R - 1; a >= 0; --a) {
      qc[a] = lo[a] + i % w[a];
      i /= w[a];
    }
    return tile_index(qc);
  }

  ATTNKIT_HD TileClass classify(int64_t qt, int64_t kt) const {
    int64_t qc[R], kc[R];
    tile_coords(qt, qc);
    tile_coords(kt, kc);
    bool full = true;
    for (int a = 0; a < R; ++a) {
      const NaAxis& x = ax[a];
      const int64_t qa = qc[a] * x.t, qb = imin(x.Lg, qa + x.t);
      const int64_t ka = kc[a] * x.t, kb = imin(x.Lg, ka + x.t);
      if (qa >= qb || ka >= kb) return TileClass::Skip;
      const int c = x.axis_class(qa, qb, ka, kb);
      if (c == 0) return TileClass::Skip;
      full = full && c == 1 && kb - ka == x.t;  // padding keys must be masked
    }
    return full ? TileClass::Full : TileClass::Partial;
  }

  // pattern[a][c]: the positions of a tile whose axis-a coordinate is c (filled by group()).
  uint64_t pattern[R][kTile];

  ATTNKIT_HD void init_patterns() {
    for (int a = 0; a < R; ++a)
      for (int64_t c = 0; c < kTile; ++c) pattern[a][c] = 0;
    for (int64_t j = 0; j < kTile; ++j)
      for (int a = 0; a < R; ++a) pattern[a][intra(a, j)] |= uint64_t(1) << j;
  }

  // All 64 row masks of the tile pair (qt, kt) at once, factorized per axis: a key position is
  // visible to a query when its coordinate on every axis is in that axis's window of the query's
  // coordinate, so each row mask is the AND of one mask per axis, built from the axis's window
  // bits and the position patterns.
  ATTNKIT_HD void tile_masks(int64_t qt, int64_t kt, uint64_t* out) const {
    int64_t qtc[R], ktc[R];
    tile_coords(qt, qtc);
    tile_coords(kt, ktc);
    uint64_t at[R][kTile];  // at[a][c]: visible positions for query axis-a coordinate c
    for (int a = 0; a < R; ++a) {
      const NaAxis& x = ax[a];
      for (int64_t c = 0; c < x.t; ++c) {
        const int64_t qc = qtc[a] * x.t + c;
        uint64_t bits = qc < x.Lg ? x.bits(qc, ktc[a]) : 0;
        uint64_t m = 0;
        while (bits) {
          m |= pattern[a][__builtin_ctzll(bits)];
          bits &= bits - 1;
        }
        at[a][c] = m;
      }
    }
    for (int64_t j = 0; j < kTile; ++j) {
      uint64_t m = ~uint64_t(0);
      for (int a = 0; a < R; ++a) m &= at[a][intra(a, j)];
      out[j] = m;
    }
  }

  ATTNKIT_HD uint64_t row_mask(int64_t qp, int64_t kt) const {
    int64_t qc[R], kc[R];
    if (!coords(qp, qc)) return 0;
    tile_coords(kt, kc);
    uint64_t b[R];
    for (int a = 0; a < R; ++a) {
      b[a] = ax[a].bits(qc[a], kc[a]);
      if (!b[a]) return 0;
    }
    if (R == 1) return b[0];
    uint64_t m = 0;
    if (R == 2) {
      for (int64_t x = 0; x < ax[0].t; ++x)
        if ((b[0] >> x) & 1u) m |= b[1] << (x * ax[1].t);
      return m;
    }
    for (int64_t x = 0; x < ax[0].t; ++x) {
      if (!((b[0] >> x) & 1u)) continue;
      for (int64_t y = 0; y < ax[1].t; ++y)
        if ((b[1] >> y) & 1u) m |= b[R - 1] << ((x * ax[1].t + y) * ax[R - 1].t);
    }
    return m;
  }
};

template <int R>
struct NeighborhoodMask {
  // Per-axis problem (group index 0 in each); group(g) fills in the group's own index and length.
  NaAxis base[R];

  // Validated by the caller: 1 < k, s <= k, k * d <= L, t >= 1, product of t = kTile.
  static NeighborhoodMask make(const int64_t* L, const int64_t* k, const int64_t* s,
                               const int64_t* d, const bool* causal, const int64_t* t) {
    NeighborhoodMask m;
    for (int a = 0; a < R; ++a) {
      NaAxis& x = m.base[a];
      x.L = L[a];
      x.d = d[a];
      x.k = k[a];
      x.s = s[a];
      x.causal = causal[a];
      x.left = k[a] / 2;
      x.t = t[a];
    }
    return m;
  }

  ATTNKIT_HD int64_t groups() const {
    int64_t n = 1;
    for (int a = 0; a < R; ++a) n *= base[a].d;
    return n;
  }
  ATTNKIT_HD NaGroup<R> group(int64_t g) const {
    NaGroup<R> out;
    for (int a = R - 1; a >= 0; --a) {
      NaAxis x = base[a];
      x.g = g % x.d;
      g /= x.d;
      x.Lg = ceil_div(x.L - x.g, x.d);
      x.nt = ceil_div(x.Lg, x.t);
      out.ax[a] = x;
    }
    int shift = 0;
    int64_t stride = 1;
    for (int a = R - 1; a >= 0; --a) {
      shift += __builtin_ctzll(uint64_t(out.ax[a].t));
      out.ax[a].shift = shift;
      out.ax[a].token_stride = stride;
      stride *= out.ax[a].L;
    }
    out.init_patterns();
    return out;
  }
  // The view kernels use for batch b, head h (the same for every b and h here).
  ATTNKIT_HD NaGroup<R> group(int64_t g, int64_t, int64_t) const { return group(g); }
  // Group 0 is the largest on every axis.
  ATTNKIT_HD int64_t max_q_tiles() const { return group(0).q_tiles(); }
  ATTNKIT_HD int64_t max_k_tiles() const { return max_q_tiles(); }
};

}  // namespace ATTNKIT_ISA_NS
}  // namespace attnkit
