// The mask policies on the host under AddressSanitizer and UBSan (test/compile-gate.test.ts builds
// this with -fsanitize=address,undefined -fno-sanitize-recover=all), at the CPU kernels' 64 x 64
// tiles and at 128 x 64 and 64 x 32, on a few shapes per policy with tails, windows, causality,
// strides, dilations and block sizes. Per group and tile pair it checks every method against
// allows() (and allows() of the neighborhood layout against the window of the tokens it maps to):
//   - the tile token maps agree with the per-position maps, and every real token appears once;
//   - tile_masks agrees with row_mask, row_mask bit j with allows(q, kt * KTile + j) for every real
//     query q (a padding query's row is 0), no bit past the key tile;
//   - classify: Skip has no visible element, Full has every key visible to every real query; for
//     the dense and neighborhood policies exactly (Full iff so and the key tile has no padding,
//     Skip iff nothing is visible); block-sparse Full comes from the plan (full blocks only);
//   - kv lists hold every key tile a query tile sees (ascending, in range, no repeats), q lists the
//     inverse; tight: the listed tiles span, axis by axis, exactly the box of the visible ones
//     (block-sparse: exactly the visible ones).
// Prints one line per policy and shape and exits 1 on the first disagreement.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <vector>

#include "attnkit/mask_block_sparse.h"
#include "attnkit/mask_dense.h"
#include "attnkit/mask_neighborhood.h"

using namespace attnkit;

namespace {

int64_t g_pairs = 0;

[[noreturn]] void fail(const char* what, const char* policy, int64_t qt, int64_t kt, int64_t extra) {
  std::fprintf(stderr, "FAIL %s: %s (query tile %lld, key tile %lld, %lld)\n", policy, what, (long long)qt,
               (long long)kt, (long long)extra);
  std::exit(1);
}
#define EXPECT(cond, what, extra) \
  do {                            \
    if (!(cond)) fail(what, policy, qt, kt, (extra)); \
  } while (0)

enum class Kind { Dense, BlockSparse, Neighborhood };

// Per-axis tile coordinates of key (query) tile t: the neighborhood's tile box, else the index.
template <typename Group>
std::vector<int64_t> tile_box(const Group&, int64_t t, bool) {
  return {t};
}
template <int R, int QTile, int KTile>
std::vector<int64_t> tile_box(const NaGroupT<R, QTile, KTile>& gp, int64_t t, bool key) {
  std::vector<int64_t> c(R);
  gp.tile_coords(t, c.data(), key);
  return c;
}

// Whether `listed` spans, axis by axis, exactly the box of `visible` (block-sparse: equals it).
template <typename Group>
bool tight(const Group& gp, Kind kind, const std::vector<int64_t>& listed, const std::vector<int64_t>& visible, bool key) {
  if (kind == Kind::BlockSparse) return listed == visible;
  if (visible.empty()) return true;
  std::vector<int64_t> lo, hi, vlo, vhi;
  auto span = [&](const std::vector<int64_t>& tiles, std::vector<int64_t>& a, std::vector<int64_t>& b) {
    for (int64_t t : tiles) {
      const std::vector<int64_t> c = tile_box(gp, t, key);
      if (a.empty()) a = b = c;
      for (size_t i = 0; i < c.size(); ++i) a[i] = imin(a[i], c[i]), b[i] = imax(b[i], c[i]);
    }
  };
  span(listed, lo, hi);
  span(visible, vlo, vhi);
  return lo == vlo && hi == vhi;
}

// The checks shared by every policy, on one group view of QTile x KTile tiles.
template <int QTile, int KTile, typename Group>
void check_group(const char* policy, const Group& gp, Kind kind) {
  const int64_t nqt = gp.q_tiles(), nkt = gp.k_tiles();
  int64_t qt = -1, kt = -1;
  std::vector<int64_t> tok(QTile > KTile ? QTile : KTile);
  std::set<int64_t> qtokens, ktokens;
  for (qt = 0; qt < nqt; ++qt) {
    gp.q_tile_tokens(qt, tok.data());
    for (int64_t j = 0; j < QTile; ++j) {
      EXPECT(tok[size_t(j)] == gp.q_token(qt * QTile + j), "q_tile_tokens != q_token", j);
      if (tok[size_t(j)] >= 0) EXPECT(qtokens.insert(tok[size_t(j)]).second, "a query token twice", tok[size_t(j)]);
    }
    EXPECT(gp.q_rows(qt) >= 1 && gp.q_rows(qt) <= QTile, "q_rows out of range", gp.q_rows(qt));
    for (int64_t j = gp.q_rows(qt); j < QTile; ++j) EXPECT(gp.q_token(qt * QTile + j) < 0, "a token past q_rows", j);
  }
  qt = -1;
  for (kt = 0; kt < nkt; ++kt) {
    gp.k_tile_tokens(kt, tok.data());
    for (int64_t j = 0; j < KTile; ++j) {
      EXPECT(tok[size_t(j)] == gp.k_token(kt * KTile + j), "k_tile_tokens != k_token", j);
      if (tok[size_t(j)] >= 0) EXPECT(ktokens.insert(tok[size_t(j)]).second, "a key token twice", tok[size_t(j)]);
    }
  }
  std::vector<uint64_t> masks(QTile);
  std::vector<std::vector<int64_t>> sees(static_cast<size_t>(nkt));  // key tile -> query tiles that see it
  for (qt = 0; qt < nqt; ++qt) {
    std::vector<int64_t> kv;
    for (int64_t i = 0, n = gp.kv_count(qt); i < n; ++i) kv.push_back(gp.kv_at(qt, i));
    for (size_t i = 1; i < kv.size(); ++i) EXPECT(kv[i - 1] < kv[i], "kv list not ascending", int64_t(i));
    for (int64_t k : kv) EXPECT(k >= 0 && k < nkt, "kv list entry out of range", k);
    std::vector<int64_t> visible;
    for (kt = 0; kt < nkt; ++kt) {
      ++g_pairs;
      gp.tile_masks(qt, kt, masks.data());
      bool any = false, all = true;
      for (int64_t r = 0; r < QTile; ++r) {
        const int64_t qp = qt * QTile + r;
        const uint64_t m = gp.row_mask(qp, kt);
        EXPECT(masks[size_t(r)] == m, "tile_masks != row_mask", r);
        if (KTile < 64) EXPECT((m >> KTile) == 0, "row mask bits past the key tile", r);
        if (gp.q_token(qp) < 0) {  // a padding row (allows() is not asked about it)
          EXPECT(m == 0, "a padding query row with visible keys", r);
          continue;
        }
        for (int64_t j = 0; j < KTile; ++j) {
          const int64_t kp = kt * KTile + j;
          const bool a = gp.allows(qp, kp);
          EXPECT(((m >> j) & 1u) == uint64_t(a), "row_mask != allows", r * 64 + j);
          if (a) EXPECT(gp.k_token(kp) >= 0, "a padding key allowed", r * 64 + j);
          any = any || a;
          all = all && a;
        }
      }
      const TileClass c = gp.classify(qt, kt);
      if (c == TileClass::Skip) EXPECT(!any, "Skip tile with a visible element", 0);
      if (c == TileClass::Full) EXPECT(all, "Full tile with a masked element", 0);
      if (kind != Kind::BlockSparse) {
        bool keys_real = true;
        for (int64_t j = 0; j < KTile; ++j) keys_real = keys_real && gp.k_token(kt * KTile + j) >= 0;
        const TileClass want = !any ? TileClass::Skip : all && keys_real ? TileClass::Full : TileClass::Partial;
        EXPECT(c == want, "classify is not exact", int64_t(c));
      }
      if (any) {
        visible.push_back(kt);
        bool listed = false;
        for (int64_t k : kv) listed = listed || k == kt;
        EXPECT(listed, "a visible key tile missing from the kv list", 0);
        sees[size_t(kt)].push_back(qt);
      }
    }
    kt = -1;
    EXPECT(tight(gp, kind, kv, visible, true), "the kv list is not the box of the visible key tiles", int64_t(kv.size()));
  }
  qt = -1;
  for (kt = 0; kt < nkt; ++kt) {
    std::vector<int64_t> ql;
    for (int64_t i = 0, n = gp.q_count(kt); i < n; ++i) ql.push_back(gp.q_at(kt, i));
    for (size_t i = 1; i < ql.size(); ++i) EXPECT(ql[i - 1] < ql[i], "q list not ascending", int64_t(i));
    for (int64_t q : ql) EXPECT(q >= 0 && q < nqt, "q list entry out of range", q);
    for (int64_t q : sees[size_t(kt)]) {
      bool listed = false;
      for (int64_t x : ql) listed = listed || x == q;
      EXPECT(listed, "a query tile that sees the key tile missing from its q list", q);
    }
    EXPECT(tight(gp, kind, ql, sees[size_t(kt)], false), "the q list is not the box of the query tiles that see it",
           int64_t(ql.size()));
  }
}

template <int QTile, int KTile>
void dense_shapes() {
  const int64_t sizes[] = {1, 37, 64, 65, 130, 201};
  const int64_t windows[][2] = {{-1, -1}, {0, 0}, {10, 3}, {70, -1}, {-1, 5}};
  int n = 0;
  for (int64_t nq : sizes)
    for (int64_t nk : sizes)
      for (bool causal : {false, true})
        for (const auto& w : windows) {
          const auto mask = DenseMaskT<QTile, KTile>::make(nq, nk, causal, w[0], w[1]);
          check_group<QTile, KTile>("dense", mask.group(0, 0, 0), Kind::Dense);
          ++n;
        }
  std::printf("dense %dx%d: %d problems\n", QTile, KTile, n);
}

// Neighborhood: besides the common checks, allows() must be the window test on the tokens the
// positions map to (the layout at this tile shape), and each group's tokens are the group's.
template <int R, int QTile, int KTile>
void neighborhood_case(const int64_t* L, const int64_t* k, const int64_t* s, const int64_t* d, const bool* causal,
                       const int64_t* tq, const int64_t* tk) {
  const char* policy = "neighborhood";
  const auto mask = NeighborhoodMaskT<R, QTile, KTile>::make(L, k, s, d, causal, tq, tk);
  int64_t tokens = 0, qt = -1, kt = -1;
  for (int64_t g = 0; g < mask.groups(); ++g) {
    const auto gp = mask.group(g, 0, 0);
    check_group<QTile, KTile>(policy, gp, Kind::Neighborhood);
    int64_t group_tokens = 1;
    for (int a = 0; a < R; ++a) group_tokens *= gp.ax[a].Lg;
    tokens += group_tokens;
    // coordinates of a token: per axis x = g_a + d_a * i
    auto axis_index = [&](int64_t token, int a, int64_t* i) {
      int64_t stride = 1;
      for (int b = R - 1; b > a; --b) stride *= L[b];
      const int64_t x = (token / stride) % L[a];
      *i = x / d[a];
      return x % d[a] == gp.ax[a].g;
    };
    for (qt = 0; qt < gp.q_tiles(); ++qt)
      for (int64_t r = 0; r < QTile; ++r) {
        const int64_t qp = qt * QTile + r, qtok = gp.q_token(qp);
        if (qtok < 0) continue;
        for (kt = 0; kt < gp.k_tiles(); ++kt)
          for (int64_t j = 0; j < KTile; ++j) {
            const int64_t kp = kt * KTile + j, ktok = gp.k_token(kp);
            if (ktok < 0) continue;
            bool want = true;
            for (int a = 0; a < R; ++a) {
              int64_t qi, ki;
              EXPECT(axis_index(qtok, a, &qi) && axis_index(ktok, a, &ki), "a token outside its group", a);
              want = want && ki >= gp.ax[a].start(qi) && ki < gp.ax[a].end(qi);
            }
            EXPECT(gp.allows(qp, kp) == want, "allows != the window on the tokens", r * 64 + j);
          }
      }
  }
  int64_t all = 1;
  for (int a = 0; a < R; ++a) all *= L[a];
  EXPECT(tokens == all, "the groups do not cover the tokens", tokens);
}

template <int QTile, int KTile>
void neighborhood_shapes(const int64_t* tq1, const int64_t* tk1, const int64_t* tq2, const int64_t* tk2,
                         const int64_t* tq3, const int64_t* tk3) {
  int n = 0;
  {
    // kernel 200: windows wider than a 128-query tile plus a key tile, so that Full tiles occur
    const int64_t L[] = {300}, ks[] = {7, 12, 200}, ss[] = {1, 3}, ds[] = {1, 2};
    for (int64_t k : ks)
      for (int64_t s : ss)
        for (int64_t d : ds)
          for (bool c : {false, true}) {
            const int64_t K[] = {k * d <= L[0] ? k : L[0] / d}, S[] = {s}, D[] = {d};
            const bool C[] = {c};
            neighborhood_case<1, QTile, KTile>(L, K, S, D, C, tq1, tk1);
            ++n;
          }
  }
  {
    const int64_t L[] = {21, 26}, K[] = {5, 3}, S[] = {1, 2}, D[] = {2, 1};
    for (bool c0 : {false, true}) {
      const bool C[] = {c0, false};
      neighborhood_case<2, QTile, KTile>(L, K, S, D, C, tq2, tk2);
      ++n;
    }
    const int64_t L2[] = {40, 30}, K2[] = {31, 25}, S2[] = {1, 1}, D2[] = {1, 1};  // Full tiles too
    const bool C2[] = {false, false};
    neighborhood_case<2, QTile, KTile>(L2, K2, S2, D2, C2, tq2, tk2);
    ++n;
  }
  {
    const int64_t L[] = {6, 7, 11}, K[] = {3, 3, 5}, S[] = {1, 1, 2}, D[] = {1, 2, 1};
    const bool C[] = {true, false, false};
    neighborhood_case<3, QTile, KTile>(L, K, S, D, C, tq3, tk3);
    ++n;
  }
  std::printf("neighborhood %dx%d: %d problems\n", QTile, KTile, n);
}

// Block-sparse: a random BlockMask and a plan built here for QTile x KTile tiles by brute force
// from allows() (the CPU builds its own for 64 x 64; the policy only reads the plan).
template <int QTile, int KTile>
void block_sparse_case(int64_t nq, int64_t nk, int64_t bq, int64_t bk, int64_t B, uint32_t seed) {
  std::mt19937 rng(seed);
  BlockMaskView v;
  v.B = B;
  v.H = 1;
  v.nq = nq;
  v.nk = nk;
  v.bq = bq;
  v.bk = bk;
  v.qb = ceil_div(nq, bq);
  v.kb = ceil_div(nk, bk);
  std::vector<int32_t> full_off{0}, full_idx, part_off{0}, part_idx;
  std::vector<uint32_t> bits;
  for (int64_t r = 0; r < B * v.qb; ++r) {
    for (int64_t kb = 0; kb < v.kb; ++kb) {
      const uint32_t x = rng() % 4;  // absent, full, partial, partial
      if (x == 1) full_idx.push_back(int32_t(kb));
      if (x >= 2) {
        part_idx.push_back(int32_t(kb));
        for (int64_t w = 0; w < bq * v.words(); ++w) bits.push_back(x == 2 ? uint32_t(rng()) : ~0u);
      }
    }
    full_off.push_back(int32_t(full_idx.size()));
    part_off.push_back(int32_t(part_idx.size()));
  }
  v.full_off = full_off.data();
  v.full_idx = full_idx.data();
  v.part_off = part_off.data();
  v.part_idx = part_idx.data();
  v.part_bits = bits.data();
  // the plan, from the group's allows()
  const int64_t nqt = ceil_div(nq, QTile), nkt = ceil_div(nk, KTile);
  std::vector<int32_t> kv_off{0}, kv_tile, q_off(size_t(B * nkt + 1), 0), q_tile;
  std::vector<uint8_t> kv_cls;
  BlockSparseGroupT<QTile, KTile> probe;
  probe.m = &v;
  std::vector<std::vector<int32_t>> transposed(size_t(B * nkt));
  for (int64_t bh = 0; bh < B; ++bh) {
    probe.bh = bh;
    for (int64_t qt = 0; qt < nqt; ++qt) {
      for (int64_t kt = 0; kt < nkt; ++kt) {
        bool any = false, all = true;
        for (int64_t q = qt * QTile; q < imin(nq, (qt + 1) * QTile); ++q)
          for (int64_t k = kt * KTile; k < (kt + 1) * KTile; ++k) {
            const bool a = probe.allows(q, k);
            any = any || a;
            all = all && a;
          }
        if (!any) continue;
        kv_tile.push_back(int32_t(kt));
        kv_cls.push_back(uint8_t(all ? TileClass::Full : TileClass::Partial));
        transposed[size_t(bh * nkt + kt)].push_back(int32_t(qt));
      }
      kv_off.push_back(int32_t(kv_tile.size()));
    }
  }
  for (size_t i = 0; i < transposed.size(); ++i) {
    q_tile.insert(q_tile.end(), transposed[i].begin(), transposed[i].end());
    q_off[i + 1] = int32_t(q_tile.size());
  }
  BlockSparseMaskT<QTile, KTile> mask;
  mask.view = v;
  mask.plan.nqt = nqt;
  mask.plan.nkt = nkt;
  mask.plan.kv_off = kv_off.data();
  mask.plan.kv_tile = kv_tile.data();
  mask.plan.kv_cls = kv_cls.data();
  mask.plan.q_off = q_off.data();
  mask.plan.q_tile = q_tile.data();
  mask.B = B;
  for (int64_t b = 0; b < B; ++b) check_group<QTile, KTile>("block-sparse", mask.group(0, b, 0), Kind::BlockSparse);
}

template <int QTile, int KTile>
void block_sparse_shapes() {
  const int64_t blocks[][2] = {{16, 16}, {32, 128}, {128, 16}, {64, 64}};
  int n = 0;
  for (const auto& b : blocks) {
    block_sparse_case<QTile, KTile>(150, 170, b[0], b[1], 2, uint32_t(n + 1));
    block_sparse_case<QTile, KTile>(64, 33, b[0], b[1], 1, uint32_t(n + 100));
    n += 2;
  }
  std::printf("block-sparse %dx%d: %d problems\n", QTile, KTile, n);
}

}  // namespace

int main() {
  dense_shapes<64, 64>();
  dense_shapes<128, 64>();
  dense_shapes<64, 32>();
  block_sparse_shapes<64, 64>();
  block_sparse_shapes<128, 64>();
  block_sparse_shapes<64, 32>();
  {
    const int64_t q1[] = {64}, q2[] = {8, 8}, q3[] = {4, 4, 4};
    neighborhood_shapes<64, 64>(q1, q1, q2, q2, q3, q3);
  }
  // query and key tiles that differ on the first axis, then on the last (where the positions of the
  // earlier axes' coordinates differ between query and key tiles)
  {
    const int64_t q1[] = {128}, k1[] = {64}, q2[] = {16, 8}, k2[] = {8, 8}, q3[] = {8, 4, 4}, k3[] = {4, 4, 4};
    neighborhood_shapes<128, 64>(q1, k1, q2, k2, q3, k3);
    const int64_t q2b[] = {8, 16}, q3b[] = {4, 4, 8};
    neighborhood_shapes<128, 64>(q1, k1, q2b, k2, q3b, k3);
  }
  {
    const int64_t q1[] = {64}, k1[] = {32}, q2[] = {8, 8}, k2[] = {4, 8}, q3[] = {4, 4, 4}, k3[] = {2, 4, 4};
    neighborhood_shapes<64, 32>(q1, k1, q2, k2, q3, k3);
    const int64_t k2b[] = {8, 4}, k3b[] = {4, 4, 2};
    neighborhood_shapes<64, 32>(q1, k1, q2, k2b, q3, k3b);
  }
  std::printf("policies: %lld tile pairs checked\n", (long long)g_pairs);
  return 0;
}
