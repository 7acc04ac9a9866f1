// Every block-selection CUDA kernel of this build (the dispatch table generated from
// native/cuda/instantiations.json; selection.cuh) under the SIMT emulator, against a host reference
// written from the semantics (docs/block-sparse.md), in float64:
//  - scores: within a float32 bound of the float64 scores (sums of D- or S*D-term products);
//  - the selection: exactly what the rule gives on the kernel's own float32 scores (ties and all),
//    and what it gives on the float64 scores wherever the float64 margin is clear (> 1e-4 of the
//    row's scale: float rounding cannot decide there), with at most a few unclear rows;
//  - the BlockMask lists: exactly the lists built on the host from the kernel's selection (dense
//    per-element visibility, then per block: full, partial with its bitmap rows, or absent).
// Shapes: causal and not, Nq != Nk both ways, tails (N not a multiple of any block), topK larger than
// the causal blocks, MoBA blocks larger than the mask blocks (C = 256 -> 128-column mask blocks),
// query blocks of 16 to 128, XAttention strides 1 to the block size, thresholds 0, 1 and between,
// GQA, B = 2, more MoBA blocks than one bitmap chunk, more mask rows than scan threads, exact ties.
// Outputs start as garbage (NaN scores, 0x7f selections, -7 lists), so an element a
// kernel fails to write is an error. One case per table entry (`selection_<op>_<dtype>`, as
// test/simt-families.ts names them), plus the dispatch errors. The same source compiles with nvcc
// as a real GPU program (scripts/gpu-check-kernels.sh).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <random>
#include <string>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../dispatch.h"

namespace {

using namespace attnkit;
using namespace attnkit::cuda::selection;

// An element as stored (rounded by the kernels' own conversion) and its value.
template <typename E>
typename E::Storage stored(double x) {
  typename E::Storage s;
  E::store(&s, 0, float(x));
  return s;
}
template <typename E>
double value(typename E::Storage s) { return E::load(&s, 0); }
template <typename E>
const char* dname() { return E::kDType == DType::Float32 ? "f32" : E::kDType == DType::Float16 ? "f16" : "bf16"; }

struct Dims {
  int64_t B, Nq, Nk, H, Hkv, D;
};

// q and k as the kernels see them (rounded to the dtype), in float64 too. `sharp` scales the keys
// so that softmax rows are peaked and thresholds pick strict subsets; period > 0 repeats the keys
// with that period (identical key blocks: exact ties of the block scores, for the tie rule).
template <typename E>
struct Inputs {
  simt_test::Buffer<typename E::Storage> q, k;
  std::vector<double> q64, k64;
  Inputs(const Dims& d, uint32_t seed, double sharp, int64_t period) {
    std::mt19937 gen(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    q.resize(size_t(d.B * d.Nq * d.H * d.D));
    k.resize(size_t(d.B * d.Nk * d.Hkv * d.D));
    q64.resize(q.size());
    k64.resize(k.size());
    for (size_t i = 0; i < q.size(); ++i) q64[i] = value<E>(q[i] = stored<E>(normal(gen)));
    for (size_t i = 0; i < k.size(); ++i) k64[i] = value<E>(k[i] = stored<E>(sharp * normal(gen)));
    if (period > 0)
      for (size_t i = 0; i < k.size(); ++i) {
        const int64_t row = int64_t(i) / (d.Hkv * d.D), x = row % d.Nk, rest = int64_t(i) % (d.Hkv * d.D);
        const size_t src = size_t(((row / d.Nk) * d.Nk + x % period) * d.Hkv * d.D + rest);
        k[i] = k[src];
        k64[i] = k64[src];
      }
  }
};

inline int64_t at(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t dim) {
  return ((b * N + n) * heads + h) * dim;
}

// ------------------------------------------------------------------ mask lists on the host

struct Lists {
  std::vector<int32_t> full_off, full_idx, part_off, part_idx;
  std::vector<uint32_t> bits;
  bool operator==(const Lists& o) const {
    return full_off == o.full_off && full_idx == o.full_idx && part_off == o.part_off && part_idx == o.part_idx &&
           bits == o.bits;
  }
};

// The lists of a dense visibility vis[bh][q][k] (B*H rows of Nq x Nk), blocks bq x bk.
Lists lists_of(const std::vector<uint8_t>& vis, int64_t BH, int64_t Nq, int64_t Nk, int64_t bq, int64_t bk) {
  Lists l;
  const int64_t Qb = ceil_div(Nq, bq), Kb = ceil_div(Nk, bk), words = (bk + 31) / 32;
  l.full_off.push_back(0);
  l.part_off.push_back(0);
  for (int64_t bh = 0; bh < BH; ++bh)
    for (int64_t qb = 0; qb < Qb; ++qb) {
      for (int64_t kb = 0; kb < Kb; ++kb) {
        std::vector<uint32_t> rowbits(size_t(bq * words), 0u);
        bool any = false, all = true;
        for (int64_t r = 0; r < bq; ++r)
          for (int64_t c = 0; c < bk; ++c) {
            const int64_t q = qb * bq + r, k = kb * bk + c;
            if (q >= Nq || k >= Nk) continue;
            const bool v = vis[size_t((bh * Nq + q) * Nk + k)] != 0;
            any = any || v;
            all = all && v;
            if (v) rowbits[size_t(r * words + c / 32)] |= 1u << (c % 32);
          }
        if (!any) continue;
        if (all) {
          l.full_idx.push_back(int32_t(kb));
        } else {
          l.part_idx.push_back(int32_t(kb));
          l.bits.insert(l.bits.end(), rowbits.begin(), rowbits.end());
        }
      }
      l.full_off.push_back(int32_t(l.full_idx.size()));
      l.part_off.push_back(int32_t(l.part_idx.size()));
    }
  return l;
}

// The device lists, read back up to their offsets.
struct DeviceMask {
  simt_test::Buffer<int32_t> full_off, full_idx, part_off, part_idx, bits;
  MaskOutput out;
  DeviceMask(int64_t rows, int64_t cap, int64_t bq, int64_t bk)
      : full_off(size_t(rows + 1), -7), full_idx(size_t(cap), -7), part_off(size_t(rows + 1), -7),
        part_idx(size_t(cap), -7), bits(size_t(cap * bq * ((bk + 31) / 32)), -7) {
    out.bq = bq;
    out.bk = bk;
    out.full_off = full_off.data();
    out.full_idx = full_idx.data();
    out.full_cap = cap;
    out.part_off = part_off.data();
    out.part_idx = part_idx.data();
    out.part_cap = cap;
    out.part_bits = reinterpret_cast<uint32_t*>(bits.data());
  }
  Lists read() const {
    Lists l;
    l.full_off.assign(full_off.begin(), full_off.end());
    l.part_off.assign(part_off.begin(), part_off.end());
    const int64_t nf = full_off[full_off.size() - 1], np = part_off[part_off.size() - 1];
    CHECK_MSG(nf >= 0 && nf <= int64_t(full_idx.size()) && np >= 0 && np <= int64_t(part_idx.size()), "offsets out of range");
    l.full_idx.assign(full_idx.begin(), full_idx.begin() + nf);
    l.part_idx.assign(part_idx.begin(), part_idx.begin() + np);
    const int64_t per = out.bq * ((out.bk + 31) / 32);
    for (int64_t i = 0; i < np * per; ++i) l.bits.push_back(uint32_t(bits[size_t(i)]));
    return l;
  }
};

void check_lists(const Lists& got, const Lists& want, const std::string& what) {
  if (got == want) return;
  std::string why = what + ": mask lists differ from the host's";
  if (got.full_off != want.full_off) why += " (full offsets)";
  if (got.part_off != want.part_off) why += " (partial offsets)";
  if (got.full_idx != want.full_idx) why += " (full indices)";
  if (got.part_idx != want.part_idx) why += " (partial indices)";
  if (got.bits != want.bits) why += " (bitmaps)";
  CHECK_MSG(false, why);
}

// ------------------------------------------------------------------ MoBA

struct MobaCase {
  Dims d;
  int64_t C, topk, bq;
  bool causal;
  int64_t period = 0;  // keys repeated with this period: tied scores
};

// Picks of one row from its scores s[0..nb): own block first when causal, then the top of the
// complete past (or of all) blocks by decreasing score, ties to the lower index. margin: the gap
// between the last pick and the best candidate left out (Infinity when nothing was left out).
std::vector<int32_t> moba_pick(const std::vector<double>& s, int64_t nb, int64_t ta, const MobaCase& c, double* margin) {
  std::vector<int32_t> sel(size_t(c.topk), -1);
  *margin = INFINITY;
  int64_t count = 0, ncand = nb;
  if (c.causal) {
    if (ta < 0) return sel;
    sel[0] = int32_t(ta / c.C);
    count = 1;
    ncand = std::min(nb, ta / c.C);
  }
  std::vector<int64_t> cand(static_cast<size_t>(ncand));
  for (int64_t j = 0; j < ncand; ++j) cand[size_t(j)] = j;
  std::stable_sort(cand.begin(), cand.end(), [&](int64_t x, int64_t y) { return s[size_t(x)] > s[size_t(y)]; });
  const int64_t want = std::min(c.topk - count, ncand);
  for (int64_t i = 0; i < want; ++i) sel[size_t(count++)] = int32_t(cand[size_t(i)]);
  if (want > 0 && want < ncand) *margin = s[size_t(cand[size_t(want - 1)])] - s[size_t(cand[size_t(want)])];
  return sel;
}

template <typename E>
void moba_case(const MobaCase& c, uint32_t seed, const std::string& what) {
  const Entry& entry = select(E::kDType, true, "mobaMask");
  const Dims& d = c.d;
  Inputs<E> in(d, seed, 1.0, c.period);
  const int64_t nb = ceil_div(d.Nk, c.C), bk = std::min<int64_t>(c.C, 128);
  const int64_t Qb = ceil_div(d.Nq, c.bq), Kb = ceil_div(d.Nk, bk);
  const int64_t cap = d.B * d.H * Qb * std::min(Kb, std::min(c.bq, d.Nq) * c.topk * (c.C / bk));
  MobaParams p;
  p.in = {d.B, d.Nq, d.Nk, d.H, d.Hkv, d.D, E::kDType, in.q.data(), in.k.data()};
  p.block = c.C;
  p.topk = c.topk;
  p.causal = c.causal;
  simt_test::Buffer<float> scores(size_t(d.B * d.Nq * d.H * nb), NAN);
  simt_test::Buffer<int32_t> selected(size_t(d.B * d.Nq * d.H * c.topk), 0x7f);
  simt_test::Buffer<float> kbar(size_t(moba_workspace_floats(p)), NAN);
  DeviceMask mask(d.B * d.H * Qb, cap, c.bq, bk);
  p.scores = scores.data();
  p.selected = selected.data();
  p.mask = mask.out;
  run_moba(entry, p, kbar.data(), nullptr);
  simt_test::sync();

  // float64 scores: <q_t, mean of the block's real keys>
  const int64_t group = d.H / d.Hkv;
  double worst = 0, naive = 0;
  int unclear = 0, rows = 0;
  std::vector<uint8_t> vis(size_t(d.B * d.H * d.Nq * d.Nk), 0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.Nq; ++t)
      for (int64_t h = 0; h < d.H; ++h) {
        const int64_t row = (b * d.Nq + t) * d.H + h, hk = h / group;
        std::vector<double> ref(static_cast<size_t>(nb)), own(static_cast<size_t>(nb));
        for (int64_t j = 0; j < nb; ++j) {
          const int64_t k0 = j * c.C, k1 = std::min(d.Nk, k0 + c.C);
          double s = 0, mag = 0;
          for (int64_t e = 0; e < d.D; ++e) {
            double mean = 0;
            for (int64_t x = k0; x < k1; ++x) mean += in.k64[size_t(at(b, x, hk, d.Nk, d.Hkv, d.D) + e)];
            mean /= double(k1 - k0);
            const double prod = in.q64[size_t(at(b, t, h, d.Nq, d.H, d.D) + e)] * mean;
            s += prod;
            mag += std::fabs(prod);
          }
          ref[size_t(j)] = s;
          own[size_t(j)] = scores[size_t(row * nb + j)];
          const double err = std::isnan(own[size_t(j)]) ? INFINITY : std::fabs(own[size_t(j)] - s);
          // float32 sums of D products and of a block's keys: a few ulps of the magnitudes
          const double bound = 4e-6 * (mag + 1e-3) * std::sqrt(double(d.D + c.C));
          worst = std::max(worst, err);
          naive = std::max(naive, bound);
          char msg[200];
          std::snprintf(msg, sizeof msg, "%s: score (b %lld t %lld h %lld j %lld) error %.3g > %.3g", what.c_str(),
                        (long long)b, (long long)t, (long long)h, (long long)j, err, bound);
          CHECK_MSG(err <= bound, msg);
        }
        const int64_t ta = t + d.Nk - d.Nq;
        double m_own = 0, m_ref = 0;
        const std::vector<int32_t> want_own = moba_pick(own, nb, ta, c, &m_own);
        const std::vector<int32_t> want_ref = moba_pick(ref, nb, ta, c, &m_ref);
        std::vector<int32_t> got(selected.begin() + row * c.topk, selected.begin() + (row + 1) * c.topk);
        CHECK_MSG(got == want_own, what + ": selection differs from the rule on the kernel's own scores (row " +
                                       std::to_string(row) + ")");
        ++rows;
        if (m_ref > 1e-4) CHECK_MSG(got == want_ref, what + ": selection differs from float64 at a clear margin (row " +
                                                         std::to_string(row) + ")");
        else if (got != want_ref) ++unclear;
        for (int32_t j : got) {
          if (j < 0) continue;
          for (int64_t x = j * c.C; x < std::min(d.Nk, (j + 1) * c.C); ++x)
            if (!c.causal || x <= ta) vis[size_t(((b * d.H + h) * d.Nq + t) * d.Nk + x)] = 1;
        }
      }
  simt_test::record_error("scores", worst, naive);
  CHECK_MSG(unclear <= rows / 50 + 1, what + ": too many rows whose float64 selection is unclear");
  check_lists(mask.read(), lists_of(vis, d.B * d.H, d.Nq, d.Nk, c.bq, bk), what);
}

// ------------------------------------------------------------------ XAttention

struct XattnCase {
  Dims d;
  int64_t S, bs;
  float threshold;
  bool causal;
  int64_t period = 0;  // keys repeated with this period: tied scores
};

// The threshold rule on one row of block scores (float64 arithmetic on the given values). Margins,
// relative to the row's total: `sums`, the distance of the mass before the last taken and the first
// left-out candidate from the requirement (what summation order could flip); `gap`, the score gap
// between those two candidates (what float rounding of the scores could swap).
struct Margins {
  double sums = INFINITY, gap = INFINITY;
};
std::vector<uint8_t> xattn_pick(const std::vector<double>& s, int64_t qb, int64_t Qb, const XattnCase& c, Margins* mg) {
  const int64_t Kb = int64_t(s.size());
  std::vector<uint8_t> sel(size_t(Kb), 0);
  const int64_t diag = std::min(Kb - 1, std::max<int64_t>(0, qb + Kb - Qb));
  double total = 0, have = 0;
  for (double x : s) total += x;
  std::vector<int64_t> order;
  for (int64_t kb = 0; kb < Kb; ++kb) {
    if (c.causal && (kb == 0 || kb == diag)) {
      sel[size_t(kb)] = 1;
      have += s[size_t(kb)];
    } else {
      order.push_back(kb);
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return s[size_t(x)] > s[size_t(y)]; });
  const double required = double(c.threshold) * total, scale = std::max(total, 1e-30);
  size_t m = 0;
  std::vector<double> before;
  for (; m < order.size(); ++m) {
    before.push_back(have);
    if (have >= required) break;
    sel[size_t(order[m])] = 1;
    have += s[size_t(order[m])];
  }
  *mg = Margins{};
  if (m > 0) mg->sums = std::min(mg->sums, std::fabs(before[m - 1] - required) / scale);
  if (m < order.size()) mg->sums = std::min(mg->sums, std::fabs(before[m] - required) / scale);
  if (m > 0 && m < order.size()) mg->gap = (s[size_t(order[m - 1])] - s[size_t(order[m])]) / scale;
  if (c.causal)
    for (int64_t kb = diag + 1; kb < Kb; ++kb) sel[size_t(kb)] = 0;
  return sel;
}

template <typename E>
void xattn_case(const XattnCase& c, uint32_t seed, const std::string& what) {
  const Entry& entry = select(E::kDType, false, "xattentionMask");
  const Dims& d = c.d;
  Inputs<E> in(d, seed, 2.0, c.period);
  const int64_t Qb = ceil_div(d.Nq, c.bs), Kb = ceil_div(d.Nk, c.bs);
  const int64_t cap = d.B * d.H * Qb * Kb;
  XattnParams p;
  p.in = {d.B, d.Nq, d.Nk, d.H, d.Hkv, d.D, E::kDType, in.q.data(), in.k.data()};
  p.stride = c.S;
  p.block = c.bs;
  p.threshold = c.threshold;
  p.causal = c.causal;
  simt_test::Buffer<float> scores(size_t(cap), NAN);
  simt_test::Buffer<uint8_t> selected(size_t(cap), 0x7f);
  DeviceMask mask(d.B * d.H * Qb, cap, c.bs, c.bs);
  p.scores = scores.data();
  p.selected = selected.data();
  p.mask = mask.out;
  run_xattention(entry, p, nullptr);
  simt_test::sync();

  // float64 block scores from the definition
  const int64_t S = c.S, Nr = ceil_div(d.Nq, S), Mr = ceil_div(d.Nk, S), group = d.H / d.Hkv;
  const double norm = std::sqrt(double(d.D)) * double(S);
  std::vector<double> ref(size_t(cap), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t t = 0; t < Nr; ++t) {
        std::vector<double> A(size_t(Mr), -INFINITY);
        double mx = -INFINITY;
        for (int64_t u = 0; u < Mr; ++u) {
          if (c.causal && u > t + (Mr - Nr)) continue;
          double acc = 0;
          for (int64_t i = 0; i < S; ++i) {
            const int64_t qi = t * S + S - 1 - i, ki = u * S + i;
            if (qi >= d.Nq || ki >= d.Nk) continue;
            for (int64_t e = 0; e < d.D; ++e)
              acc += in.q64[size_t(at(b, qi, h, d.Nq, d.H, d.D) + e)] * in.k64[size_t(at(b, ki, h / group, d.Nk, d.Hkv, d.D) + e)];
          }
          A[size_t(u)] = acc / norm;
          mx = std::max(mx, A[size_t(u)]);
        }
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (double a : A) sum += a == -INFINITY ? 0.0 : std::exp(a - mx);
        for (int64_t u = 0; u < Mr; ++u)
          if (A[size_t(u)] != -INFINITY) ref[size_t(((b * d.H + h) * Qb + (t * S) / c.bs) * Kb + (u * S) / c.bs)] += std::exp(A[size_t(u)] - mx) / sum;
      }
  double worst = 0;
  for (int64_t i = 0; i < cap; ++i) {
    const double err = std::isnan(scores[size_t(i)]) ? INFINITY : std::fabs(scores[size_t(i)] - ref[size_t(i)]);
    worst = std::max(worst, err);
    char msg[160];
    std::snprintf(msg, sizeof msg, "%s: block score %lld error %.3g", what.c_str(), (long long)i, err);
    CHECK_MSG(err <= 2e-4 * double(c.bs / S), msg);  // float32 products, exps and sums of probabilities
  }
  simt_test::record_error("scores", worst, 2e-4);
  int unclear = 0;
  std::vector<uint8_t> vis(size_t(d.B * d.H * d.Nq * d.Nk), 0);
  for (int64_t bh = 0; bh < d.B * d.H; ++bh)
    for (int64_t qb = 0; qb < Qb; ++qb) {
      const int64_t row = bh * Qb + qb;
      std::vector<double> own(static_cast<size_t>(Kb)), r64(static_cast<size_t>(Kb));
      for (int64_t kb = 0; kb < Kb; ++kb) {
        own[size_t(kb)] = scores[size_t(row * Kb + kb)];
        r64[size_t(kb)] = ref[size_t(row * Kb + kb)];
      }
      Margins m_own, m_ref;
      const std::vector<uint8_t> want_own = xattn_pick(own, qb, Qb, c, &m_own), want_ref = xattn_pick(r64, qb, Qb, c, &m_ref);
      const std::vector<uint8_t> got(selected.begin() + row * Kb, selected.begin() + (row + 1) * Kb);
      // on its own scores: exact (ties by the rule), except where the sums at the cut agree to double
      // rounding (the kernel sums in another order)
      if (m_own.sums > 1e-12) CHECK_MSG(got == want_own, what + ": selection differs from the rule on the kernel's own scores (row " + std::to_string(row) + ")");
      if (std::min(m_ref.sums, m_ref.gap) > 1e-4) CHECK_MSG(got == want_ref, what + ": selection differs from float64 at a clear margin (row " + std::to_string(row) + ")");
      else if (got != want_ref) ++unclear;
      for (int64_t kb = 0; kb < Kb; ++kb) {
        if (!got[size_t(kb)]) continue;
        for (int64_t r = qb * c.bs; r < std::min(d.Nq, (qb + 1) * c.bs); ++r)
          for (int64_t x = kb * c.bs; x < std::min(d.Nk, (kb + 1) * c.bs); ++x)
            if (!c.causal || x <= r + d.Nk - d.Nq) vis[size_t((bh * d.Nq + r) * d.Nk + x)] = 1;
      }
    }
  // threshold 0 keeps exactly the forced blocks; 1 keeps every block up to the diagonal (causal)
  if (c.threshold == 0.f || c.threshold == 1.f)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh)
      for (int64_t qb = 0; qb < Qb; ++qb) {
        const int64_t diag = std::min(Kb - 1, std::max<int64_t>(0, qb + Kb - Qb));
        for (int64_t kb = 0; kb < Kb; ++kb) {
          const bool forced = c.causal && (kb == 0 || kb == diag), past = c.causal && kb > diag;
          const bool want = c.threshold == 0.f ? forced : !past;
          CHECK_MSG(selected[size_t((bh * Qb + qb) * Kb + kb)] == (want ? 1 : 0), what + ": threshold " +
                    std::to_string(c.threshold) + " selection of block " + std::to_string(kb));
        }
      }
  CHECK_MSG(unclear <= int(d.B * d.H * Qb) / 10 + 1, what + ": too many query blocks whose float64 selection is unclear");
  check_lists(mask.read(), lists_of(vis, d.B * d.H, d.Nq, d.Nk, c.bs, c.bs), what);
}

// ------------------------------------------------------------------ the cases

const MobaCase kMoba[] = {
    {{1, 150, 150, 2, 1, 32}, 32, 2, 64, true},     // tails, GQA 2:1
    {{2, 97, 130, 2, 2, 16}, 16, 3, 32, true},      // Nq < Nk, B = 2
    {{1, 130, 70, 2, 2, 24}, 16, 2, 64, true},      // Nq > Nk: rows that see nothing
    {{1, 100, 100, 1, 1, 8}, 32, 9, 16, true},      // topK > causal blocks
    {{1, 70, 300, 2, 1, 16}, 256, 2, 128, true},    // C = 256: mask blocks of 128 columns
    {{1, 90, 120, 2, 1, 16}, 16, 3, 64, false},     // non-causal
    {{1, 40, 50, 4, 2, 8}, 16, 1, 32, true},        // topK 1: own block only
    {{1, 128, 136, 2, 1, 8}, 16, 3, 64, true, 16},  // every complete block tied: the lower indices win
    {{1, 64, 100, 1, 1, 8}, 16, 4, 32, false, 16},  // ties, non-causal
    {{1, 16, 65636, 1, 1, 8}, 16, 3, 16, true},      // 4103 MoBA blocks: picks past the first 4096-block chunk
};

const XattnCase kXattn[] = {
    {{1, 130, 130, 2, 2, 16}, 4, 32, 0.9f, true},    // tails
    {{2, 100, 165, 4, 2, 16}, 4, 32, 0.8f, true},    // Nq < Nk, GQA, B = 2
    {{1, 165, 100, 2, 1, 16}, 8, 64, 0.9f, true},    // Nq > Nk
    {{1, 90, 110, 2, 2, 8}, 2, 16, 0.5f, false},     // non-causal
    {{1, 100, 100, 1, 1, 8}, 1, 16, 0.7f, true},     // S = 1: plain block sums
    {{1, 80, 80, 2, 1, 8}, 32, 32, 0.9f, true},      // S = block
    {{1, 96, 96, 2, 2, 8}, 4, 16, 0.f, true},        // threshold 0
    {{1, 96, 96, 2, 2, 8}, 4, 16, 1.f, true},        // threshold 1
    {{1, 70, 90, 1, 1, 8}, 4, 16, 1.f, false},       // threshold 1, non-causal
    {{1, 70, 90, 1, 1, 8}, 4, 16, 0.f, false},       // threshold 0, non-causal: nothing
    {{1, 64, 128, 1, 1, 8}, 4, 16, 0.4f, false, 16}, // tied block scores: the lower indices win
    {{1, 140, 140, 1, 1, 8}, 8, 128, 0.9f, true},    // 128-row query blocks
    {{1, 1100, 64, 4, 1, 8}, 16, 16, 0.5f, false},   // 276 mask rows: the offsets scan takes chunks of 2
};

// One table entry's case: every shape of the op, then the notes for the driver.
template <typename E, bool Moba>
void entry_case() {
  uint32_t seed = Moba ? 21 : 41;
  int i = 0;
  const std::string what = std::string(Moba ? "moba " : "xattention ") + dname<E>() + " case ";
  if (Moba)
    for (const MobaCase& c : kMoba) moba_case<E>(c, seed++, what + std::to_string(i++));
  else
    for (const XattnCase& c : kXattn) xattn_case<E>(c, seed++, what + std::to_string(i++));
  simt_test::note("driver_shapes", "0");  // the driver adds no shapes for this family
  simt_test::flush_error_notes();
}

template <typename E>
void register_dtype(std::deque<std::string>& names) {
  for (const Entry* e = Table::entries; e != Table::entries + Table::count; ++e) {
    if (e->dtype != E::kDType) continue;
    if (e->moba_pool) {
      names.push_back(std::string("selection_moba_") + dname<E>());
      simt_test::cases().push_back({names.back().c_str(), &entry_case<E, true>});
    }
    if (e->xattention_score) {
      names.push_back(std::string("selection_xattention_") + dname<E>());
      simt_test::cases().push_back({names.back().c_str(), &entry_case<E, false>});
    }
  }
}
const bool registered = [] {
  static std::deque<std::string> names;
  register_dtype<F32>(names);
  register_dtype<F16>(names);
  register_dtype<BF16>(names);
  return true;
}();

}  // namespace

SIMT_TEST(selection_dispatch_errors) {
  try {
    select(DType::Int32, true, "mobaMask");
    CHECK_MSG(false, "expected UNSUPPORTED");
  } catch (const Error& e) {
    CHECK_MSG(e.code() == "UNSUPPORTED" && std::string(e.what()).find("dtype int32 is not compiled into this build (compiled: float32, float16, bfloat16)") != std::string::npos, e.what());
  }
  SelectionInput in;
  in.B = 1;
  in.H = 70000;
  try {
    check_shape(in, 64, "xattentionMask");
    CHECK_MSG(false, "expected UNSUPPORTED");
  } catch (const Error& e) {
    CHECK_MSG(e.code() == "UNSUPPORTED" && std::string(e.what()).find("below 65536") != std::string::npos, e.what());
  }
  CHECK(select(DType::BFloat16, false, "xattentionMask").dtype == DType::BFloat16);
}

SIMT_TEST_MAIN
