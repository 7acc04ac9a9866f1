// Every block-sparse CUDA kernel instantiation of this build (the fmha kernels with the block-sparse
// policy, generated/dispatch.h) and the plan kernel, under the SIMT emulator on small problems,
// against a float64 reference written from the BlockMask semantics (a decoded dense visibility, not
// the policy): causal, sliding window, packed documents, a 2-D neighborhood pattern and random masks
// (with listed partial blocks that hide everything), every block geometry 16..128 per axis, rows
// with no listed block (out 0, LSE -inf, zero gradients), Nq != Nk, tails, and masks shared over
// batch or heads. The device plan is compared entry by entry with the host plan of
// native/cpu/block_sparse.cc's rule (brute force here). One case per table entry
// (`blockSparse_<dir>_<dtype>_d<D>`), plus the plan over every geometry, attention over every
// geometry, the dispatch errors and bitwise determinism. Outputs start as NaN, the plan buffer as
// garbage. Driven by test/cuda-kernels.test.ts (every thread order, ASan); also a GPU program under
// nvcc (scripts/gpu-check-kernels.sh).
//
// Accuracy criterion (FlashAttention 2's, as the fmha family's): per tensor, the kernel's max error
// against float64 is at most 2x (3x for gradients) that of a naive low-precision implementation, plus
// 1e-5 max(|ref|, 1).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../../fmha/tests/checks.h"
#include "../dispatch.h"

namespace {

using namespace attnkit;
using namespace attnkit::cuda;
using namespace attnkit::cuda::block_sparse;
using namespace attn_check;

uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

// ---- masks

enum class Pattern { Causal, Window, Documents, Neighborhood, Random };

struct Problem {
  int64_t B = 1, Nq = 1, Nk = 1, H = 1, Hkv = 1, D = 32;
  int64_t mB = 1, mH = 1, bq = 64, bk = 64;  // the mask's extents and block sizes
  Pattern pattern = Pattern::Causal;
  int64_t left = -1, right = -1;  // Window
  bool dlse = false;
  const char* what = "";
  double scale() const { return 1.0 / std::sqrt(static_cast<double>(D)); }
};

// The pattern's visibility (what the mask is built from): query q, key k of mask row bh.
bool pattern_sees(const Problem& p, int64_t bh, int64_t q, int64_t k) {
  const int64_t a = q + p.Nk - p.Nq;  // bottom-right alignment
  switch (p.pattern) {
    case Pattern::Causal:
      return k <= a;
    case Pattern::Window:
      return k >= a - p.left && k <= a + p.right;
    case Pattern::Documents: {  // packed lengths 37, 1, 0, 60, rest; causal inside a document
      const auto doc = [](int64_t t) { return t < 37 ? 0 : t < 38 ? 1 : t < 98 ? 3 : 4; };
      return doc(q) == doc(a) && doc(k) == doc(a) && k <= a;
    }
    case Pattern::Neighborhood: {  // a 2-D grid of 14 columns, 3 x 5 windows (NATTEN's clamped start)
      const int64_t cols = 14, rows = ceil_div(p.Nk, cols);
      const auto start = [](int64_t i, int64_t size, int64_t kern) { return imax(0, imin(i - kern / 2, size - kern)); };
      const int64_t qi = a / cols, qj = a % cols, ki = k / cols, kj = k % cols;
      const int64_t ri = start(qi, rows, 3), rj = start(qj, cols, 5);
      return ki >= ri && ki < ri + 3 && kj >= rj && kj < rj + 5;
    }
    case Pattern::Random: {  // per block: absent, full or random elements (bh-dependent)
      const uint32_t blk = mix((uint64_t(bh) << 40) ^ (uint64_t(q / p.bq) << 20) ^ uint64_t(k / p.bk)) % 4;
      return blk == 1 || (blk == 2 && (mix((uint64_t(bh) << 42) ^ (uint64_t(q) << 21) ^ uint64_t(k)) & 1));
    }
  }
  return false;
}

// A listed partial block that hides every element (random masks only): the kernels must visit it
// and see nothing.
bool empty_partial(const Problem& p, int64_t bh, int64_t qb, int64_t kb) {
  return p.pattern == Pattern::Random && mix((uint64_t(bh) << 30) ^ (uint64_t(qb) << 15) ^ uint64_t(kb) ^ 77) % 5 == 0;
}

// A BlockMask in its list form, built from the pattern as the TypeScript builders do: a block whose
// in-range elements are all visible is full, one with some is partial (bitmap), one with none absent.
struct HostMask {
  Problem p;
  int64_t qb = 0, kb = 0, words = 0;
  std::vector<int32_t> fo{0}, fi, po{0}, pi;
  std::vector<uint32_t> bits;
  std::vector<uint8_t> dense;  // [mB * mH][Nq][Nk], decoded from the lists
  simt_test::Buffer<int32_t> d_fo, d_fi, d_po, d_pi;
  simt_test::Buffer<uint32_t> d_bits;
  BlockMaskView view;

  bool sees(int64_t b, int64_t h, int64_t q, int64_t k) const {
    const int64_t bh = (b % p.mB) * p.mH + (h % p.mH);
    return dense[static_cast<size_t>((bh * p.Nq + q) * p.Nk + k)] != 0;
  }
};

void build_mask(HostMask& m, const Problem& p) {
  m.p = p;
  m.qb = ceil_div(p.Nq, p.bq);
  m.kb = ceil_div(p.Nk, p.bk);
  m.words = ceil_div(p.bk, 32);
  for (int64_t bh = 0; bh < p.mB * p.mH; ++bh)
    for (int64_t qb = 0; qb < m.qb; ++qb) {
      for (int64_t kb = 0; kb < m.kb; ++kb) {
        std::vector<uint32_t> blk(static_cast<size_t>(p.bq * m.words), 0);
        int64_t seen = 0, total = 0;
        for (int64_t r = 0; r < p.bq && qb * p.bq + r < p.Nq; ++r)
          for (int64_t j = 0; j < p.bk && kb * p.bk + j < p.Nk; ++j) {
            ++total;
            if (!pattern_sees(p, bh, qb * p.bq + r, kb * p.bk + j)) continue;
            ++seen;
            blk[static_cast<size_t>(r * m.words + j / 32)] |= 1u << (j % 32);
          }
        if (seen == total && total > 0) {
          m.fi.push_back(static_cast<int32_t>(kb));
        } else if (seen > 0 || empty_partial(p, bh, qb, kb)) {
          m.pi.push_back(static_cast<int32_t>(kb));
          m.bits.insert(m.bits.end(), blk.begin(), blk.end());
        }
      }
      m.fo.push_back(static_cast<int32_t>(m.fi.size()));
      m.po.push_back(static_cast<int32_t>(m.pi.size()));
    }
  // The semantics of the list form, decoded (and checked against the pattern it came from).
  m.dense.assign(static_cast<size_t>(p.mB * p.mH * p.Nq * p.Nk), 0);
  for (int64_t bh = 0; bh < p.mB * p.mH; ++bh)
    for (int64_t qb = 0; qb < m.qb; ++qb) {
      const int64_t r = bh * m.qb + qb;
      for (int64_t q = qb * p.bq; q < imin(p.Nq, (qb + 1) * p.bq); ++q) {
        uint8_t* row = &m.dense[static_cast<size_t>((bh * p.Nq + q) * p.Nk)];
        for (int32_t i = m.fo[r]; i < m.fo[r + 1]; ++i)
          for (int64_t k = m.fi[i] * p.bk; k < imin(p.Nk, (m.fi[i] + 1) * p.bk); ++k) row[k] = 1;
        for (int32_t i = m.po[r]; i < m.po[r + 1]; ++i)
          for (int64_t j = 0; j < p.bk && m.pi[i] * p.bk + j < p.Nk; ++j)
            if ((m.bits[static_cast<size_t>((i * p.bq + (q - qb * p.bq)) * m.words + j / 32)] >> (j % 32)) & 1)
              row[m.pi[i] * p.bk + j] = 1;
        for (int64_t k = 0; k < p.Nk; ++k) CHECK_MSG(row[k] == pattern_sees(p, bh, q, k), "mask builder and decoder disagree");
      }
    }
  // Device copies (never empty: a kernel may be handed the pointer of an empty list).
  const auto up = [](auto& dst, const auto& src) {
    dst.resize(src.size() + 1);
    for (size_t i = 0; i < src.size(); ++i) dst[i] = src[i];
  };
  up(m.d_fo, m.fo);
  up(m.d_fi, m.fi);
  up(m.d_po, m.po);
  up(m.d_pi, m.pi);
  up(m.d_bits, m.bits);
  BlockMaskView& v = m.view;
  v.B = p.mB;
  v.H = p.mH;
  v.nq = p.Nq;
  v.nk = p.Nk;
  v.bq = p.bq;
  v.bk = p.bk;
  v.qb = m.qb;
  v.kb = m.kb;
  v.full_off = m.d_fo.data();
  v.full_idx = m.d_fi.data();
  v.part_off = m.d_po.data();
  v.part_idx = m.d_pi.data();
  v.part_bits = m.d_bits.data();
}

// ---- the plan

// The device plan of a mask, built by the plan kernel into a buffer of garbage.
struct Plan {
  simt_test::Buffer<int32_t> buf;
  DevicePlan dp;
};

void make_plan(Plan& pl, const HostMask& m) {
  const int64_t listed = static_cast<int64_t>(m.fi.size() + m.pi.size());
  const PlanLayout l = plan_layout(m.view, listed);
  pl.buf.assign(static_cast<size_t>(l.ints), static_cast<int32_t>(0x5a5a5a5a));
  pl.dp = {pl.buf.data(), l.ints, true, static_cast<int64_t>(m.fi.size()), static_cast<int64_t>(m.pi.size())};
}

// The host plan by the CPU's rule (native/cpu/block_sparse.cc), brute force: a tile pair is listed
// when a listed block overlaps it, Full when the key tile has no padding and every overlapping
// (query block, key block) pair is a full block; lists ascending; the transposed lists ascending.
void check_plan(const HostMask& m, const Plan& pl, const std::string& where) {
  const Problem& p = m.p;
  const int64_t T = kPlanTile, nqt = ceil_div(p.Nq, T), nkt = ceil_div(p.Nk, T), rows = p.mB * p.mH;
  const PlanLayout l = plan_layout(m.view, static_cast<int64_t>(m.fi.size() + m.pi.size()));
  const BlockSparsePlan got = plan_view(l, pl.buf.data());
  CHECK(got.nqt == nqt && got.nkt == nkt);
  const auto status = [&](int64_t bh, int64_t qb, int64_t kb) {
    const int64_t r = bh * m.qb + qb;
    for (int32_t i = m.fo[r]; i < m.fo[r + 1]; ++i)
      if (m.fi[i] == kb) return 1;
    for (int32_t i = m.po[r]; i < m.po[r + 1]; ++i)
      if (m.pi[i] == kb) return 2;
    return 0;
  };
  std::vector<std::vector<int32_t>> inv(static_cast<size_t>(rows * nkt));
  int64_t e = 0;
  const std::string at = where + ": plan ";
  for (int64_t bh = 0; bh < rows; ++bh)
    for (int64_t qt = 0; qt < nqt; ++qt) {
      const int64_t r = bh * nqt + qt;
      CHECK_MSG(got.kv_off[r] == e, at + "kv_off differs at row " + std::to_string(r));
      const int64_t q0 = qt * T, q1 = imin(p.Nq, q0 + T);
      for (int64_t kt = 0; kt < nkt; ++kt) {
        const int64_t k0 = kt * T, k1 = imin(p.Nk, k0 + T);
        bool listed = false, full = k1 - k0 == T;
        for (int64_t qb = q0 / p.bq; qb <= (q1 - 1) / p.bq; ++qb)
          for (int64_t kb = k0 / p.bk; kb <= (k1 - 1) / p.bk; ++kb) {
            const int s = status(bh, qb, kb);
            listed = listed || s != 0;
            full = full && s == 1;
          }
        if (!listed) continue;
        CHECK_MSG(e < got.kv_off[r + 1] && got.kv_tile[e] == kt,
                  at + "kv_tile differs at row " + std::to_string(r) + ", key tile " + std::to_string(kt));
        CHECK_MSG(got.kv_cls[e] == uint8_t(full ? TileClass::Full : TileClass::Partial),
                  at + "class differs at row " + std::to_string(r) + ", key tile " + std::to_string(kt));
        inv[static_cast<size_t>(bh * nkt + kt)].push_back(static_cast<int32_t>(qt));
        ++e;
      }
      CHECK_MSG(got.kv_off[r + 1] == e, at + "row " + std::to_string(r) + " lists more key tiles than it has");
    }
  e = 0;
  for (int64_t r = 0; r < rows * nkt; ++r) {
    CHECK_MSG(got.q_off[r] == e, at + "q_off differs at row " + std::to_string(r));
    for (int32_t qt : inv[static_cast<size_t>(r)])
      CHECK_MSG(got.q_tile[e++] == qt, at + "q_tile differs at key row " + std::to_string(r));
  }
  CHECK_MSG(got.q_off[rows * nkt] == e, at + "the transposed lists' total differs");
  // The kernels' device group (policy.h) answers as the base policy on this mask and plan.
  BlockSparseDeviceMask dm;
  dm.view = m.view;
  dm.plan = got;
  for (int64_t bh = 0; bh < rows; ++bh) {
    const BlockSparseDeviceGroup dg = dm.group(0, bh / p.mH, bh % p.mH);
    BlockSparseGroupT<64, 64> base;
    base.m = &dm.view;
    base.plan = &dm.plan;
    base.bh = bh;
    for (int64_t kt = 0; kt < nkt; ++kt) {
      CHECK_MSG(dg.q_count(kt) == base.q_count(kt), at + "device group: q_count differs");
      for (int64_t i = 0; i < dg.q_count(kt); ++i) CHECK_MSG(dg.q_at(kt, i) == base.q_at(kt, i), at + "device group: q_at differs");
    }
    for (int64_t qt = 0; qt < nqt; ++qt) {
      CHECK_MSG(dg.kv_count(qt) == base.kv_count(qt), at + "device group: kv_count differs");
      for (int64_t i = 0; i < dg.kv_count(qt); ++i) CHECK_MSG(dg.kv_at(qt, i) == base.kv_at(qt, i), at + "device group: kv_at differs");
      for (int64_t kt = 0; kt < nkt; ++kt) CHECK_MSG(dg.classify(qt, kt) == base.classify(qt, kt), at + "device group: classify differs");
    }
    for (int64_t q = 0; q < p.Nq; ++q)
      for (int64_t kt = 0; kt < nkt; ++kt)
        CHECK_MSG(dg.row_mask(q, kt) == base.row_mask(q, kt),
                  at + "device group: row_mask differs at query " + std::to_string(q) + ", key tile " + std::to_string(kt));
  }
}

// ---- the reference (float64, from the decoded visibility) and the comparison

int64_t at(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t D) { return ((b * N + n) * heads + h) * D; }

// Per (b, h, query): the scores of the visible keys, the float64 LSE (-inf when none), and what the
// naive float32 LSE would be.
struct RowRef {
  std::vector<int64_t> keys;
  std::vector<double> s;
  double lse = -INFINITY;
  double naive_lse = -INFINITY;
};

RowRef row_ref(const HostMask& m, const std::vector<double>& qd, const std::vector<double>& kd, int64_t b, int64_t h,
               int64_t i) {
  const Problem& p = m.p;
  const int64_t hk = h / (p.H / p.Hkv);
  RowRef r;
  double mx = -INFINITY;
  float fmx = -INFINITY;
  std::vector<float> sf;
  for (int64_t j = 0; j < p.Nk; ++j) {
    if (!m.sees(b, h, i, j)) continue;
    double dot = 0;
    float fdot = 0.f;
    for (int64_t d = 0; d < p.D; ++d) {
      dot += qd[at(b, i, h, p.Nq, p.H, p.D) + d] * kd[at(b, j, hk, p.Nk, p.Hkv, p.D) + d];
      fdot += static_cast<float>(qd[at(b, i, h, p.Nq, p.H, p.D) + d]) * static_cast<float>(kd[at(b, j, hk, p.Nk, p.Hkv, p.D) + d]);
    }
    r.keys.push_back(j);
    r.s.push_back(p.scale() * dot);
    sf.push_back(fdot * static_cast<float>(p.scale()));
    mx = std::max(mx, r.s.back());
    fmx = std::max(fmx, sf.back());
  }
  if (r.keys.empty()) return r;
  double sum = 0;
  float fsum = 0.f;
  for (double x : r.s) sum += std::exp(x - mx);
  for (float x : sf) fsum += std::exp(x - fmx);
  r.lse = mx + std::log(sum);
  r.naive_lse = fmx + std::log(fsum);
  return r;
}

// ---- forward

template <typename T>
void fwd_problem(const FwdEntry& e, Problem p, unsigned seed) {
  p.D = e.head_dim;
  HostMask m;
  build_mask(m, p);
  std::mt19937 rng(seed);
  simt_test::Buffer<T> q, k, v;
  std::vector<double> qd, kd, vd;
  fill(q, qd, static_cast<size_t>(p.B * p.Nq * p.H * p.D), 2.0, rng);
  fill(k, kd, static_cast<size_t>(p.B * p.Nk * p.Hkv * p.D), 2.0, rng);
  fill(v, vd, static_cast<size_t>(p.B * p.Nk * p.Hkv * p.D), 1.0, rng);
  simt_test::Buffer<T> out(static_cast<size_t>(p.B * p.Nq * p.H * p.D), from_f<T>(NAN));
  simt_test::Buffer<float> lse(static_cast<size_t>(p.B * p.Nq * p.H), NAN);
  const std::vector<double> kd0 = kd, vd0 = vd;

  AttentionFwdParams fp;
  fp.shape = {p.B, p.Nq, p.Nk, p.H, p.Hkv, p.D, p.D};
  fp.dtype = e.dtype;
  fp.q = q.data();
  fp.k = k.data();
  fp.v = v.data();
  fp.out = out.data();
  fp.lse = lse.data();
  fp.scale = static_cast<float>(p.scale());
  CHECK(&select_fwd(fp) == &e);
  Plan pl;
  make_plan(pl, m);
  const BlockSparseDeviceMask mask = mask_of(m.view, pl.dp, p.B, p.H, kFwdOp, nullptr);
  e.run(fmha::fwd_args(fp), mask, nullptr);
  simt_test::sync();
  const std::string where = std::string(e.name) + ", " + p.what;
  check_plan(m, pl, where);

  Err eo, no, el, nl;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t i = 0; i < p.Nq; ++i)
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t li = (b * p.Nq + i) * p.H + h, oi = li * p.D, hk = h / (p.H / p.Hkv);
        const RowRef r = row_ref(m, qd, kd, b, h, i);
        if (r.keys.empty()) {
          CHECK_MSG(lse[li] == -INFINITY, where + ": a row that sees no key must have LSE -inf");
          for (int64_t d = 0; d < p.D; ++d) CHECK_MSG(to_f(out[oi + d]) == 0.f, where + ": a row that sees no key must output 0");
          continue;
        }
        el.add(lse[li], r.lse);
        nl.add(r.naive_lse, r.lse);
        std::vector<double> ref(static_cast<size_t>(p.D), 0.0), naive(static_cast<size_t>(p.D), 0.0);
        for (size_t n = 0; n < r.keys.size(); ++n) {
          const double w = std::exp(r.s[n] - r.lse), wt = round_t<T>(w);
          const double* vj = &vd[at(b, r.keys[n], hk, p.Nk, p.Hkv, p.D)];
          for (int64_t d = 0; d < p.D; ++d) {
            ref[d] += w * vj[d];
            naive[d] += wt * vj[d];
          }
        }
        for (int64_t d = 0; d < p.D; ++d) {
          eo.add(to_f(out[oi + d]), ref[d]);
          no.add(round_t<T>(naive[d]), ref[d]);
        }
      }
  judge("out", where, eo, no, 2.0);
  judge("lse", where, el, nl, 2.0);
  for (size_t i = 0; i < k.size(); ++i) CHECK_MSG(to_f(k[i]) == kd0[i] && to_f(v[i]) == vd0[i], where + ": an input was written");
}

// ---- backward

template <typename T>
struct Grads {
  simt_test::Buffer<T> dq, dk, dv;
};

template <typename T>
void bwd_problem(const BwdEntry& e, Problem p, unsigned seed, bool twice = false) {
  p.D = e.head_dim;
  HostMask m;
  build_mask(m, p);
  std::mt19937 rng(seed);
  simt_test::Buffer<T> q, k, v, dout;
  std::vector<double> qd, kd, vd, dod;
  fill(q, qd, static_cast<size_t>(p.B * p.Nq * p.H * p.D), 2.0, rng);
  fill(k, kd, static_cast<size_t>(p.B * p.Nk * p.Hkv * p.D), 2.0, rng);
  fill(v, vd, static_cast<size_t>(p.B * p.Nk * p.Hkv * p.D), 1.0, rng);
  fill(dout, dod, static_cast<size_t>(p.B * p.Nq * p.H * p.D), 1.0, rng);
  simt_test::Buffer<float> dlse;
  std::vector<double> dlsed;
  if (p.dlse) {
    std::uniform_real_distribution<double> u(-0.5, 0.5);
    dlse.resize(static_cast<size_t>(p.B * p.Nq * p.H));
    for (float& x : dlse) x = static_cast<float>(u(rng));
    dlsed.assign(dlse.begin(), dlse.end());
  }
  // The forward's outputs as a caller holds them: out rounded to T, LSE in float32.
  std::vector<RowRef> rows(static_cast<size_t>(p.B * p.Nq * p.H));
  std::vector<double> ref_out(static_cast<size_t>(p.B * p.Nq * p.H * p.D), 0.0);
  simt_test::Buffer<T> out(ref_out.size());
  simt_test::Buffer<float> lse(rows.size());
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t i = 0; i < p.Nq; ++i)
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t li = (b * p.Nq + i) * p.H + h, hk = h / (p.H / p.Hkv);
        RowRef& r = rows[static_cast<size_t>(li)] = row_ref(m, qd, kd, b, h, i);
        for (size_t n = 0; n < r.keys.size(); ++n)
          for (int64_t d = 0; d < p.D; ++d)
            ref_out[li * p.D + d] += std::exp(r.s[n] - r.lse) * vd[at(b, r.keys[n], hk, p.Nk, p.Hkv, p.D) + d];
        lse[li] = static_cast<float>(r.lse);
      }
  for (size_t i = 0; i < out.size(); ++i) out[i] = from_f<T>(static_cast<float>(ref_out[i]));

  AttentionBwdParams bp;
  bp.shape = {p.B, p.Nq, p.Nk, p.H, p.Hkv, p.D, p.D};
  bp.dtype = e.dtype;
  bp.q = q.data();
  bp.k = k.data();
  bp.v = v.data();
  bp.out = out.data();
  bp.lse = lse.data();
  bp.dout = dout.data();
  bp.dlse = p.dlse ? dlse.data() : nullptr;
  bp.scale = static_cast<float>(p.scale());
  const std::string where = std::string(e.name) + ", " + p.what;
  Grads<T> run[2];
  Plan pl;
  make_plan(pl, m);
  for (int n = 0; n < (twice ? 2 : 1); ++n) {
    run[n].dq.assign(q.size(), from_f<T>(NAN));
    run[n].dk.assign(k.size(), from_f<T>(NAN));
    run[n].dv.assign(v.size(), from_f<T>(NAN));
    bp.dq = run[n].dq.data();
    bp.dk = run[n].dk.data();
    bp.dv = run[n].dv.data();
    CHECK(&select_bwd(bp) == &e);
    pl.dp.build = n == 0;  // the second run reads the cached plan
    simt_test::Buffer<float> ws(static_cast<size_t>(fmha::bwd_workspace_floats(p.B, p.H, p.Nq)), NAN);
    const BlockSparseDeviceMask mask = mask_of(m.view, pl.dp, p.B, p.H, kBwdOp, nullptr);
    fmha::run_bwd(e, fmha::bwd_args(bp, ws.data()), mask, nullptr);
    simt_test::sync();
  }
  check_plan(m, pl, where);
  if (twice)
    CHECK_MSG(std::memcmp(run[0].dq.data(), run[1].dq.data(), run[0].dq.size() * sizeof(T)) == 0 &&
                  std::memcmp(run[0].dk.data(), run[1].dk.data(), run[0].dk.size() * sizeof(T)) == 0 &&
                  std::memcmp(run[0].dv.data(), run[1].dv.data(), run[0].dv.size() * sizeof(T)) == 0,
              where + ": two backward runs differ");

  // float64 gradients and the naive low-precision ones (P and dS rounded to T before their products).
  std::vector<double> gq(q.size(), 0.0), gk(k.size(), 0.0), gv(v.size(), 0.0);
  std::vector<double> nq(q.size(), 0.0), nk(k.size(), 0.0), nv(v.size(), 0.0);
  std::vector<uint8_t> key_seen(k.size() / static_cast<size_t>(p.D), 0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < p.Nq; ++i) {
        const int64_t li = (b * p.Nq + i) * p.H + h, oi = li * p.D, hk = h / (p.H / p.Hkv);
        const RowRef& r = rows[static_cast<size_t>(li)];
        if (r.keys.empty()) continue;
        double delta = 0, ndelta = 0;
        for (int64_t d = 0; d < p.D; ++d) {
          delta += dod[oi + d] * ref_out[oi + d];
          ndelta += dod[oi + d] * to_f(out[oi + d]);
        }
        if (p.dlse) {
          delta -= dlsed[li];
          ndelta -= dlsed[li];
        }
        for (size_t n = 0; n < r.keys.size(); ++n) {
          const int64_t kj = at(b, r.keys[n], hk, p.Nk, p.Hkv, p.D);
          key_seen[static_cast<size_t>(kj / p.D)] = 1;
          double dp = 0;
          for (int64_t d = 0; d < p.D; ++d) dp += dod[oi + d] * vd[kj + d];
          const double P = std::exp(r.s[n] - r.lse), dS = P * (dp - delta);
          const double Pn = std::exp(static_cast<double>(static_cast<float>(r.s[n] - lse[li])));
          const double Pt = round_t<T>(Pn), dSt = round_t<T>(Pn * (dp - ndelta));
          for (int64_t d = 0; d < p.D; ++d) {
            gv[kj + d] += P * dod[oi + d];
            gq[oi + d] += p.scale() * dS * kd[kj + d];
            gk[kj + d] += p.scale() * dS * qd[oi + d];
            nv[kj + d] += Pt * dod[oi + d];
            nq[oi + d] += p.scale() * dSt * kd[kj + d];
            nk[kj + d] += p.scale() * dSt * qd[oi + d];
          }
        }
      }
  const auto compare = [&](const char* name, const simt_test::Buffer<T>& got, const std::vector<double>& want,
                           const std::vector<double>& naive) {
    Err ek, en;
    for (size_t i = 0; i < got.size(); ++i) {
      ek.add(to_f(got[i]), want[i]);
      en.add(round_t<T>(naive[i]), want[i]);
    }
    judge(name, where, ek, en, 3.0);
  };
  compare("dq", run[0].dq, gq, nq);
  compare("dk", run[0].dk, gk, nk);
  compare("dv", run[0].dv, gv, nv);
  // Exact zeros where nothing is visible: a row that sees no key, a key no query sees.
  for (size_t li = 0; li < rows.size(); ++li)
    if (rows[li].keys.empty())
      for (int64_t d = 0; d < p.D; ++d) CHECK_MSG(to_f(run[0].dq[li * p.D + d]) == 0.f, where + ": dq of an empty row must be 0");
  for (size_t kj = 0; kj < key_seen.size(); ++kj)
    if (!key_seen[kj])
      for (int64_t d = 0; d < p.D; ++d)
        CHECK_MSG(to_f(run[0].dk[kj * p.D + d]) == 0.f && to_f(run[0].dv[kj * p.D + d]) == 0.f,
                  where + ": dk and dv of a key no query sees must be 0");
}

// ---- the problems

Problem make(int64_t B, int64_t Nq, int64_t Nk, int64_t H, int64_t Hkv, int64_t mB, int64_t mH, int64_t bq, int64_t bk,
             Pattern pat, const char* what, bool dlse = false, int64_t left = -1, int64_t right = -1) {
  Problem p;
  p.B = B;
  p.Nq = Nq;
  p.Nk = Nk;
  p.H = H;
  p.Hkv = Hkv;
  p.mB = mB;
  p.mH = mH;
  p.bq = bq;
  p.bk = bk;
  p.pattern = pat;
  p.what = what;
  p.dlse = dlse;
  p.left = left;
  p.right = right;
  return p;
}

// Small (at most 3 x 4 tiles): every problem runs for every instantiation in every thread order.
const Problem kFwd[] = {
    make(1, 1, 1, 1, 1, 1, 1, 16, 16, Pattern::Causal, "one token, 16 x 16 blocks"),
    make(1, 130, 130, 2, 1, 1, 1, 64, 64, Pattern::Causal, "causal 64 x 64, GQA 2:1, mask shared over heads"),
    make(1, 150, 150, 1, 1, 1, 1, 16, 32, Pattern::Window, "sliding window (20, 7), 16 x 32 blocks", false, 20, 7),
    make(2, 150, 150, 1, 1, 1, 1, 32, 16, Pattern::Documents, "documents (causal), 32 x 16 blocks, shared over B = 2"),
    make(1, 126, 126, 1, 1, 1, 1, 128, 64, Pattern::Neighborhood, "2-D neighborhood 3 x 5, 128 x 64 blocks"),
    make(2, 97, 200, 2, 1, 2, 2, 64, 128, Pattern::Random, "random per (b, h), 64 x 128 blocks, Nq < Nk, empty partials"),
    make(1, 130, 70, 2, 2, 1, 2, 128, 128, Pattern::Causal, "causal Nq > Nk: 60 rows see nothing, 128 x 128 blocks"),
    make(1, 5, 0, 1, 1, 1, 1, 64, 64, Pattern::Causal, "Nk = 0"),
};
const Problem kBwd[] = {
    make(1, 1, 1, 1, 1, 1, 1, 16, 16, Pattern::Causal, "one token, 16 x 16 blocks"),
    make(1, 130, 130, 2, 1, 1, 1, 64, 64, Pattern::Causal, "causal 64 x 64, GQA 2:1, mask shared over heads", true),
    make(1, 150, 150, 1, 1, 1, 1, 16, 32, Pattern::Window, "sliding window (20, 7), 16 x 32 blocks", false, 20, 7),
    make(2, 100, 100, 1, 1, 1, 1, 32, 16, Pattern::Documents, "documents (causal), 32 x 16 blocks, shared over B = 2", true),
    make(1, 126, 126, 1, 1, 1, 1, 128, 64, Pattern::Neighborhood, "2-D neighborhood 3 x 5, 128 x 64 blocks"),
    make(2, 97, 150, 2, 1, 2, 1, 64, 128, Pattern::Random, "random per b, 64 x 128 blocks, Nq < Nk, empty partials", true),
    make(1, 130, 70, 2, 2, 1, 2, 128, 128, Pattern::Causal, "causal Nq > Nk: rows see nothing, 128 x 128 blocks"),
    make(1, 5, 0, 1, 1, 1, 1, 64, 64, Pattern::Causal, "Nk = 0"),
};

template <typename T>
void fwd_entry(const FwdEntry& e) {
  unsigned seed = 1;
  for (const Problem& p : kFwd) fwd_problem<T>(e, p, seed++);
  simt_test::note("driver_shapes", "0");
  simt_test::flush_error_notes();
}

template <typename T>
void bwd_entry(const BwdEntry& e) {
  unsigned seed = 101;
  for (const Problem& p : kBwd) bwd_problem<T>(e, p, seed++);
  simt_test::note("driver_shapes", "0");
  simt_test::flush_error_notes();
}

// ---- one registered case per table entry

template <int I>
void fwd_case() {
  const auto& e = Table::fwd[I];
  if (e.dtype == DType::Float16) fwd_entry<__half>(e);
  else fwd_entry<__nv_bfloat16>(e);
}

template <int I>
void bwd_case() {
  const auto& e = Table::bwd[I];
  if (e.dtype == DType::Float16) bwd_entry<__half>(e);
  else bwd_entry<__nv_bfloat16>(e);
}

template <size_t... I, size_t... J>
bool register_all(std::index_sequence<I...>, std::index_sequence<J...>) {
  static std::deque<std::string> names;
  ((names.push_back(case_name(Table::fwd[I].name)),
    simt_test::cases().push_back(simt_test::Case{names.back().c_str(), &fwd_case<static_cast<int>(I)>})),
   ...);
  ((names.push_back(case_name(Table::bwd[J].name)),
    simt_test::cases().push_back(simt_test::Case{names.back().c_str(), &bwd_case<static_cast<int>(J)>})),
   ...);
  return true;
}
const bool registered =
    register_all(std::make_index_sequence<Table::fwd_count>{}, std::make_index_sequence<Table::bwd_count>{});

const int64_t kSizes[] = {16, 32, 64, 128};

// The plan kernel against the host plan for every block geometry and pattern: Nq != Nk both ways,
// tails, masks per (b, h) and shared.
SIMT_TEST(plan_every_geometry) {
  int n = 0;
  for (int64_t bq : kSizes)
    for (int64_t bk : kSizes) {
      const Problem ps[] = {
          make(1, 200, 200, 1, 1, 1, 1, bq, bk, Pattern::Causal, "causal"),
          make(1, 150, 230, 1, 1, 1, 1, bq, bk, Pattern::Window, "window (40, 3)", false, 40, 3),
          make(1, 150, 150, 1, 1, 1, 1, bq, bk, Pattern::Documents, "documents"),
          make(1, 126, 126, 1, 1, 1, 1, bq, bk, Pattern::Neighborhood, "neighborhood"),
          make(2, 190, 97, 2, 1, 2, 2, bq, bk, Pattern::Random, "random per (b, h)"),
      };
      for (const Problem& p : ps) {
        HostMask m;
        build_mask(m, p);
        Plan pl;
        make_plan(pl, m);
        (void)mask_of(m.view, pl.dp, p.B, p.H, kFwdOp, nullptr);
        simt_test::sync();
        check_plan(m, pl, std::string(p.what) + ", " + std::to_string(bq) + " x " + std::to_string(bk) + " blocks");
        ++n;
      }
    }
  simt_test::note("plans_checked", std::to_string(n));
}

// Attention forward and backward over every block geometry (bfloat16, D = 32): random masks with
// tails on both axes.
SIMT_TEST(attention_every_geometry) {
  const FwdEntry* f = nullptr;
  const BwdEntry* b = nullptr;
  for (int i = 0; i < Table::fwd_count; ++i)
    if (Table::fwd[i].dtype == DType::BFloat16 && Table::fwd[i].head_dim == 32) f = &Table::fwd[i];
  for (int i = 0; i < Table::bwd_count; ++i)
    if (Table::bwd[i].dtype == DType::BFloat16 && Table::bwd[i].head_dim == 32) b = &Table::bwd[i];
  CHECK_MSG(f && b, "no bfloat16 D = 32 block-sparse kernels in the table");
  static std::deque<std::string> names;
  unsigned seed = 500;
  for (int64_t bq : kSizes)
    for (int64_t bk : kSizes) {
      names.push_back("random, " + std::to_string(bq) + " x " + std::to_string(bk) + " blocks");
      const Problem p = make(1, 97, 130, 1, 1, 1, 1, bq, bk, Pattern::Random, names.back().c_str(), bq == bk);
      fwd_problem<__nv_bfloat16>(*f, p, seed++);
      bwd_problem<__nv_bfloat16>(*b, p, seed++);
    }
  simt_test::flush_error_notes();
}

// The backward is bitwise reproducible, also from the cached plan.
SIMT_TEST(backward_is_deterministic) {
  for (int i = 0; i < Table::bwd_count; ++i) {
    const auto& e = Table::bwd[i];
    if (e.dtype != DType::Float16 || e.head_dim != 32) continue;
    bwd_problem<__half>(e, make(1, 130, 97, 4, 2, 1, 4, 32, 64, Pattern::Random, "determinism", true), 7, /*twice=*/true);
  }
  simt_test::flush_error_notes();
}

template <typename F>
void expect_error(F&& f, const char* code, const char* op, const char* part) {
  try {
    f();
  } catch (const attnkit::Error& e) {
    CHECK_MSG(e.code() == code && std::string(e.what()).find(part) != std::string::npos && e.op() == op,
              std::string("unexpected error ") + e.code() + " (" + e.op() + "): " + e.what());
    std::printf("  (expected) %s: %s\n", e.code().c_str(), e.what());
    return;
  }
  simt_test::fail(__FILE__, __LINE__, std::string("expected attnkit::Error ") + code);
}

SIMT_TEST(dispatch_errors) {
  alignas(16) static uint16_t buf[64];
  AttentionFwdParams p;
  p.shape = {1, 1, 1, 1, 1, 64, 64};
  p.dtype = DType::Float16;
  p.q = p.k = p.v = buf;
  p.out = buf;
  CHECK(select_fwd(p).head_dim == 64);
  p.dtype = DType::BFloat16;
  p.shape.D = p.shape.Dv = 48;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", kFwdOp, "head dim 48 for bfloat16 is not compiled into this build (compiled: 32, 64, 128)");
  p.shape.D = 64;
  p.shape.Dv = 32;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", kFwdOp, "value head dim 32 must equal the query/key head dim 64");
  p.shape.Dv = 64;
  p.shape.H = 3;
  p.shape.Hkv = 2;
  expect_error([&] { select_fwd(p); }, "SHAPE", kFwdOp, "H > 0 to be a multiple of Hkv");
  p.shape.H = p.shape.Hkv = 1;
  p.v = buf + 1;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", kFwdOp, "16-byte aligned");
  AttentionBwdParams b;
  b.shape = {1, 1, 1, 1, 1, 128, 128};
  b.dtype = DType::Float16;
  b.q = b.k = b.v = b.out = b.dout = buf;
  b.dq = b.dk = b.dv = buf;
  expect_error([&] { select_bwd(b); }, "UNSUPPORTED", kBwdOp, "head dim 128 for float16 is not compiled into this build (compiled: 32, 64)");
  b.shape.D = b.shape.Dv = 64;
  CHECK(select_bwd(b).head_dim == 64);
  b.dk = buf + 4;
  expect_error([&] { select_bwd(b); }, "UNSUPPORTED", kBwdOp, "16-byte aligned");
  // a plan buffer that does not fit the mask (checked before anything is read: host memory only)
  BlockMaskView view;
  view.nq = view.nk = 100;
  view.bq = view.bk = 16;
  view.qb = view.kb = 7;
  int32_t plan_buf[1] = {0};
  const DevicePlan dp{plan_buf, plan_layout(view, 28).ints - 1, true, 28, 0};
  expect_error([&] { mask_of(view, dp, 1, 1, kBwdOp, nullptr); }, "ARGUMENT", kBwdOp, "device plan has");
}

}  // namespace

SIMT_TEST_MAIN
