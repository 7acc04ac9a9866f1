// A float64 reference of dense fused attention, forward and backward, written from the math (not from
// the kernels or the mask policy): plain loops over [B, N, H, D] heads-last tensors.
//   query i is aligned with key position a = i + Nk - Nq (bottom-right); it sees key j when
//   (left < 0 or j >= a - left) and (right' < 0 or j <= a + right'), right' = causal ? min(right, 0)
//   (0 if unbounded) : right;  s_ij = scale * q_i . k_j;  lse_i = log sum_j exp(s_ij) (-inf if no j);
//   out_i = sum_j exp(s_ij - lse_i) v_j (0 if no j).
//   Backward with dO and dLSE: P_ij = exp(s_ij - lse_i), dV_j = sum_i P_ij dO_i,
//   dS_ij = P_ij (dO_i . v_j - dO_i . out_i + dLSE_i), dQ_i = scale sum_j dS_ij k_j,
//   dK_j = scale sum_i dS_ij q_i. Query head h uses kv head h / (H / Hkv).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace fmha_ref {

struct Problem {
  int64_t B = 1, Nq = 1, Nk = 1, H = 1, Hkv = 1, D = 32;
  bool causal = false;
  int64_t left = -1, right = -1;
  double scale = 1.0;
};

inline bool visible(const Problem& p, int64_t i, int64_t j) {
  const int64_t a = i + p.Nk - p.Nq;
  const int64_t right = p.causal ? (p.right < 0 ? 0 : std::min<int64_t>(p.right, 0)) : p.right;
  return (p.left < 0 || j >= a - p.left) && (right < 0 || j <= a + right);
}

inline int64_t at(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t D) {
  return ((b * N + n) * heads + h) * D;
}

struct Forward {
  std::vector<double> out, lse;  // [B, Nq, H, D], [B, Nq, H]
};

// q, k, v: the exact input values as doubles.
inline Forward forward(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                       const std::vector<double>& v) {
  Forward f;
  f.out.assign(static_cast<size_t>(p.B * p.Nq * p.H * p.D), 0.0);
  f.lse.assign(static_cast<size_t>(p.B * p.Nq * p.H), -std::numeric_limits<double>::infinity());
  std::vector<double> s(static_cast<size_t>(p.Nk));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t hk = h / (p.H / p.Hkv);
      for (int64_t i = 0; i < p.Nq; ++i) {
        const double* qi = &q[at(b, i, h, p.Nq, p.H, p.D)];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < p.Nk; ++j) {
          if (!visible(p, i, j)) continue;
          const double* kj = &k[at(b, j, hk, p.Nk, p.Hkv, p.D)];
          double dot = 0;
          for (int64_t d = 0; d < p.D; ++d) dot += qi[d] * kj[d];
          s[j] = p.scale * dot;
          mx = std::max(mx, s[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (int64_t j = 0; j < p.Nk; ++j)
          if (visible(p, i, j)) sum += std::exp(s[j] - mx);
        const double lse = mx + std::log(sum);
        f.lse[(b * p.Nq + i) * p.H + h] = lse;
        double* o = &f.out[at(b, i, h, p.Nq, p.H, p.D)];
        for (int64_t j = 0; j < p.Nk; ++j) {
          if (!visible(p, i, j)) continue;
          const double w = std::exp(s[j] - lse);
          const double* vj = &v[at(b, j, hk, p.Nk, p.Hkv, p.D)];
          for (int64_t d = 0; d < p.D; ++d) o[d] += w * vj[d];
        }
      }
    }
  return f;
}

struct Backward {
  std::vector<double> dq, dk, dv;
};

// dlse may be empty (no LSE gradient).
inline Backward backward(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                         const std::vector<double>& v, const Forward& f, const std::vector<double>& dout,
                         const std::vector<double>& dlse) {
  Backward g;
  g.dq.assign(q.size(), 0.0);
  g.dk.assign(k.size(), 0.0);
  g.dv.assign(v.size(), 0.0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t hk = h / (p.H / p.Hkv);
      for (int64_t i = 0; i < p.Nq; ++i) {
        const double lse = f.lse[(b * p.Nq + i) * p.H + h];
        if (lse == -std::numeric_limits<double>::infinity()) continue;
        const double* qi = &q[at(b, i, h, p.Nq, p.H, p.D)];
        const double* doi = &dout[at(b, i, h, p.Nq, p.H, p.D)];
        const double* oi = &f.out[at(b, i, h, p.Nq, p.H, p.D)];
        double delta = 0;
        for (int64_t d = 0; d < p.D; ++d) delta += doi[d] * oi[d];
        if (!dlse.empty()) delta -= dlse[(b * p.Nq + i) * p.H + h];
        for (int64_t j = 0; j < p.Nk; ++j) {
          if (!visible(p, i, j)) continue;
          const double* kj = &k[at(b, j, hk, p.Nk, p.Hkv, p.D)];
          const double* vj = &v[at(b, j, hk, p.Nk, p.Hkv, p.D)];
          double dot = 0, dp = 0;
          for (int64_t d = 0; d < p.D; ++d) {
            dot += qi[d] * kj[d];
            dp += doi[d] * vj[d];
          }
          const double P = std::exp(p.scale * dot - lse);
          const double dS = P * (dp - delta);
          double* dqi = &g.dq[at(b, i, h, p.Nq, p.H, p.D)];
          double* dkj = &g.dk[at(b, j, hk, p.Nk, p.Hkv, p.D)];
          double* dvj = &g.dv[at(b, j, hk, p.Nk, p.Hkv, p.D)];
          for (int64_t d = 0; d < p.D; ++d) {
            dvj[d] += P * doi[d];
            dqi[d] += p.scale * dS * kj[d];
            dkj[d] += p.scale * dS * qi[d];
          }
        }
      }
    }
  return g;
}

}  // namespace fmha_ref
