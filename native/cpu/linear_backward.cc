// CPU linear attention, backward: a forward scan for dq and a reverse state-gradient scan for dk,
// dv and dS0 (the math: docs/linear.md; the shared pieces and the notation: linear_chunk.h).
// With a gate, the scans also leave the gradient of the cumulative log decay L_t per token,
//   dL_t = q~_t . dQ~_t - k~_t . dK~_t (+ <dS_T, S_T> at the last token),
// and the gate's gradient is its sum from the end, dg_r = sum_{t >= r} dL_t (docs/linear.md).
// Every pair (query t, key s) adds its term at t and subtracts it at s, so the pairs with weight 1
// (t = s, and the last token with dS_T) cancel exactly; they are left out rather than cancelled in
// float32, where the rounding of a term of size 1 would swamp a gradient of size exp(-30) (the
// test with gates of -30). So the dq scan adds q~_t . (the inter-chunk part of dQ~_t), the row
// sums minus the column sums of P = (Q~ K~^T) . dA below the diagonal (dA = (dO' V'^T) . M), and
// <dS_T, a_{N-1} S_{N-2}> at the last token; the dk scan subtracts k~_t . (the inter-chunk part
// of dK~_t), except at the last token.
#include "linear_chunk.h"

namespace attnkit::cpu {
namespace {
using namespace linear_chunk;

// ---------------------------------------------------------------- backward

struct BwdBuffers {
  float *Qraw, *Qt, *QT, *QTd, *Kraw, *Kr, *KT, *KTd, *Vt, *VT, *dO, *dOT, *O, *A, *dA, *M, *MT,
      *Hs, *HT, *dS, *dQ, *dK, *dV;
  static int64_t elems(int64_t D, int64_t D16, int64_t Dp) {
    return 2 * round_up(C * D, 16) + 3 * C * D16 + 4 * round_up(D * C, 16) + 4 * C * Dp +
           2 * Dp * C + 4 * C * C + 2 * D * Dp + Dp * D16 + 256;
  }
  BwdBuffers(float* base, int64_t D, int64_t D16, int64_t Dp) {
    Carve cv{base};
    Qraw = cv.take(C * D);   // [C x D] raw q (feature-map gradient)
    Qt = cv.take(C * D16);   // [C x D16] scale * phi(q)
    QT = cv.take(D * C);     // [D x C] Q~^T
    QTd = cv.take(D * C);    // [D x C] (Lq Q~)^T
    Kraw = cv.take(C * D);   // [C x D] raw k
    Kr = cv.take(C * D16);   // [C x D16] phi(k)
    KT = cv.take(D * C);     // [D x C] K~^T
    KTd = cv.take(D * C);    // [D x C] (Lk K~)^T
    Vt = cv.take(C * Dp);    // [C x Dp] V'
    VT = cv.take(Dp * C);    // [Dp x C] V'^T
    dO = cv.take(C * Dp);    // [C x Dp] dO' (normalize: [dO / u, -g / u])
    dOT = cv.take(Dp * C);   // [Dp x C] dO'^T
    O = cv.take(C * Dp);     // [C x Dp] recomputed output (normalize)
    A = cv.take(C * C);      // [C x C] A or A^T
    dA = cv.take(C * C);     // [C x C] dA or dA^T
    M = cv.take(C * C);      // decay matrix
    MT = cv.take(C * C);     // its transpose
    Hs = cv.take(D * Dp);    // [D x Dp] state H, or its gradient dH
    HT = cv.take(Dp * D16);  // [Dp x D16] transposed
    dS = cv.take(D * Dp);    // [D x Dp] non-causal state gradient
    dQ = cv.take(C * D16);   // [C x D16] (dK in the reverse pass)
    dK = dQ;
    dV = cv.take(C * Dp);    // [C x Dp]
  }
};

void backward_impl(const LinearBwdParams& p) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const LinearShape& s = p.shape;
  const int64_t B = s.B, N = s.N, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = s.state_cols();
  const bool norm = s.normalize, causal = p.opt.causal;
  const int64_t group = H / Hkv, nch = ceil_div(N, C);
  const int64_t D16 = round_up(D, 16), Dp = round_up(Ds, 16);
  check_gate(p.opt.gate, B, N, H, false, kBwdOp);
  const bool gated = p.opt.gate != nullptr && causal;
  const FeatureMap fm = p.opt.feature_map;
  const float scale = p.opt.scale, eps = p.opt.eps;
  const Tile full{0, Dv, norm};

  const int64_t per_worker = BwdBuffers::elems(D, D16, Dp);
  Scratch<float> work(size_t(pool.size() * per_worker), kBwdOp, /*zero=*/true);
  // normalize: per row u = den + eps and g = dO . out; the dq pass writes them, the dk/dv pass
  // reads them
  Scratch<float> ug(norm ? size_t(2 * B * H * N) : 0, kBwdOp);
  // GQA: dk/dv per query head in float32, summed over each group at the end
  Scratch<float> dKh(group > 1 ? size_t(B * N * H * D) : 0, kBwdOp);
  Scratch<float> dVh(group > 1 ? size_t(B * N * H * Dv) : 0, kBwdOp);
  // gate: per (b, h, token) the dq scan's and the dk scan's parts of dL (above), [B, H, N]
  Scratch<float> gq(gated ? size_t(B * H * N) : 0, kBwdOp);
  Scratch<float> gk(gated ? size_t(B * H * N) : 0, kBwdOp);

  auto load_dout = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n) {
    load_rows(p.dout, p.dtype, b, n0, n, h, N, H, Dv, 0, Dv, w.dO, Dp, Dp);
  };
  // dO' from stored u, g (normalize): dO'[:, :Dv] = dO / u, dO'[:, Dv] = -g / u
  auto normalize_dout = [&](const BwdBuffers& w, int64_t bh, int64_t n0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const float u = ug[size_t(2 * (bh * N + n0 + i))], g = ug[size_t(2 * (bh * N + n0 + i) + 1)];
      float* d = w.dO + i * Dp;
      const float inv = 1.f / u;
      for (int64_t e = 0; e < Dv; ++e) d[e] *= inv;
      d[Dv] = -g * inv;
    }
  };
  // From the recomputed O' rows: u, g, and dO' in place (normalize only).
  auto normalize_from_output = [&](const BwdBuffers& w, int64_t bh, int64_t n0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const float* o = w.O + i * Dp;
      float* d = w.dO + i * Dp;
      const float u = o[Dv] + eps, inv = 1.f / u;
      float g = 0.f;
      for (int64_t e = 0; e < Dv; ++e) g += d[e] * o[e];
      g *= inv;  // dO . out with out = O / u
      for (int64_t e = 0; e < Dv; ++e) d[e] *= inv;
      d[Dv] = -g * inv;
      ug[size_t(2 * (bh * N + n0 + i))] = u;
      ug[size_t(2 * (bh * N + n0 + i) + 1)] = g;
    }
  };
  auto store_dq = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      float* d = w.dQ + i * D16;
      feature_grad(fm, w.Qraw + i * D, d, D);
      scale_all(d, D, scale);
      store_f32(d, p.dtype, tok(b, n0 + i, h, N, H, D), D, p.dq);
    }
  };
  auto store_dkv = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n) {
    const int64_t hk = h / group;
    for (int64_t i = 0; i < n; ++i) {
      float* dk = w.dK + i * D16;
      feature_grad(fm, w.Kraw + i * D, dk, D);
      const float* dv = w.dV + i * Dp;
      if (group == 1) {
        store_f32(dk, p.dtype, tok(b, n0 + i, hk, N, Hkv, D), D, p.dk);
        store_f32(dv, p.dtype, tok(b, n0 + i, hk, N, Hkv, Dv), Dv, p.dv);
      } else {
        std::copy(dk, dk + D, dKh.get() + tok(b, n0 + i, h, N, H, D));
        std::copy(dv, dv + Dv, dVh.get() + tok(b, n0 + i, h, N, H, Dv));
      }
    }
  };
  auto load_chunk = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n,
                        bool with_q = true) {
    const int64_t hk = h / group;
    if (with_q)
      load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, scale, w.Qraw, w.Qt, D16, D16);
    load_features(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, fm, 1.f, w.Kraw, w.Kr, D16, D16);
    load_values(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, full, w.Vt, Dp);
  };

  // Rows of chunk c (if it exists) to prefetch while the current chunk computes.
  auto prefetch_chunk = [&](RowPrefetcher& pf, int64_t b, int64_t h, int64_t c, bool q, bool kv,
                            bool dout) {
    pf.clear();
    if (c < 0 || c >= nch) return;
    const int64_t n0 = c * C, n = std::min(C, N - n0), hk = h / group;
    if (q) pf.add(p.q, p.dtype, b, n0, n, h, N, H, D, 0, D);
    if (kv) {
      pf.add(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, 0, D);
      pf.add(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, 0, Dv);
    }
    if (dout) pf.add(p.dout, p.dtype, b, n0, n, h, N, H, Dv, 0, Dv);
  };

  // The intra-chunk pairs of the gate gradient: g[i] += sum_{j<i} P_ij - sum_{t>i} P_ti with
  // P = (Q~ K~^T) . dA, dA = (dO' V'^T) . M as masked_product left it in w.dA (its causal strips).
  // The scores go to w.A, free at this point; the diagonal is left out (it cancels).
  auto gate_pairs = [&](const BwdBuffers& w, int64_t n, float* g) {
    double rs[C] = {}, cs[C] = {};
    for (int64_t r0 = 0; r0 < n; r0 += S) {
      const int64_t rows = std::min(S, n - r0), c1 = std::min(n, r0 + S);
      kern.gemm_f32(rows, round_up(c1, 16), D, w.Qt + r0 * D16, D16, w.KT, C, w.A + r0 * C, C, false);
      for (int64_t i = r0; i < r0 + rows; ++i)
        for (int64_t j = 0; j < i; ++j) {
          const double x = double(w.A[i * C + j]) * double(w.dA[i * C + j]);
          rs[i] += x;
          cs[j] += x;
        }
    }
    for (int64_t i = 0; i < n; ++i) g[i] += float(rs[i] - cs[i]);
  };

  // Causal pass 1 (forward scan over chunks with the running state H): dq, and u, g for normalize.
  //   dQ~ = Lq (dO' H^T) + ((dO' V'^T) . M) K~
  auto causal_dq = [&](int64_t bh, const BwdBuffers& w) {
    const int64_t b = bh / H, h = bh % H;
    ChunkDecay dec(p.opt.decay[h], gate_of(p.opt.gate, b, h, N, H), H, false, w.M);
    load_state(p.state_in, bh, D, Dv, Ds, full, w.Hs, Dp);
    RowPrefetcher pf;
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      dec.chunk(kern, n0, n, w.dA);
      load_chunk(w, b, h, n0, n);
      load_dout(w, b, h, n0, n);
      prefetch_chunk(pf, b, h, c + 1, true, true, true);
      transpose(w.Kr, D16, n, D, w.KT, C);
      const float* KTd = w.KT;
      if (!dec.one()) {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) w.KTd[d * C + j] = w.KT[d * C + j] * dec.k[j];
        KTd = w.KTd;
      }
      transpose(w.Vt, Dp, n, Ds, w.VT, C);
      if (norm) {  // recompute O' = Lq (Q~ H) + ((Q~ K~^T) . M) V'
        kern.gemm_f32(n, Dp, D, w.Qt, D16, w.Hs, Dp, w.O, Dp, false);
        if (!dec.one()) scale_rows(w.O, Dp, n, Dp, dec.q);
        masked_product(kern, false, n, D, w.Qt, D16, w.KT, w.M, w.A, w.Vt, Dp, Dp, w.O, Dp);
        normalize_from_output(w, bh, n0, n);
      }
      transpose(w.Hs, Dp, D, Ds, w.HT, D16);
      pf.advance(C);
      kern.gemm_f32(n, D16, Ds, w.dO, Dp, w.HT, D16, w.dQ, D16, false);
      if (!dec.one()) scale_rows(w.dQ, D16, n, D16, dec.q);
      float* g = gated ? gq.get() + bh * N + n0 : nullptr;
      if (g)  // q~ . (inter-chunk part of dQ~)
        for (int64_t i = 0; i < n; ++i) g[i] = dot_f32(w.Qt + i * D16, w.dQ + i * D16, D);
      masked_product(kern, false, n, Ds, w.dO, Dp, w.VT, w.M, w.dA, w.Kr, D16, D16, w.dQ, D16, &pf,
                     C / 4);
      if (g) gate_pairs(w, n, g);
      store_dq(w, b, h, n0, n);
      const bool last = c + 1 == nch;
      if (!last || (gated && p.dstate_out)) {
        // after the last chunk: a_{N-1} S_{N-2} (the last token's k v^T left out, see above)
        const int64_t rows = last ? n - 1 : n;
        if (!dec.one()) scale_all(w.Hs, D * Dp, dec.last);
        pf.advance(C);
        if (rows > 0) kern.gemm_f32(D, Dp, rows, KTd, C, w.Vt, Dp, w.Hs, Dp, true);
      }
    }
    if (gated && p.dstate_out && N > 0) {
      float fin = 0.f;
      for (int64_t d = 0; d < D; ++d)
        fin += dot_f32(w.Hs + d * Dp, p.dstate_out + (bh * D + d) * Ds, Ds);
      gq[size_t(bh * N + N - 1)] += fin;
    }
  };

  // Causal pass 2 (reverse scan with the state gradient dH, starting from dS_T): dk, dv, dS0.
  //   dK~ = Lk (V' dH^T) + dA^T Q~,  dV' = Lk (K~ dH) + A^T dO'
  //   dH  = lambda^n dH + (Lq Q~)^T dO'
  auto causal_dkv = [&](int64_t bh, const BwdBuffers& w) {
    const int64_t b = bh / H, h = bh % H;
    ChunkDecay dec(p.opt.decay[h], gate_of(p.opt.gate, b, h, N, H), H, true, w.MT);
    float* dH = w.Hs;
    load_state(p.dstate_out, bh, D, Dv, Ds, full, dH, Dp);
    RowPrefetcher pf;
    for (int64_t c = nch - 1; c >= 0; --c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      dec.chunk(kern, n0, n, w.dA);
      load_chunk(w, b, h, n0, n);
      prefetch_chunk(pf, b, h, c - 1, true, true, true);
      transpose(w.Qt, D16, n, D, w.QT, C);
      const float* QTd = w.QT;
      if (!dec.one()) {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t i = 0; i < n; ++i) w.QTd[d * C + i] = w.QT[d * C + i] * dec.q[i];
        QTd = w.QTd;
      }
      load_dout(w, b, h, n0, n);
      if (norm) normalize_dout(w, bh, n0, n);
      transpose(w.dO, Dp, n, Ds, w.dOT, C);
      // dK~ = Lk (V' dH^T) + dA^T Q~ with dA^T = (V' dO'^T) . M^T
      transpose(dH, Dp, D, Ds, w.HT, D16);
      pf.advance(C / 2);
      kern.gemm_f32(n, D16, Ds, w.Vt, Dp, w.HT, D16, w.dK, D16, false);
      if (!dec.one()) scale_rows(w.dK, D16, n, D16, dec.k);
      if (gated) {  // k~ . (inter-chunk part of dK~); the last token's pair with dS_T is left out
        float* g = gk.get() + bh * N + n0;
        for (int64_t j = 0; j < n; ++j) g[j] = dot_f32(w.Kr + j * D16, w.dK + j * D16, D);
        if (c + 1 == nch) g[n - 1] = 0.f;
      }
      masked_product(kern, true, n, Ds, w.Vt, Dp, w.dOT, w.MT, w.dA, w.Qt, D16, D16, w.dK, D16, &pf,
                     C / 8);
      // dV' = Lk (K~ dH) + A^T dO' with A^T = (K~ Q~^T) . M^T
      pf.advance(C / 2);
      kern.gemm_f32(n, Dp, D, w.Kr, D16, dH, Dp, w.dV, Dp, false);
      if (!dec.one()) scale_rows(w.dV, Dp, n, Dp, dec.k);
      masked_product(kern, true, n, D, w.Kr, D16, w.QT, w.MT, w.A, w.dO, Dp, Dp, w.dV, Dp, &pf,
                     C / 8);
      if (!dec.one()) scale_all(dH, D * Dp, dec.last);
      pf.advance(C);
      kern.gemm_f32(D, Dp, n, QTd, C, w.dO, Dp, dH, Dp, true);
      store_dkv(w, b, h, n0, n);
    }
    if (p.dstate_in) store_state(dH, Dp, bh, D, Dv, Ds, full, true, p.dstate_in);
  };

  // Non-causal: S = S0 + K~^T V'; dQ~ = dO' S^T; dS = dS_T + Q~^T dO'; dK~ = V' dS^T; dV' = K~ dS.
  auto noncausal = [&](int64_t bh, const BwdBuffers& w) {
    const int64_t b = bh / H, h = bh % H;
    float* S = w.Hs;
    load_state(p.state_in, bh, D, Dv, Ds, full, S, Dp);
    RowPrefetcher pf;
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_chunk(w, b, h, n0, n, /*with_q=*/false);
      prefetch_chunk(pf, b, h, c + 1, false, true, false);
      transpose(w.Kr, D16, n, D, w.KT, C);
      pf.advance(2 * C);
      kern.gemm_f32(D, Dp, n, w.KT, C, w.Vt, Dp, S, Dp, true);
    }
    transpose(S, Dp, D, Ds, w.HT, D16);  // S^T
    float* dS = w.dS;
    load_state(p.dstate_out, bh, D, Dv, Ds, full, dS, Dp);
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, scale, w.Qraw, w.Qt, D16, D16);
      load_dout(w, b, h, n0, n);
      prefetch_chunk(pf, b, h, c + 1, true, false, true);
      if (norm) {
        kern.gemm_f32(n, Dp, D, w.Qt, D16, S, Dp, w.O, Dp, false);
        normalize_from_output(w, bh, n0, n);
      }
      pf.advance(C);
      kern.gemm_f32(n, D16, Ds, w.dO, Dp, w.HT, D16, w.dQ, D16, false);
      store_dq(w, b, h, n0, n);
      transpose(w.Qt, D16, n, D, w.QT, C);
      pf.advance(C);
      kern.gemm_f32(D, Dp, n, w.QT, C, w.dO, Dp, dS, Dp, true);
    }
    transpose(dS, Dp, D, Ds, w.HT, D16);  // dS^T
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_chunk(w, b, h, n0, n, /*with_q=*/false);
      prefetch_chunk(pf, b, h, c + 1, false, true, false);
      pf.advance(C);
      kern.gemm_f32(n, D16, Ds, w.Vt, Dp, w.HT, D16, w.dK, D16, false);
      pf.advance(C);
      kern.gemm_f32(n, Dp, D, w.Kr, D16, dS, Dp, w.dV, Dp, false);
      store_dkv(w, b, h, n0, n);
    }
    if (p.dstate_in) store_state(dS, Dp, bh, D, Dv, Ds, full, true, p.dstate_in);
  };

  const int64_t BH = B * H;
  auto buffers = [&](int worker) {
    return BwdBuffers(work.get() + worker * per_worker, D, D16, Dp);
  };
  if (!causal) {
    pool.parallel_for(BH, [&](int64_t t, int worker) { noncausal(t, buffers(worker)); });
  } else if (norm) {
    // The reverse pass needs u and g, which the forward scan produces.
    pool.parallel_for(BH, [&](int64_t t, int worker) { causal_dq(t, buffers(worker)); });
    pool.parallel_for(BH, [&](int64_t t, int worker) { causal_dkv(t, buffers(worker)); });
  } else {
    // Independent scans: one pool job with both, so small batch x head counts still fill the pool.
    pool.parallel_for(2 * BH, [&](int64_t t, int worker) {
      if (t < BH) causal_dkv(t, buffers(worker));
      else causal_dq(t - BH, buffers(worker));
    });
  }

  if (gated) {
    // dg_r = sum_{t >= r} (q~_t . dQ~_t - k~_t . dK~_t), in double
    pool.parallel_for(BH, [&](int64_t bh, int) {
      const int64_t b = bh / H, h = bh % H;
      double acc = 0.0;
      for (int64_t t = N - 1; t >= 0; --t) {
        acc += double(gq[size_t(bh * N + t)]) - double(gk[size_t(bh * N + t)]);
        p.dgate[(b * N + t) * H + h] = float(acc);
      }
    });
  }

  if (group > 1) {
    // dk, dv of kv head hk = sum over its query heads, in head order.
    const int64_t rows = B * N;
    pool.parallel_for(ceil_div(rows, C), [&](int64_t t, int) {
      std::vector<float> acc(static_cast<size_t>(std::max(D, Dv)));
      for (int64_t r = t * C, re = std::min(rows, r + C); r < re; ++r) {
        const int64_t b = r / N, n = r % N;
        for (int64_t hk = 0; hk < Hkv; ++hk) {
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            const float* src = dKh.get() + tok(b, n, h, N, H, D);
            for (int64_t d = 0; d < D; ++d) acc[d] += src[d];
          }
          store_f32(acc.data(), p.dtype, tok(b, n, hk, N, Hkv, D), D, p.dk);
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            const float* src = dVh.get() + tok(b, n, h, N, H, Dv);
            for (int64_t e = 0; e < Dv; ++e) acc[e] += src[e];
          }
          store_f32(acc.data(), p.dtype, tok(b, n, hk, N, Hkv, Dv), Dv, p.dv);
        }
      }
    });
  }
}

}  // namespace

void linear_backward(const LinearBwdParams& p) { backward_impl(p); }

}  // namespace attnkit::cpu
