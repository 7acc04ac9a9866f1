// CPU linear attention, forward and decode step (the math: docs/linear.md; the shared pieces and
// the notation: linear_chunk.h; the backward: linear_backward.cc).
#include "linear_chunk.h"

namespace attnkit::cpu {
namespace {
using namespace linear_chunk;

// ---------------------------------------------------------------- forward

void forward_impl(const LinearFwdParams& p) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const LinearShape& s = p.shape;
  const int64_t B = s.B, N = s.N, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = s.state_cols();
  check_gate(p.opt.gate, B, N, H, false, kFwdOp);
  const bool norm = s.normalize, causal = p.opt.causal;
  const int64_t group = H / Hkv, nch = ceil_div(N, C);
  const FeatureMap fm = p.opt.feature_map;

  // Value-column tiles: one per (batch, head) unless that leaves threads idle; then split the
  // value columns (16 at least per tile). Each tile recomputes the intra-chunk scores, so tiles are
  // only made to fill the pool. With normalize every tile carries its own key-sum column.
  int64_t nvt = 1;
  if (B * H < 2 * pool.size() && Dv > 16)
    nvt = std::min(ceil_div(Dv, 16), ceil_div(2 * pool.size(), B * H));
  const int64_t W = round_up(ceil_div(Dv, nvt), 16);
  nvt = ceil_div(Dv, W);
  const int64_t Wp = round_up(W + (norm ? 1 : 0), 16);

  const int64_t per_worker = round_up(C * D, 16) + 3 * round_up(D * C, 16) + 2 * C * Wp +
                             2 * C * C + D * Wp + Wp + 64;
  Scratch<float> work(size_t(pool.size() * per_worker), kFwdOp, /*zero=*/true);

  pool.parallel_for(B * H * nvt, [&](int64_t t, int worker) {
    const int64_t vt = t % nvt, bh = t / nvt, b = bh / H, h = bh % H, hk = h / group;
    const Tile tile{vt * W, std::min(W, Dv - vt * W), norm};
    Carve cv{work.get() + worker * per_worker};
    float* Qt = cv.take(C * D);   // [C x D] scale * phi(q)
    float* KT = cv.take(D * C);   // [D x C] phi(k)^T
    float* KTd = cv.take(D * C);  // [D x C] (Lk phi(k))^T
    float* Kr = cv.take(D * C);   // [C x D] phi(k) rows before transposing
    float* Vt = cv.take(C * Wp);  // [C x Wp] V'
    float* O = cv.take(C * Wp);   // [C x Wp]
    float* A = cv.take(C * C);    // [C x C] masked scores
    float* M = cv.take(C * C);    // [C x C] decay matrix
    float* Hs = cv.take(D * Wp);  // [D x Wp] running state
    float* orow = cv.take(Wp);
    // non-causal: no decay and no gate (both refused above the kernel)
    ChunkDecay dec(causal ? p.opt.decay[h] : 1.0, causal ? gate_of(p.opt.gate, b, h, N, H) : nullptr,
                   H, false, M);
    load_state(p.state_in, bh, D, Dv, Ds, tile, Hs, Wp);

    auto load_keys = [&](int64_t n0, int64_t n) {
      load_features(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, fm, 1.f, nullptr, Kr, D, D);
      transpose(Kr, D, n, D, KT, C);
      if (!dec.one())
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) KTd[d * C + j] = KT[d * C + j] * dec.k[j];
      load_values(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, tile, Vt, Wp);
    };
    // O rows -> out (normalize: divide by the key-sum column plus eps)
    auto store_out = [&](int64_t n0, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const float* o = O + i * Wp;
        if (norm) {
          const float inv = 1.f / (o[tile.w] + p.opt.eps);
          for (int64_t e = 0; e < tile.w; ++e) orow[e] = o[e] * inv;
          o = orow;
        }
        store_f32(o, p.dtype, tok(b, n0 + i, h, N, H, Dv) + tile.e0, tile.w, p.out);
      }
    };

    // The next chunk's q, k and v rows, requested a few at a time while this chunk computes.
    RowPrefetcher pf;
    auto prefetch = [&](int64_t c, bool q, bool kv) {
      pf.clear();
      if (c >= nch) return;
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      if (q) pf.add(p.q, p.dtype, b, n0, n, h, N, H, D, 0, D);
      if (kv) {
        pf.add(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, 0, D);
        pf.add(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, tile.e0, tile.w);
      }
    };

    if (causal) {
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t n0 = c * C, n = std::min(C, N - n0);
        dec.chunk(kern, n0, n, A);
        load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, p.opt.scale, nullptr, Qt, D, D);
        load_keys(n0, n);
        prefetch(c + 1, true, true);
        // O = Lq (Q~ H)
        pf.advance(C / 2);
        kern.gemm_f32(n, Wp, D, Qt, D, Hs, Wp, O, Wp, false);
        if (!dec.one()) scale_rows(O, Wp, n, Wp, dec.q);
        // O += ((Q~ K~^T) . M) V' (8 GEMMs: C / 4 rows prefetched before each)
        masked_product(kern, false, n, D, Qt, D, KT, M, A, Vt, Wp, Wp, O, Wp, &pf, C / 4);
        store_out(n0, n);
        // H = lambda^n H + (Lk K~)^T V'
        if (!dec.one()) scale_all(Hs, D * Wp, dec.last);
        pf.advance(C / 2);
        kern.gemm_f32(D, Wp, n, dec.one() ? KT : KTd, C, Vt, Wp, Hs, Wp, true);
      }
    } else {
      // S = S0 + K~^T V', then O = Q~ S.
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t n0 = c * C, n = std::min(C, N - n0);
        load_keys(n0, n);
        prefetch(c + 1, false, true);
        pf.advance(2 * C);
        kern.gemm_f32(D, Wp, n, KT, C, Vt, Wp, Hs, Wp, true);
      }
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t n0 = c * C, n = std::min(C, N - n0);
        load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, p.opt.scale, nullptr, Qt, D, D);
        prefetch(c + 1, true, false);
        pf.advance(C);
        kern.gemm_f32(n, Wp, D, Qt, D, Hs, Wp, O, Wp, false);
        store_out(n0, n);
      }
    }
    if (p.state_out) store_state(Hs, Wp, bh, D, Dv, Ds, tile, vt == 0, p.state_out);
  });
}

}  // namespace

void linear_forward(const LinearFwdParams& p) { forward_impl(p); }

// One token: S' = a S + phi(k) [v, 1]^T with a = lambda exp(g) (the gate g: [B, H]),
// out = scale phi(q)^T S' (/ (den + eps)).
void linear_step(const LinearStepParams& p) {
  const LinearShape& s = p.shape;
  const int64_t B = s.B, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = s.state_cols();
  check_gate(p.opt.gate, B, 1, H, true, "linearAttentionStep");
  const int64_t group = H / Hkv;
  const bool norm = s.normalize;
  ThreadPool::instance().parallel_for(B * H, [&](int64_t bh, int) {
    const int64_t b = bh / H, h = bh % H, hk = h / group;
    std::vector<float> q(static_cast<size_t>(D)), k(static_cast<size_t>(D)),
        v(static_cast<size_t>(Ds)), o(static_cast<size_t>(Ds), 0.f);
    load_f32(p.q, p.dtype, (b * H + h) * D, D, q.data());
    load_f32(p.k, p.dtype, (b * Hkv + hk) * D, D, k.data());
    load_f32(p.v, p.dtype, (b * Hkv + hk) * Dv, Dv, v.data());
    if (norm) v[size_t(Dv)] = 1.f;
    feature(p.opt.feature_map, q.data(), D);
    feature(p.opt.feature_map, k.data(), D);
    // the chunked path's factor for one token (its q[0]), flushed below 1e-30 the same way
    const double a = p.opt.decay[h] * (p.opt.gate ? std::exp(double(p.opt.gate[bh])) : 1.0);
    const float lambda = a < 1e-30 ? 0.f : float(a);
    for (int64_t d = 0; d < D; ++d) {
      const float* in = p.state_in ? p.state_in + (bh * D + d) * Ds : nullptr;
      float* out = p.state_out + (bh * D + d) * Ds;
      const float qd = q[size_t(d)] * p.opt.scale, kd = k[size_t(d)];
      for (int64_t e = 0; e < Ds; ++e) {
        const float x = (in ? lambda * in[e] : 0.f) + kd * v[size_t(e)];
        out[e] = x;
        o[size_t(e)] += qd * x;
      }
    }
    if (norm) {
      const float inv = 1.f / (o[size_t(Dv)] + p.opt.eps);
      for (int64_t e = 0; e < Dv; ++e) o[size_t(e)] *= inv;
    }
    store_f32(o.data(), p.dtype, (b * H + h) * Dv, Dv, p.out);
  });
}

}  // namespace attnkit::cpu
