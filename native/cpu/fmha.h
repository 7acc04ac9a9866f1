// The fused softmax attention drivers for the CPU, templated on a mask policy (attnkit/mask.h):
// FlashAttention-2 structure over kTile x kTile tiles. Every softmax op (dense, neighborhood, and
// block-sparse next) is one of these drivers plus a policy; only the policy differs.
//
// Forward: one task per (batch, head, group, query tile); online softmax in log2 units over the key
// tiles the policy lists; Full tiles skip element masking, Partial ones apply the policy's row
// masks. Keys and values are packed once per (batch, kv head, group, key tile) into the layout the
// GEMM wants, gathering tokens through the policy's position -> token map (for neighborhood
// attention this *is* the token permutation, at no extra pass).
// Backward: one task per (batch, kv head, group, chunk of key tiles); dK/dV accumulate per key tile
// over the query tiles that can see it (the policy's inverse lists); dQ goes to a per-chunk float32
// partial that a last pass reduces in a fixed order: no atomics, and results never depend on
// thread timing. Included by the generic translation units only (never by kernels_<isa>.cc).
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/mask.h"
#include "buffer.h"
#include "convert.h"
#include "kernels.h"
#include "thread_pool.h"

namespace attnkit::cpu::fmha {

constexpr int64_t BQ = kTile;  // query rows per tile
constexpr int64_t BK = kTile;  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
inline float neg_inf() { return -std::numeric_limits<float>::infinity(); }

// Element offset of token n, head h in a [B, N, heads, dim] tensor.
inline int64_t tok(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t dim) {
  return ((b * N + n) * heads + h) * dim;
}

// ---------------------------------------------------------------- forward

template <typename Mask>
void forward(const AttentionFwdParams& p, const Mask& mask, const char* op) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const int64_t G = mask.groups(), nqt = mask.max_q_tiles(), nkt = mask.max_k_tiles();
  const bool dot = kern.gemm_bf16 != nullptr && p.dtype == DType::BFloat16;
  // Head dim padded (with zeros) to what the bf16 GEMM consumes per step: pairs, or 32 for AMX.
  const int64_t D2 = round_up(D, dot ? kern.bf16_k_align : 2), Dv16 = round_up(Dv, 16);
  const int64_t group = H / Hkv;
  const float c = p.scale * kLog2e;

  // Pack K^T and V per (b, kv head, group, key tile): float32 [D][BK] and [BK][Dv16], or bfloat16
  // pairs [D2/2][BK][2] and [BK/2][Dv16][2] for the dot-product path. Padding is zero.
  const int64_t kt_elems = dot ? D2 * BK : D * BK;
  const int64_t vt_elems = BK * Dv16;
  const int64_t ntiles = B * Hkv * G * nkt;
  Scratch<float> KT, V;
  Scratch<uint16_t> KTb, Vb;
  if (dot) {
    KTb = Scratch<uint16_t>(size_t(ntiles * kt_elems), op);
    Vb = Scratch<uint16_t>(size_t(ntiles * vt_elems), op);
  } else {
    KT = Scratch<float>(size_t(ntiles * kt_elems), op);
    V = Scratch<float>(size_t(ntiles * vt_elems), op);
  }
  pool.parallel_for(ntiles, [&](int64_t t, int) {
    const int64_t kt = t % nkt, rest = t / nkt, g = rest % G, bh = rest / G;
    const int64_t b = bh / Hkv, hk = bh % Hkv;
    const auto gp = mask.group(g, b, hk * group);
    float row[1024];
    if (dot) {
      uint16_t* kd = KTb.get() + t * kt_elems;
      uint16_t* vd = Vb.get() + t * vt_elems;
      std::fill(kd, kd + kt_elems, uint16_t(0));
      std::fill(vd, vd + vt_elems, uint16_t(0));
      if (kt >= gp.k_tiles()) return;
      const uint16_t* kin = static_cast<const uint16_t*>(p.k);
      const uint16_t* vin = static_cast<const uint16_t*>(p.v);
      int64_t toks[BK];
      gp.k_tile_tokens(kt, toks);
      // K^T pairs: 32-bit words (k[j][2i], k[j][2i+1]) moved whole; V pairs interleave rows 2i and
      // 2i+1 word by word. (Packing is O(N D) but shows at low block-sparse densities.)
      uint32_t* kd32 = reinterpret_cast<uint32_t*>(kd);
      uint32_t* vd32 = reinterpret_cast<uint32_t*>(vd);
      const uint16_t zero_row[1024] = {};
      for (int64_t j = 0; j < BK; ++j) {
        const int64_t n = toks[j];
        if (n < 0) continue;
        const uint16_t* kr = kin + tok(b, n, hk, Nk, Hkv, D);
        for (int64_t d = 0; d + 1 < D; d += 2) kd32[(d >> 1) * BK + j] = uint32_t(kr[d]) | uint32_t(kr[d + 1]) << 16;
        if (D & 1) kd[((D >> 1) * BK + j) * 2] = kr[D - 1];
      }
      for (int64_t j = 0; j < BK; j += 2) {
        const int64_t n0 = toks[j], n1 = toks[j + 1];
        if (n0 < 0 && n1 < 0) continue;
        const uint16_t* v0 = n0 < 0 ? zero_row : vin + tok(b, n0, hk, Nk, Hkv, Dv);
        const uint16_t* v1 = n1 < 0 ? zero_row : vin + tok(b, n1, hk, Nk, Hkv, Dv);
        uint32_t* dst = vd32 + (j >> 1) * Dv16;
        for (int64_t e = 0; e < Dv; ++e) dst[e] = uint32_t(v0[e]) | uint32_t(v1[e]) << 16;
      }
    } else {
      float* kd = KT.get() + t * kt_elems;
      float* vd = V.get() + t * vt_elems;
      std::fill(kd, kd + kt_elems, 0.f);
      std::fill(vd, vd + vt_elems, 0.f);
      if (kt >= gp.k_tiles()) return;
      int64_t toks[BK];
      gp.k_tile_tokens(kt, toks);
      for (int64_t j = 0; j < BK; ++j) {
        const int64_t n = toks[j];
        if (n < 0) continue;
        load_f32(p.k, p.dtype, tok(b, n, hk, Nk, Hkv, D), D, row);
        for (int64_t d = 0; d < D; ++d) kd[d * BK + j] = row[d];
        load_f32(p.v, p.dtype, tok(b, n, hk, Nk, Hkv, Dv), Dv, vd + j * Dv16);
      }
    }
  });

  // Per-worker scratch: Q tile, S, P, O accumulators, running max, 16 partial sums per row, masks.
  const int64_t q_elems = BQ * D2, s_elems = BQ * BK, o_elems = BQ * Dv16;
  const int64_t per_worker = q_elems + 2 * s_elems + o_elems + 17 * BQ + 2 * BQ;
  Scratch<float> work(size_t(pool.size() * per_worker), op);

  // Tasks in decreasing order of the key tiles they visit (longest first), so that ragged
  // workloads (causal, top-k block selections) balance over the pool's dynamic schedule.
  const int64_t ntasks = B * H * G * nqt;
  std::vector<int64_t> order(static_cast<size_t>(ntasks));
  {
    std::vector<int64_t> cost(static_cast<size_t>(ntasks));
    for (int64_t t = 0; t < ntasks; ++t) {
      const int64_t qt = t % nqt, rest = t / nqt, g = rest % G, bh = rest / G;
      const auto gp = mask.group(g, bh / H, bh % H);
      cost[size_t(t)] = qt < gp.q_tiles() ? gp.kv_count(qt) : -1;
      order[size_t(t)] = t;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return cost[size_t(a)] > cost[size_t(b)]; });
  }
  pool.parallel_for(ntasks, [&](int64_t i, int worker) {
    const int64_t t = order[size_t(i)];
    const int64_t qt = t % nqt, rest = t / nqt, g = rest % G, bh = rest / G;
    const int64_t b = bh / H, h = bh % H, hk = h / group;
    const auto gp = mask.group(g, b, h);
    if (qt >= gp.q_tiles()) return;
    const int64_t kvbase = ((b * Hkv + hk) * G + g) * nkt;
    const int64_t rows = gp.q_rows(qt);
    float* Qf = work.get() + worker * per_worker;
    float* S = Qf + q_elems;
    float* P = S + s_elems;
    float* O = P + s_elems;
    float* m = O + o_elems;
    float* l = m + BQ;
    uint64_t* masks = reinterpret_cast<uint64_t*>(l + 16 * BQ);
    uint16_t* Qb = reinterpret_cast<uint16_t*>(Qf);
    uint16_t* Pb = reinterpret_cast<uint16_t*>(P);

    int64_t qtok[BQ];
    gp.q_tile_tokens(qt, qtok);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = qtok[r];
      if (dot) {
        uint16_t* dst = Qb + r * D2;
        std::fill(dst, dst + D2, uint16_t(0));
        if (n >= 0) {
          const uint16_t* qin = static_cast<const uint16_t*>(p.q) + tok(b, n, h, Nq, H, D);
          std::copy(qin, qin + D, dst);
        }
      } else if (n >= 0) {
        load_f32(p.q, p.dtype, tok(b, n, h, Nq, H, D), D, Qf + r * D);
      } else {
        std::fill(Qf + r * D, Qf + (r + 1) * D, 0.f);
      }
      m[r] = neg_inf();
    }
    std::fill(l, l + 16 * rows, 0.f);
    std::fill(O, O + rows * Dv16, 0.f);

    for (int64_t i = 0, count = gp.kv_count(qt); i < count; ++i) {
      const int64_t kt = gp.kv_at(qt, i);
      const TileClass cls = gp.classify(qt, kt);
      if (cls == TileClass::Skip) continue;
      if (dot)
        kern.gemm_bf16(rows, BK, D2 / 2, Qb, D2, KTb.get() + (kvbase + kt) * kt_elems, S, BK,
                       false);
      else
        kern.gemm_f32(rows, BK, D, Qf, D, KT.get() + (kvbase + kt) * kt_elems, BK, S, BK, false);
      if (cls == TileClass::Partial) {
        gp.tile_masks(qt, kt, masks);
        kern.mask_rows(rows, S, BK, masks, neg_inf());
      }
      kern.softmax_step(rows, BK, S, BK, c, m, l, O, Dv16, Dv16, dot ? nullptr : P,
                        dot ? Pb : nullptr, BK);
      if (dot)
        kern.gemm_bf16(rows, Dv16, BK / 2, Pb, BK, Vb.get() + (kvbase + kt) * vt_elems, O, Dv16,
                       true);
      else
        kern.gemm_f32(rows, Dv16, BK, P, BK, V.get() + (kvbase + kt) * vt_elems, Dv16, O, Dv16,
                      true);
    }

    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = qtok[r];
      if (n < 0) continue;
      float sum = 0.f;
      for (int i = 0; i < 16; ++i) sum += l[16 * r + i];
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      float* o = O + r * Dv16;
      for (int64_t e = 0; e < Dv; ++e) o[e] *= inv;
      store_f32(o, p.dtype, tok(b, n, h, Nq, H, Dv), Dv, p.out);
      p.lse[(b * Nq + n) * H + h] = sum > 0.f ? (m[r] + std::log2(sum)) * kLn2 : neg_inf();
    }
  });
}

// ---------------------------------------------------------------- backward, float32 GEMMs

// The per-row terms of every backward, for query token n of (b, h) given its dO row (float32):
// delta = rowsum(dO * O) - dLSE (accumulated in double), and the LSE in log2 units.
inline void row_terms(const AttentionBwdParams& p, int64_t b, int64_t n, int64_t h, const float* dout,
                      float* delta, float* lse2) {
  const auto& s = p.shape;
  float orow[1024];
  load_f32(p.out, p.dtype, tok(b, n, h, s.Nq, s.H, s.Dv), s.Dv, orow);
  double acc = 0;
  for (int64_t e = 0; e < s.Dv; ++e) acc += double(dout[e]) * orow[e];
  const int64_t li = (b * s.Nq + n) * s.H + h;
  *delta = float(acc) - (p.dlse ? p.dlse[li] : 0.f);
  *lse2 = p.lse[li] * kLog2e;
}

// dq = scale * sum over chunks (in chunk order) of the partials, mapped back to tokens.
template <typename Mask>
void reduce_dq(const AttentionBwdParams& p, const Mask& mask, const float* dQp, int64_t chunks,
               int64_t dq_elems, int64_t D16) {
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, H = s.H, D = s.D;
  const int64_t G = mask.groups(), nqt = mask.max_q_tiles(), Pq = nqt * BQ;
  ThreadPool::instance().parallel_for(B * H * G * nqt, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bhg = t / nqt, g = bhg % G, bh = bhg / G, b = bh / H, h = bh % H;
    const auto gp = mask.group(g, b, h);
    if (qt >= gp.q_tiles()) return;
    float row[1024];
    int64_t toks[BQ];
    gp.q_tile_tokens(qt, toks);
    for (int64_t pos = qt * BQ; pos < (qt + 1) * BQ; ++pos) {
      const int64_t n = toks[pos - qt * BQ];
      if (n < 0) continue;
      const float* src = dQp + (bhg * Pq + pos) * D16;
      for (int64_t d = 0; d < D; ++d) {
        float acc = 0.f;
        for (int64_t ch = 0; ch < chunks; ++ch) acc += src[ch * dq_elems + d];
        row[d] = acc * p.scale;
      }
      store_f32(row, p.dtype, tok(b, n, h, Nq, H, D), D, p.dq);
    }
  });
}


// Rows of the query-side prepass: per (b, h, group) Pq = nqt * BQ positions.
template <typename Mask>
void backward_f32(const AttentionBwdParams& p, const Mask& mask, const char* op) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const int64_t G = mask.groups(), nqt = mask.max_q_tiles(), nkt = mask.max_k_tiles();
  const int64_t Pq = nqt * BQ;
  const int64_t D16 = round_up(D, 16), Dv16 = round_up(Dv, 16);
  const int64_t group = H / Hkv;
  const float c = p.scale * kLog2e;

  // Pre-pass over queries: float32 Q [.][Pq][D16] and dO [.][Pq][Dv16] (zero padded), the row
  // terms delta = rowsum(dO * O) - dLSE, and LSE in log2 units (-inf on padding rows).
  // Also Q^T [D][BQ] and dO^T [Dv][BQ] per query tile: the A operands of dK^T += Q^T dS and
  // dV^T += dO^T P, which accumulate transposed so that no per-tile transpose is needed.
  const int64_t qrows = B * H * G * Pq;
  Scratch<float> Qf(size_t(qrows * D16), op), dOf(size_t(qrows * Dv16), op);
  Scratch<float> QT(size_t(qrows * D), op), dOT(size_t(qrows * Dv), op);
  Scratch<float> delta(size_t(qrows), op), lse2(size_t(qrows), op);
  pool.parallel_for(B * H * G * nqt, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bhg = t / nqt, g = bhg % G, bh = bhg / G, b = bh / H, h = bh % H;
    const auto gp = mask.group(g, b, h);
    int64_t toks[BQ];
    if (qt < gp.q_tiles()) gp.q_tile_tokens(qt, toks);
    float* qtr = QT.get() + t * D * BQ;
    float* dtr = dOT.get() + t * Dv * BQ;
    for (int64_t pos = qt * BQ; pos < (qt + 1) * BQ; ++pos) {
      const int64_t row = bhg * Pq + pos;
      float* qd = Qf.get() + row * D16;
      float* dd = dOf.get() + row * Dv16;
      std::fill(qd, qd + D16, 0.f);
      std::fill(dd, dd + Dv16, 0.f);
      const int64_t n = qt < gp.q_tiles() ? toks[pos - qt * BQ] : -1;
      if (n < 0) {
        delta[row] = 0.f;
        lse2[row] = neg_inf();
        continue;
      }
      load_f32(p.q, p.dtype, tok(b, n, h, Nq, H, D), D, qd);
      load_f32(p.dout, p.dtype, tok(b, n, h, Nq, H, Dv), Dv, dd);
      row_terms(p, b, n, h, dd, &delta[row], &lse2[row]);
    }
    // transposes of the tile (padding rows are zero in Qf / dOf)
    for (int64_t r = 0; r < BQ; ++r) {
      const float* qd = Qf.get() + (bhg * Pq + qt * BQ + r) * D16;
      const float* dd = dOf.get() + (bhg * Pq + qt * BQ + r) * Dv16;
      for (int64_t d = 0; d < D; ++d) qtr[d * BQ + r] = qd[d];
      for (int64_t e = 0; e < Dv; ++e) dtr[e * BQ + r] = dd[e];
    }
  });

  // Pre-pass over keys: float32 K [BK][D16], K^T [D][BK], V^T [Dv][BK] per tile.
  const int64_t kr_elems = BK * D16, kt_elems = D * BK, vt_elems = Dv * BK;
  const int64_t ntiles = B * Hkv * G * nkt;
  Scratch<float> Kr(size_t(ntiles * kr_elems), op);
  Scratch<float> KT(size_t(ntiles * kt_elems), op), VT(size_t(ntiles * vt_elems), op);
  pool.parallel_for(ntiles, [&](int64_t t, int) {
    const int64_t kt = t % nkt, rest = t / nkt, g = rest % G, bh = rest / G;
    const int64_t b = bh / Hkv, hk = bh % Hkv;
    const auto gp = mask.group(g, b, hk * group);
    float* kr = Kr.get() + t * kr_elems;
    float* kd = KT.get() + t * kt_elems;
    float* vd = VT.get() + t * vt_elems;
    std::fill(kr, kr + kr_elems, 0.f);
    std::fill(kd, kd + kt_elems, 0.f);
    std::fill(vd, vd + vt_elems, 0.f);
    if (kt >= gp.k_tiles()) return;
    float row[1024];
    int64_t toks[BK];
    gp.k_tile_tokens(kt, toks);
    for (int64_t j = 0; j < BK; ++j) {
      const int64_t n = toks[j];
      if (n < 0) continue;
      load_f32(p.k, p.dtype, tok(b, n, hk, Nk, Hkv, D), D, kr + j * D16);
      for (int64_t d = 0; d < D; ++d) kd[d * BK + j] = kr[j * D16 + d];
      load_f32(p.v, p.dtype, tok(b, n, hk, Nk, Hkv, Dv), Dv, row);
      for (int64_t e = 0; e < Dv; ++e) vd[e * BK + j] = row[e];
    }
  });

  // Split each (b, kv head, group)'s key tiles into `chunks` so that small batch x head counts
  // still fill the pool; each chunk owns a float32 dQ partial.
  const int64_t units = B * Hkv * G;
  const int64_t chunks = nkt == 0 ? 1 : std::clamp<int64_t>(ceil_div(2 * pool.size(), units), 1, nkt);
  const int64_t tiles_per_chunk = nkt == 0 ? 0 : ceil_div(nkt, chunks);
  const int64_t dq_elems = qrows * D16;
  Scratch<float> dQp(size_t(chunks * dq_elems), op, /*zero=*/true);

  const int64_t acc_elems = D * BK + Dv * BK;
  const int64_t per_worker = acc_elems + 3 * BQ * BK + 2 * BQ;
  Scratch<float> work(size_t(pool.size() * per_worker), op);

  pool.parallel_for(units * chunks, [&](int64_t t, int worker) {
    const int64_t chunk = t % chunks, unit = t / chunks, g = unit % G, bhk = unit / G;
    const int64_t b = bhk / Hkv, hk = bhk % Hkv;
    const auto gp = mask.group(g, b, hk * group);
    float* dKt = work.get() + worker * per_worker;  // dK^T [D][BK]
    float* dVt = dKt + D * BK;                      // dV^T [Dv][BK]
    float* S = dVt + Dv * BK;                       // scores
    float* dP = S + BQ * BK;                        // dP, then dS in place
    float* P = dP + BQ * BK;
    uint64_t* masks = reinterpret_cast<uint64_t*>(P + BQ * BK);
    float* dQ = dQp.get() + chunk * dq_elems;
    const int64_t kend = std::min(gp.k_tiles(), (chunk + 1) * tiles_per_chunk);
    for (int64_t kt = chunk * tiles_per_chunk; kt < kend; ++kt) {
      const int64_t kidx = unit * nkt + kt;
      const float* kr = Kr.get() + kidx * kr_elems;
      const float* kd = KT.get() + kidx * kt_elems;
      const float* vd = VT.get() + kidx * vt_elems;
      std::fill(dKt, dKt + acc_elems, 0.f);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const auto gh = mask.group(g, b, h);  // the query lists may differ per head
        const int64_t qcount = gh.q_count(kt);
        const int64_t bhg = (b * H + h) * G + g, rowbase = bhg * Pq;
        for (int64_t i = 0; i < qcount; ++i) {
          const int64_t qt = gh.q_at(kt, i);
          const TileClass cls = gh.classify(qt, kt);
          if (cls == TileClass::Skip) continue;
          const int64_t q0 = qt * BQ, rows = gh.q_rows(qt), qidx = bhg * nqt + qt;
          const float* Q = Qf.get() + (rowbase + q0) * D16;
          const float* dO = dOf.get() + (rowbase + q0) * Dv16;
          kern.gemm_f32(rows, BK, D, Q, D16, kd, BK, S, BK, false);
          kern.bwd_probs(rows, BK, S, BK, c, lse2.get() + rowbase + q0, P, BK);
          if (cls == TileClass::Partial) {
            gh.tile_masks(qt, kt, masks);
            kern.mask_rows(rows, P, BK, masks, 0.f);
          }
          // dV^T += dO^T P
          kern.gemm_f32(Dv, BK, rows, dOT.get() + qidx * Dv * BQ, BQ, P, BK, dVt, BK, true);
          // dS = P * (dO V^T - delta)
          kern.gemm_f32(rows, BK, Dv, dO, Dv16, vd, BK, dP, BK, false);
          kern.bwd_dscore(rows, BK, P, BK, dP, BK, delta.get() + rowbase + q0);
          // dK^T += Q^T dS ; dQ += dS K   (scale applied once at the end)
          kern.gemm_f32(D, BK, rows, QT.get() + qidx * D * BQ, BQ, dP, BK, dKt, BK, true);
          kern.gemm_f32(rows, D16, BK, dP, BK, kr, D16, dQ + (rowbase + q0) * D16, D16, true);
        }
      }
      int64_t toks[BK];
      gp.k_tile_tokens(kt, toks);
      float row[1024];
      for (int64_t j = 0; j < BK; ++j) {
        const int64_t n = toks[j];
        if (n < 0) continue;
        for (int64_t d = 0; d < D; ++d) row[d] = dKt[d * BK + j] * p.scale;
        store_f32(row, p.dtype, tok(b, n, hk, Nk, Hkv, D), D, p.dk);
        for (int64_t e = 0; e < Dv; ++e) row[e] = dVt[e * BK + j];
        store_f32(row, p.dtype, tok(b, n, hk, Nk, Hkv, Dv), Dv, p.dv);
      }
    }
  });
  reduce_dq(p, mask, dQp.get(), chunks, dq_elems, D16);
}

// ---------------------------------------------------------------- backward, bfloat16 GEMMs

// Used where the bf16 GEMM runs on AMX tiles (an order of magnitude faster than float32 FMA there).
// Same structure as backward_f32; P and dS are rounded to bfloat16 before their products, as
// FlashAttention 2 does for bf16 inputs. To keep every operand in the layout the GEMM wants without
// per-tile transposes, dV and dK accumulate transposed: dV^T += dO^T P and dK^T += Q^T dS, where P
// and dS enter as row-pair packed B operands and Q^T, dO^T are prepared once per query tile.
template <typename Mask>
void backward_bf16(const AttentionBwdParams& p, const Mask& mask, const char* op) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const int64_t G = mask.groups(), nqt = mask.max_q_tiles(), nkt = mask.max_k_tiles();
  const int64_t Pq = nqt * BQ;
  const int64_t KA = kern.bf16_k_align;
  const int64_t D16 = round_up(D, 16), Dv16 = round_up(Dv, 16);
  const int64_t DK = round_up(D, KA), DvK = round_up(Dv, KA);
  const int64_t group = H / Hkv;
  const float c = p.scale * kLog2e;
  const uint16_t* qin = static_cast<const uint16_t*>(p.q);
  const uint16_t* kin = static_cast<const uint16_t*>(p.k);
  const uint16_t* vin = static_cast<const uint16_t*>(p.v);
  const uint16_t* doin = static_cast<const uint16_t*>(p.dout);

  // Per query tile (zero padded): Q and dO as rows [BQ][DK], [BQ][DvK] (A operands of S and dP)
  // and transposed [D16][BQ], [Dv16][BQ] (A operands of dK^T and dV^T).
  const int64_t qr_elems = BQ * DK, dor_elems = BQ * DvK, qt_elems = D16 * BQ, dot_elems = Dv16 * BQ;
  const int64_t nqtiles = B * H * G * nqt, qrows = nqtiles * BQ;
  Scratch<uint16_t> Qr(size_t(nqtiles * qr_elems), op), dOr(size_t(nqtiles * dor_elems), op);
  Scratch<uint16_t> Qt(size_t(nqtiles * qt_elems), op), dOt(size_t(nqtiles * dot_elems), op);
  Scratch<float> delta(size_t(qrows), op), lse2(size_t(qrows), op);
  pool.parallel_for(nqtiles, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bhg = t / nqt, g = bhg % G, bh = bhg / G, b = bh / H, h = bh % H;
    const auto gp = mask.group(g, b, h);
    uint16_t* qr = Qr.get() + t * qr_elems;
    uint16_t* dr = dOr.get() + t * dor_elems;
    uint16_t* qtr = Qt.get() + t * qt_elems;
    uint16_t* dtr = dOt.get() + t * dot_elems;
    std::fill(qr, qr + qr_elems, uint16_t(0));
    std::fill(dr, dr + dor_elems, uint16_t(0));
    std::fill(qtr, qtr + qt_elems, uint16_t(0));
    std::fill(dtr, dtr + dot_elems, uint16_t(0));
    float drow[1024];
    int64_t toks[BQ];
    if (qt < gp.q_tiles()) gp.q_tile_tokens(qt, toks);
    for (int64_t r = 0; r < BQ; ++r) {
      const int64_t row = t * BQ + r;
      const int64_t n = qt < gp.q_tiles() ? toks[r] : -1;
      if (n < 0) {
        delta[row] = 0.f;
        lse2[row] = neg_inf();
        continue;
      }
      const uint16_t* qi = qin + tok(b, n, h, Nq, H, D);
      const uint16_t* di = doin + tok(b, n, h, Nq, H, Dv);
      for (int64_t d = 0; d < D; ++d) qr[r * DK + d] = qtr[d * BQ + r] = qi[d];
      for (int64_t e = 0; e < Dv; ++e) dr[r * DvK + e] = dtr[e * BQ + r] = di[e];
      load_f32(p.dout, p.dtype, tok(b, n, h, Nq, H, Dv), Dv, drow);
      row_terms(p, b, n, h, drow, &delta[row], &lse2[row]);
    }
  });

  // Per key tile: K^T and V^T as pair-packed B operands [DK/2][BK][2], [DvK/2][BK][2] (of S, dP)
  // and K as pair-packed [BK/2][D16][2] (of dQ).
  const int64_t ktp_elems = DK * BK, vtp_elems = DvK * BK, kp_elems = BK * D16;
  const int64_t ntiles = B * Hkv * G * nkt;
  Scratch<uint16_t> KTp(size_t(ntiles * ktp_elems), op), VTp(size_t(ntiles * vtp_elems), op);
  Scratch<uint16_t> Kp(size_t(ntiles * kp_elems), op);
  pool.parallel_for(ntiles, [&](int64_t t, int) {
    const int64_t kt = t % nkt, rest = t / nkt, g = rest % G, bh = rest / G;
    const int64_t b = bh / Hkv, hk = bh % Hkv;
    const auto gp = mask.group(g, b, hk * group);
    uint16_t* ktp = KTp.get() + t * ktp_elems;
    uint16_t* vtp = VTp.get() + t * vtp_elems;
    uint16_t* kp = Kp.get() + t * kp_elems;
    std::fill(ktp, ktp + ktp_elems, uint16_t(0));
    std::fill(vtp, vtp + vtp_elems, uint16_t(0));
    std::fill(kp, kp + kp_elems, uint16_t(0));
    if (kt >= gp.k_tiles()) return;
    int64_t toks[BK];
    gp.k_tile_tokens(kt, toks);
    for (int64_t j = 0; j < BK; ++j) {
      const int64_t n = toks[j];
      if (n < 0) continue;
      const uint16_t* kr = kin + tok(b, n, hk, Nk, Hkv, D);
      const uint16_t* vr = vin + tok(b, n, hk, Nk, Hkv, Dv);
      for (int64_t d = 0; d < D; ++d) {
        ktp[((d >> 1) * BK + j) * 2 + (d & 1)] = kr[d];
        kp[((j >> 1) * D16 + d) * 2 + (j & 1)] = kr[d];
      }
      for (int64_t e = 0; e < Dv; ++e) vtp[((e >> 1) * BK + j) * 2 + (e & 1)] = vr[e];
    }
  });

  const int64_t units = B * Hkv * G;
  const int64_t chunks = nkt == 0 ? 1 : std::clamp<int64_t>(ceil_div(2 * pool.size(), units), 1, nkt);
  const int64_t tiles_per_chunk = nkt == 0 ? 0 : ceil_div(nkt, chunks);
  const int64_t dq_elems = qrows * D16;
  Scratch<float> dQp(size_t(chunks * dq_elems), op, /*zero=*/true);

  // Per worker: dK^T [D16][BK], dV^T [Dv16][BK] float32; P, dS float32 [BQ][BK]; P and dS as row
  // pairs [BQ/2][BK][2] and dS as rows [BQ][BK] in bfloat16; row masks.
  const int64_t f_elems = D16 * BK + Dv16 * BK + 2 * BQ * BK;
  const int64_t h_elems = 3 * BQ * BK;
  const int64_t per_worker = f_elems + (h_elems + 1) / 2 + 2 * BQ + 16;
  Scratch<float> work(size_t(pool.size() * per_worker), op);

  pool.parallel_for(units * chunks, [&](int64_t t, int worker) {
    const int64_t chunk = t % chunks, unit = t / chunks, g = unit % G, bhk = unit / G;
    const int64_t b = bhk / Hkv, hk = bhk % Hkv;
    const auto gp = mask.group(g, b, hk * group);
    float* dKt = work.get() + worker * per_worker;
    float* dVt = dKt + D16 * BK;
    float* P = dVt + Dv16 * BK;
    float* dS = P + BQ * BK;
    uint16_t* Pp = reinterpret_cast<uint16_t*>(dS + BQ * BK);
    uint16_t* dSp = Pp + BQ * BK;
    uint16_t* dSr = dSp + BQ * BK;
    uint64_t* masks = reinterpret_cast<uint64_t*>(dSr + BQ * BK + 32);
    float* dQ = dQp.get() + chunk * dq_elems;
    const int64_t kend = std::min(gp.k_tiles(), (chunk + 1) * tiles_per_chunk);
    for (int64_t kt = chunk * tiles_per_chunk; kt < kend; ++kt) {
      const int64_t kidx = unit * nkt + kt;
      const uint16_t* ktp = KTp.get() + kidx * ktp_elems;
      const uint16_t* vtp = VTp.get() + kidx * vtp_elems;
      const uint16_t* kp = Kp.get() + kidx * kp_elems;
      std::fill(dKt, dKt + (D16 + Dv16) * BK, 0.f);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const auto gh = mask.group(g, b, h);  // the query lists may differ per head
        const int64_t qcount = gh.q_count(kt);
        const int64_t bhg = (b * H + h) * G + g;
        for (int64_t i = 0; i < qcount; ++i) {
          const int64_t qt = gh.q_at(kt, i);
          const TileClass cls = gh.classify(qt, kt);
          if (cls == TileClass::Skip) continue;
          const int64_t q0 = qt * BQ, rows = gh.q_rows(qt), qidx = bhg * nqt + qt;
          const int64_t row0 = bhg * Pq + q0;
          kern.gemm_bf16(rows, BK, DK / 2, Qr.get() + qidx * qr_elems, DK, ktp, P, BK, false);
          kern.bwd_probs(rows, BK, P, BK, c, lse2.get() + row0, P, BK);
          if (cls == TileClass::Partial) {
            gh.tile_masks(qt, kt, masks);
            kern.mask_rows(rows, P, BK, masks, 0.f);
          }
          kern.pack_row_pairs_bf16(rows, BQ / 2, BK, P, BK, Pp);
          // dV^T += dO^T P
          kern.gemm_bf16(Dv16, BK, BQ / 2, dOt.get() + qidx * dot_elems, BQ, Pp, dVt, BK, true);
          // dS = P * (dO V^T - delta)
          kern.gemm_bf16(rows, BK, DvK / 2, dOr.get() + qidx * dor_elems, DvK, vtp, dS, BK, false);
          kern.bwd_dscore(rows, BK, P, BK, dS, BK, delta.get() + row0);
          kern.pack_row_pairs_bf16(rows, BQ / 2, BK, dS, BK, dSp);
          kern.rows_to_bf16(rows, BK, dS, BK, dSr, BK);
          // dK^T += Q^T dS ; dQ += dS K   (scale applied once at the end)
          kern.gemm_bf16(D16, BK, BQ / 2, Qt.get() + qidx * qt_elems, BQ, dSp, dKt, BK, true);
          kern.gemm_bf16(rows, D16, BK / 2, dSr, BK, kp, dQ + row0 * D16, D16, true);
        }
      }
      float row[1024];
      int64_t toks[BK];
      gp.k_tile_tokens(kt, toks);
      for (int64_t j = 0; j < BK; ++j) {
        const int64_t n = toks[j];
        if (n < 0) continue;
        for (int64_t d = 0; d < D; ++d) row[d] = dKt[d * BK + j] * p.scale;
        store_f32(row, p.dtype, tok(b, n, hk, Nk, Hkv, D), D, p.dk);
        for (int64_t e = 0; e < Dv; ++e) row[e] = dVt[e * BK + j];
        store_f32(row, p.dtype, tok(b, n, hk, Nk, Hkv, Dv), Dv, p.dv);
      }
    }
  });
  reduce_dq(p, mask, dQp.get(), chunks, dq_elems, D16);
}

// bf16 GEMMs pay off only on AMX; vdpbf16ps runs at half the FMA rate on Sapphire Rapids.
template <typename Mask>
void backward(const AttentionBwdParams& p, const Mask& mask, const char* op) {
  if (p.dtype == DType::BFloat16 && active_kernels().isa == Isa::Amx)
    backward_bf16(p, mask, op);
  else
    backward_f32(p, mask, op);
}

}  // namespace attnkit::cpu::fmha
