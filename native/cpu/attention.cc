// The fused softmax attention driver for the CPU: FlashAttention-2 structure over 64 x 64 tiles,
// driven by a mask policy (attnkit/mask_dense.h today; neighborhood and block-sparse policies plug
// into the same templates). Forward: per (batch, head, query tile) task, online softmax over the
// key tiles the policy lists; Full tiles skip element masking. Backward: per (batch, kv head, key
// chunk) task, dK/dV accumulate in registers-to-L1 tiles over the query tiles that see each key
// tile, and dQ goes to a per-chunk float32 partial that a final pass reduces in a fixed order:
// no atomics, and the result does not depend on thread timing.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attnkit/mask_dense.h"
#include "buffer.h"
#include "convert.h"
#include "kernels.h"
#include "thread_pool.h"

namespace attnkit::cpu {
namespace {

constexpr int64_t BQ = 64;  // query rows per tile
constexpr int64_t BK = 64;  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
const float kNegInf = -std::numeric_limits<float>::infinity();

// Element offset of token n, head h in a [B, N, heads, dim] tensor.
inline int64_t tok(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t dim) {
  return ((b * N + n) * heads + h) * dim;
}

// ---------------------------------------------------------------- forward

template <typename Mask>
void forward_impl(const AttentionFwdParams& p, const Mask& mask) {
  static const char* op = "attention";
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const bool dot = kern.gemm_bf16 != nullptr && p.dtype == DType::BFloat16;
  // Head dim padded (with zeros) to what the bf16 GEMM consumes per step: pairs, or 32 for AMX.
  const int64_t D2 = round_up(D, dot ? kern.bf16_k_align : 2), Dv16 = round_up(Dv, 16);
  const int64_t nkt = ceil_div(Nk, BK), nqt = ceil_div(Nq, BQ);
  const int64_t group = H / Hkv;
  const float c = p.scale * kLog2e;

  // Pack K^T and V once per (b, kv head): float32 [kt][D][BK] and [Nk_pad][Dv16], or bfloat16
  // pairs [kt][D2/2][BK][2] and [kt][BK/2][Dv16][2] for the dot-product path. Padding is zero.
  const int64_t kt_elems = dot ? D2 * BK : D * BK;
  const int64_t vt_elems = BK * Dv16;
  Scratch<float> KT, V;
  Scratch<uint16_t> KTb, Vb;
  if (dot) {
    KTb = Scratch<uint16_t>(size_t(B * Hkv * nkt * kt_elems), op);
    Vb = Scratch<uint16_t>(size_t(B * Hkv * nkt * vt_elems), op);
  } else {
    KT = Scratch<float>(size_t(B * Hkv * nkt * kt_elems), op);
    V = Scratch<float>(size_t(B * Hkv * nkt * vt_elems), op);
  }
  pool.parallel_for(B * Hkv * nkt, [&](int64_t t, int) {
    const int64_t kt = t % nkt, bh = t / nkt, b = bh / Hkv, hk = bh % Hkv;
    const int64_t k0 = kt * BK, kn = std::min(BK, Nk - k0);
    float row[1024];
    if (dot) {
      uint16_t* kd = KTb.get() + t * kt_elems;
      uint16_t* vd = Vb.get() + t * vt_elems;
      std::fill(kd, kd + kt_elems, uint16_t(0));
      std::fill(vd, vd + vt_elems, uint16_t(0));
      const uint16_t* kin = static_cast<const uint16_t*>(p.k);
      const uint16_t* vin = static_cast<const uint16_t*>(p.v);
      for (int64_t j = 0; j < kn; ++j) {
        const uint16_t* kr = kin + tok(b, k0 + j, hk, Nk, Hkv, D);
        for (int64_t d = 0; d < D; ++d) kd[((d >> 1) * BK + j) * 2 + (d & 1)] = kr[d];
        const uint16_t* vr = vin + tok(b, k0 + j, hk, Nk, Hkv, Dv);
        for (int64_t e = 0; e < Dv; ++e) vd[((j >> 1) * Dv16 + e) * 2 + (j & 1)] = vr[e];
      }
    } else {
      float* kd = KT.get() + t * kt_elems;
      float* vd = V.get() + t * vt_elems;
      std::fill(kd, kd + kt_elems, 0.f);
      std::fill(vd, vd + vt_elems, 0.f);
      for (int64_t j = 0; j < kn; ++j) {
        load_f32(p.k, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, D), D, row);
        for (int64_t d = 0; d < D; ++d) kd[d * BK + j] = row[d];
        load_f32(p.v, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, Dv), Dv, vd + j * Dv16);
      }
    }
  });

  // Per-worker scratch: Q tile, S, P, O accumulators, running max and sum.
  const int64_t q_elems = BQ * D2, s_elems = BQ * BK, o_elems = BQ * Dv16;
  const int64_t per_worker = q_elems + 2 * s_elems + o_elems + 17 * BQ;
  Scratch<float> work(size_t(pool.size() * per_worker), op);

  pool.parallel_for(B * H * nqt, [&](int64_t t, int worker) {
    // Heaviest tiles first (under a causal mask the last query tiles see the most keys).
    const int64_t qt = nqt - 1 - t % nqt, bh = t / nqt, b = bh / H, h = bh % H;
    const int64_t hk = h / group, kvbase = (b * Hkv + hk) * nkt;
    const int64_t q0 = qt * BQ, q1 = std::min(Nq, q0 + BQ), rows = q1 - q0;
    float* Qf = work.get() + worker * per_worker;
    float* S = Qf + q_elems;
    float* P = S + s_elems;
    float* O = P + s_elems;
    float* m = O + o_elems;
    float* l = m + BQ;
    uint16_t* Qb = reinterpret_cast<uint16_t*>(Qf);
    uint16_t* Pb = reinterpret_cast<uint16_t*>(P);

    for (int64_t r = 0; r < rows; ++r) {
      if (dot) {
        const uint16_t* qin = static_cast<const uint16_t*>(p.q) + tok(b, q0 + r, h, Nq, H, D);
        std::copy(qin, qin + D, Qb + r * D2);
        std::fill(Qb + r * D2 + D, Qb + (r + 1) * D2, uint16_t(0));
      } else {
        load_f32(p.q, p.dtype, tok(b, q0 + r, h, Nq, H, D), D, Qf + r * D);
      }
      m[r] = kNegInf;
    }
    std::fill(l, l + 16 * rows, 0.f);
    std::fill(O, O + rows * Dv16, 0.f);

    int64_t lo, hi;
    mask.key_range(q0, q1, &lo, &hi);
    for (int64_t kt = lo < hi ? lo / BK : 0, kt_end = lo < hi ? ceil_div(hi, BK) : 0; kt < kt_end;
         ++kt) {
      const int64_t k0 = kt * BK, kn = std::min(BK, Nk - k0);
      const TileClass cls = mask.classify(q0, q1, k0, k0 + kn);
      if (cls == TileClass::Skip) continue;
      if (dot)
        kern.gemm_bf16(rows, BK, D2 / 2, Qb, D2, KTb.get() + (kvbase + kt) * kt_elems, S, BK,
                       false);
      else
        kern.gemm_f32(rows, BK, D, Qf, D, KT.get() + (kvbase + kt) * kt_elems, BK, S, BK, false);
      if (cls == TileClass::Partial || kn < BK) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < BK; ++j)
            if (j >= kn || !mask.allows(q0 + r, k0 + j)) S[r * BK + j] = kNegInf;
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
      float sum = 0.f;
      for (int i = 0; i < 16; ++i) sum += l[16 * r + i];
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      float* o = O + r * Dv16;
      for (int64_t e = 0; e < Dv; ++e) o[e] *= inv;
      store_f32(o, p.dtype, tok(b, q0 + r, h, Nq, H, Dv), Dv, p.out);
      p.lse[(b * Nq + q0 + r) * H + h] = sum > 0.f ? (m[r] + std::log2(sum)) * kLn2 : kNegInf;
    }
  });
}

// ---------------------------------------------------------------- backward

template <typename Mask>
void backward_impl(const AttentionBwdParams& p, const Mask& mask) {
  static const char* op = "attentionBackward";
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const int64_t D16 = round_up(D, 16), Dv16 = round_up(Dv, 16);
  const int64_t nkt = ceil_div(Nk, BK), nqt = ceil_div(Nq, BQ);
  const int64_t group = H / Hkv;
  const float c = p.scale * kLog2e;

  // Pre-pass over queries: float32 Q [B][H][Nq][D16] and dO [B][H][Nq][Dv16] (zero padded), the
  // row terms delta = rowsum(dO * O) - dLSE and LSE in log2 units.
  Scratch<float> Qf(size_t(B * H * Nq * D16), op), dOf(size_t(B * H * Nq * Dv16), op);
  Scratch<float> delta(size_t(B * H * Nq), op), lse2(size_t(B * H * Nq), op);
  pool.parallel_for(B * H * nqt, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bh = t / nqt, b = bh / H, h = bh % H;
    float orow[1024];
    for (int64_t q = qt * BQ, qe = std::min(Nq, q + BQ); q < qe; ++q) {
      const int64_t row = bh * Nq + q;
      float* qd = Qf.get() + row * D16;
      load_f32(p.q, p.dtype, tok(b, q, h, Nq, H, D), D, qd);
      std::fill(qd + D, qd + D16, 0.f);
      float* dd = dOf.get() + row * Dv16;
      load_f32(p.dout, p.dtype, tok(b, q, h, Nq, H, Dv), Dv, dd);
      std::fill(dd + Dv, dd + Dv16, 0.f);
      load_f32(p.out, p.dtype, tok(b, q, h, Nq, H, Dv), Dv, orow);
      double acc = 0;
      for (int64_t e = 0; e < Dv; ++e) acc += double(dd[e]) * orow[e];
      const int64_t li = (b * Nq + q) * H + h;
      delta[row] = float(acc) - (p.dlse ? p.dlse[li] : 0.f);
      lse2[row] = p.lse[li] * kLog2e;
    }
  });

  // Pre-pass over keys: float32 K [kt][BK][D16], K^T [kt][D][BK], V^T [kt][Dv][BK] per (b, kv head).
  const int64_t kr_elems = BK * D16, kt_elems = D * BK, vt_elems = Dv * BK;
  Scratch<float> Kr(size_t(B * Hkv * nkt * kr_elems), op);
  Scratch<float> KT(size_t(B * Hkv * nkt * kt_elems), op), VT(size_t(B * Hkv * nkt * vt_elems), op);
  pool.parallel_for(B * Hkv * nkt, [&](int64_t t, int) {
    const int64_t kt = t % nkt, bh = t / nkt, b = bh / Hkv, hk = bh % Hkv;
    const int64_t k0 = kt * BK, kn = std::min(BK, Nk - k0);
    float* kr = Kr.get() + t * kr_elems;
    float* kd = KT.get() + t * kt_elems;
    float* vd = VT.get() + t * vt_elems;
    std::fill(kr, kr + kr_elems, 0.f);
    std::fill(kd, kd + kt_elems, 0.f);
    std::fill(vd, vd + vt_elems, 0.f);
    float row[1024];
    for (int64_t j = 0; j < kn; ++j) {
      load_f32(p.k, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, D), D, kr + j * D16);
      for (int64_t d = 0; d < D; ++d) kd[d * BK + j] = kr[j * D16 + d];
      load_f32(p.v, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, Dv), Dv, row);
      for (int64_t e = 0; e < Dv; ++e) vd[e * BK + j] = row[e];
    }
  });

  // Split each (b, kv head)'s key tiles into `chunks` so that small batch x head counts still
  // fill the pool; each chunk owns a float32 dQ partial.
  const int64_t units = B * Hkv;
  const int64_t chunks =
      nkt == 0 ? 1 : std::clamp<int64_t>(ceil_div(2 * pool.size(), units), 1, nkt);
  const int64_t tiles_per_chunk = nkt == 0 ? 0 : ceil_div(nkt, chunks);
  const int64_t dq_elems = B * H * Nq * D16;
  Scratch<float> dQp(size_t(chunks * dq_elems), op, /*zero=*/true);

  const int64_t acc_elems = BK * D16 + BK * Dv16;
  const int64_t per_worker = acc_elems + 4 * BQ * BK;
  Scratch<float> work(size_t(pool.size() * per_worker), op);

  pool.parallel_for(units * chunks, [&](int64_t t, int worker) {
    const int64_t chunk = t % chunks, bhk = t / chunks, b = bhk / Hkv, hk = bhk % Hkv;
    float* dK = work.get() + worker * per_worker;
    float* dV = dK + BK * D16;
    float* S = dV + BK * Dv16;  // scores, then probabilities P
    float* dP = S + BQ * BK;    // dP, then dS in place
    float* PT = dP + BQ * BK;   // P^T, then dS^T
    float* P = PT + BQ * BK;
    float* dQ = dQp.get() + chunk * dq_elems;
    for (int64_t kt = chunk * tiles_per_chunk, ke = std::min(nkt, kt + tiles_per_chunk); kt < ke;
         ++kt) {
      const int64_t k0 = kt * BK, kn = std::min(BK, Nk - k0), kidx = bhk * nkt + kt;
      const float* kr = Kr.get() + kidx * kr_elems;
      const float* kd = KT.get() + kidx * kt_elems;
      const float* vd = VT.get() + kidx * vt_elems;
      std::fill(dK, dK + acc_elems, 0.f);
      int64_t qlo, qhi;
      mask.query_range(k0, k0 + kn, &qlo, &qhi);
      for (int64_t h = hk * group; h < (hk + 1) * group && qlo < qhi; ++h) {
        const int64_t bh = b * H + h;
        for (int64_t qt = qlo / BQ; qt * BQ < qhi; ++qt) {
          const int64_t q0 = qt * BQ, q1 = std::min(Nq, q0 + BQ), rows = q1 - q0;
          const TileClass cls = mask.classify(q0, q1, k0, k0 + kn);
          if (cls == TileClass::Skip) continue;
          const float* Q = Qf.get() + (bh * Nq + q0) * D16;
          const float* dO = dOf.get() + (bh * Nq + q0) * Dv16;
          kern.gemm_f32(rows, BK, D, Q, D16, kd, BK, S, BK, false);
          kern.bwd_probs(rows, BK, S, BK, c, lse2.get() + bh * Nq + q0, P, BK);
          if (cls == TileClass::Partial || kn < BK) {
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < BK; ++j)
                if (j >= kn || !mask.allows(q0 + r, k0 + j)) P[r * BK + j] = 0.f;
          }
          // dV += P^T dO
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < BK; ++j) PT[j * BQ + r] = P[r * BK + j];
          kern.gemm_f32(BK, Dv16, rows, PT, BQ, dO, Dv16, dV, Dv16, true);
          // dS = P * (dO V^T - delta)
          kern.gemm_f32(rows, BK, Dv, dO, Dv16, vd, BK, dP, BK, false);
          kern.bwd_dscore(rows, BK, P, BK, dP, BK, delta.get() + bh * Nq + q0);
          // dK += dS^T Q ; dQ += dS K   (scale applied once at the end)
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < BK; ++j) PT[j * BQ + r] = dP[r * BK + j];
          kern.gemm_f32(BK, D16, rows, PT, BQ, Q, D16, dK, D16, true);
          kern.gemm_f32(rows, D16, BK, dP, BK, kr, D16, dQ + (bh * Nq + q0) * D16, D16, true);
        }
      }
      for (int64_t j = 0; j < kn; ++j) {
        float* dk = dK + j * D16;
        for (int64_t d = 0; d < D; ++d) dk[d] *= p.scale;
        store_f32(dk, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, D), D, p.dk);
        store_f32(dV + j * Dv16, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, Dv), Dv, p.dv);
      }
    }
  });

  // dQ = scale * sum over chunks, in chunk order.
  pool.parallel_for(B * H * nqt, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bh = t / nqt, b = bh / H, h = bh % H;
    float row[1024];
    for (int64_t q = qt * BQ, qe = std::min(Nq, q + BQ); q < qe; ++q) {
      const float* src = dQp.get() + (bh * Nq + q) * D16;
      for (int64_t d = 0; d < D; ++d) {
        float acc = 0.f;
        for (int64_t ch = 0; ch < chunks; ++ch) acc += src[ch * dq_elems + d];
        row[d] = acc * p.scale;
      }
      store_f32(row, p.dtype, tok(b, q, h, Nq, H, D), D, p.dq);
    }
  });
}

// Backward with bfloat16 GEMMs (used where the bf16 GEMM runs on AMX tiles, which on such CPUs is
// an order of magnitude faster than float32 FMA). Same structure as backward_impl; P and dS are
// rounded to bfloat16 before their products, as FlashAttention 2 does for bf16 inputs. To keep every
// operand in the layout the GEMM wants without per-tile transposes, dV and dK accumulate
// transposed: dV^T += dO^T P and dK^T += Q^T dS, where P and dS enter as row-pair packed B
// operands (cheap to build) and Q^T, dO^T are prepared once per query tile.
template <typename Mask>
void backward_bf16_impl(const AttentionBwdParams& p, const Mask& mask) {
  static const char* op = "attentionBackward";
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const auto& s = p.shape;
  const int64_t B = s.B, Nq = s.Nq, Nk = s.Nk, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv;
  const int64_t KA = kern.bf16_k_align;
  const int64_t D16 = round_up(D, 16), Dv16 = round_up(Dv, 16);
  const int64_t DK = round_up(D, KA), DvK = round_up(Dv, KA);
  const int64_t nkt = ceil_div(Nk, BK), nqt = ceil_div(Nq, BQ);
  const int64_t group = H / Hkv;
  const float c = p.scale * kLog2e;
  const uint16_t* qin = static_cast<const uint16_t*>(p.q);
  const uint16_t* kin = static_cast<const uint16_t*>(p.k);
  const uint16_t* vin = static_cast<const uint16_t*>(p.v);
  const uint16_t* doin = static_cast<const uint16_t*>(p.dout);

  // Per query tile (zero padded to BQ rows): Q and dO as rows [BQ][DK], [BQ][DvK] (A operands of
  // S and dP) and transposed [D16][BQ], [Dv16][BQ] (A operands of dK^T and dV^T).
  const int64_t qr_elems = BQ * DK, dor_elems = BQ * DvK, qt_elems = D16 * BQ, dot_elems = Dv16 * BQ;
  Scratch<uint16_t> Qr(size_t(B * H * nqt * qr_elems), op), dOr(size_t(B * H * nqt * dor_elems), op);
  Scratch<uint16_t> Qt(size_t(B * H * nqt * qt_elems), op), dOt(size_t(B * H * nqt * dot_elems), op);
  Scratch<float> delta(size_t(B * H * Nq), op), lse2(size_t(B * H * Nq), op);
  pool.parallel_for(B * H * nqt, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bh = t / nqt, b = bh / H, h = bh % H;
    uint16_t* qr = Qr.get() + t * qr_elems;
    uint16_t* dr = dOr.get() + t * dor_elems;
    uint16_t* qtr = Qt.get() + t * qt_elems;
    uint16_t* dtr = dOt.get() + t * dot_elems;
    std::fill(qr, qr + qr_elems, uint16_t(0));
    std::fill(dr, dr + dor_elems, uint16_t(0));
    std::fill(qtr, qtr + qt_elems, uint16_t(0));
    std::fill(dtr, dtr + dot_elems, uint16_t(0));
    float orow[1024], drow[1024];
    for (int64_t r = 0, q = qt * BQ; r < BQ && q < Nq; ++r, ++q) {
      const uint16_t* qi = qin + tok(b, q, h, Nq, H, D);
      const uint16_t* di = doin + tok(b, q, h, Nq, H, Dv);
      for (int64_t d = 0; d < D; ++d) qr[r * DK + d] = qtr[d * BQ + r] = qi[d];
      for (int64_t e = 0; e < Dv; ++e) dr[r * DvK + e] = dtr[e * BQ + r] = di[e];
      load_f32(p.out, p.dtype, tok(b, q, h, Nq, H, Dv), Dv, orow);
      load_f32(p.dout, p.dtype, tok(b, q, h, Nq, H, Dv), Dv, drow);
      double acc = 0;
      for (int64_t e = 0; e < Dv; ++e) acc += double(drow[e]) * orow[e];
      const int64_t li = (b * Nq + q) * H + h;
      delta[bh * Nq + q] = float(acc) - (p.dlse ? p.dlse[li] : 0.f);
      lse2[bh * Nq + q] = p.lse[li] * kLog2e;
    }
  });

  // Per key tile: K^T and V^T as pair-packed B operands [DK/2][BK][2], [DvK/2][BK][2] (of S, dP)
  // and K as pair-packed [BK/2][D16][2] (of dQ).
  const int64_t ktp_elems = DK * BK, vtp_elems = DvK * BK, kp_elems = BK * D16;
  Scratch<uint16_t> KTp(size_t(B * Hkv * nkt * ktp_elems), op), VTp(size_t(B * Hkv * nkt * vtp_elems), op);
  Scratch<uint16_t> Kp(size_t(B * Hkv * nkt * kp_elems), op);
  pool.parallel_for(B * Hkv * nkt, [&](int64_t t, int) {
    const int64_t kt = t % nkt, bh = t / nkt, b = bh / Hkv, hk = bh % Hkv;
    const int64_t k0 = kt * BK, kn = std::min(BK, Nk - k0);
    uint16_t* ktp = KTp.get() + t * ktp_elems;
    uint16_t* vtp = VTp.get() + t * vtp_elems;
    uint16_t* kp = Kp.get() + t * kp_elems;
    std::fill(ktp, ktp + ktp_elems, uint16_t(0));
    std::fill(vtp, vtp + vtp_elems, uint16_t(0));
    std::fill(kp, kp + kp_elems, uint16_t(0));
    for (int64_t j = 0; j < kn; ++j) {
      const uint16_t* kr = kin + tok(b, k0 + j, hk, Nk, Hkv, D);
      const uint16_t* vr = vin + tok(b, k0 + j, hk, Nk, Hkv, Dv);
      for (int64_t d = 0; d < D; ++d) {
        ktp[((d >> 1) * BK + j) * 2 + (d & 1)] = kr[d];
        kp[((j >> 1) * D16 + d) * 2 + (j & 1)] = kr[d];
      }
      for (int64_t e = 0; e < Dv; ++e) vtp[((e >> 1) * BK + j) * 2 + (e & 1)] = vr[e];
    }
  });

  const int64_t units = B * Hkv;
  const int64_t chunks =
      nkt == 0 ? 1 : std::clamp<int64_t>(ceil_div(2 * pool.size(), units), 1, nkt);
  const int64_t tiles_per_chunk = nkt == 0 ? 0 : ceil_div(nkt, chunks);
  const int64_t dq_elems = B * H * Nq * D16;
  Scratch<float> dQp(size_t(chunks * dq_elems), op, /*zero=*/true);

  // Per worker: dK^T [D16][BK], dV^T [Dv16][BK] float32; S/P, dP/dS float32 [BQ][BK]; P and dS as
  // row pairs [BQ/2][BK][2] and dS as rows [BQ][BK] in bfloat16.
  const int64_t f_elems = D16 * BK + Dv16 * BK + 2 * BQ * BK;
  const int64_t h_elems = 3 * BQ * BK;
  const int64_t per_worker = f_elems + (h_elems + 1) / 2 + 16;
  Scratch<float> work(size_t(pool.size() * per_worker), op);

  pool.parallel_for(units * chunks, [&](int64_t t, int worker) {
    const int64_t chunk = t % chunks, bhk = t / chunks, b = bhk / Hkv, hk = bhk % Hkv;
    float* dKt = work.get() + worker * per_worker;
    float* dVt = dKt + D16 * BK;
    float* P = dVt + Dv16 * BK;
    float* dS = P + BQ * BK;
    uint16_t* Pp = reinterpret_cast<uint16_t*>(dS + BQ * BK);
    uint16_t* dSp = Pp + BQ * BK;
    uint16_t* dSr = dSp + BQ * BK;
    float* dQ = dQp.get() + chunk * dq_elems;
    for (int64_t kt = chunk * tiles_per_chunk, ke = std::min(nkt, kt + tiles_per_chunk); kt < ke;
         ++kt) {
      const int64_t k0 = kt * BK, kn = std::min(BK, Nk - k0), kidx = bhk * nkt + kt;
      const uint16_t* ktp = KTp.get() + kidx * ktp_elems;
      const uint16_t* vtp = VTp.get() + kidx * vtp_elems;
      const uint16_t* kp = Kp.get() + kidx * kp_elems;
      std::fill(dKt, dKt + (D16 + Dv16) * BK, 0.f);
      int64_t qlo, qhi;
      mask.query_range(k0, k0 + kn, &qlo, &qhi);
      for (int64_t h = hk * group; h < (hk + 1) * group && qlo < qhi; ++h) {
        const int64_t bh = b * H + h;
        for (int64_t qt = qlo / BQ; qt * BQ < qhi; ++qt) {
          const int64_t q0 = qt * BQ, q1 = std::min(Nq, q0 + BQ), rows = q1 - q0;
          const TileClass cls = mask.classify(q0, q1, k0, k0 + kn);
          if (cls == TileClass::Skip) continue;
          const int64_t qidx = bh * nqt + qt;
          kern.gemm_bf16(rows, BK, DK / 2, Qr.get() + qidx * qr_elems, DK, ktp, P, BK, false);
          kern.bwd_probs(rows, BK, P, BK, c, lse2.get() + bh * Nq + q0, P, BK);
          if (cls == TileClass::Partial || kn < BK) {
            for (int64_t r = 0; r < rows; ++r)
              for (int64_t j = 0; j < BK; ++j)
                if (j >= kn || !mask.allows(q0 + r, k0 + j)) P[r * BK + j] = 0.f;
          }
          kern.pack_row_pairs_bf16(rows, BQ / 2, BK, P, BK, Pp);
          // dV^T += dO^T P
          kern.gemm_bf16(Dv16, BK, BQ / 2, dOt.get() + qidx * dot_elems, BQ, Pp, dVt, BK, true);
          // dS = P * (dO V^T - delta)
          kern.gemm_bf16(rows, BK, DvK / 2, dOr.get() + qidx * dor_elems, DvK, vtp, dS, BK, false);
          kern.bwd_dscore(rows, BK, P, BK, dS, BK, delta.get() + bh * Nq + q0);
          kern.pack_row_pairs_bf16(rows, BQ / 2, BK, dS, BK, dSp);
          kern.rows_to_bf16(rows, BK, dS, BK, dSr, BK);
          // dK^T += Q^T dS ; dQ += dS K   (scale applied once at the end)
          kern.gemm_bf16(D16, BK, BQ / 2, Qt.get() + qidx * qt_elems, BQ, dSp, dKt, BK, true);
          kern.gemm_bf16(rows, D16, BK / 2, dSr, BK, kp, dQ + (bh * Nq + q0) * D16, D16, true);
        }
      }
      float row[1024];
      for (int64_t j = 0; j < kn; ++j) {
        for (int64_t d = 0; d < D; ++d) row[d] = dKt[d * BK + j] * p.scale;
        store_f32(row, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, D), D, p.dk);
        for (int64_t e = 0; e < Dv; ++e) row[e] = dVt[e * BK + j];
        store_f32(row, p.dtype, tok(b, k0 + j, hk, Nk, Hkv, Dv), Dv, p.dv);
      }
    }
  });

  pool.parallel_for(B * H * nqt, [&](int64_t t, int) {
    const int64_t qt = t % nqt, bh = t / nqt, b = bh / H, h = bh % H;
    float row[1024];
    for (int64_t q = qt * BQ, qe = std::min(Nq, q + BQ); q < qe; ++q) {
      const float* src = dQp.get() + (bh * Nq + q) * D16;
      for (int64_t d = 0; d < D; ++d) {
        float acc = 0.f;
        for (int64_t ch = 0; ch < chunks; ++ch) acc += src[ch * dq_elems + d];
        row[d] = acc * p.scale;
      }
      store_f32(row, p.dtype, tok(b, q, h, Nq, H, D), D, p.dq);
    }
  });
}

}  // namespace

void attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mo) {
  forward_impl(p, DenseMask::make(p.shape.Nq, p.shape.Nk, mo.causal, mo.left, mo.right));
}

void attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mo) {
  const DenseMask mask = DenseMask::make(p.shape.Nq, p.shape.Nk, mo.causal, mo.left, mo.right);
  // bf16 GEMMs pay off only on AMX; vdpbf16ps runs at half the FMA rate on Sapphire Rapids.
  if (p.dtype == DType::BFloat16 && active_kernels().isa == Isa::Amx)
    backward_bf16_impl(p, mask);
  else
    backward_impl(p, mask);
}

// ---------------------------------------------------------------- merge

void merge_forward(const MergeParams& p) {
  constexpr int64_t kRows = 256;
  ThreadPool::instance().parallel_for(ceil_div(p.rows, kRows), [&](int64_t t, int) {
    float acc[1024], o[1024];
    for (int64_t r = t * kRows, re = std::min(p.rows, r + kRows); r < re; ++r) {
      float mx = kNegInf;
      for (int i = 0; i < p.parts; ++i) mx = std::max(mx, p.lses[i][r]);
      std::fill(acc, acc + p.dv, 0.f);
      if (mx == kNegInf) {
        store_f32(acc, p.dtype, r * p.dv, p.dv, p.out);
        p.lse[r] = kNegInf;
        continue;
      }
      double total = 0;
      for (int i = 0; i < p.parts; ++i) total += std::exp(double(p.lses[i][r]) - mx);
      for (int i = 0; i < p.parts; ++i) {
        const float w = float(std::exp(double(p.lses[i][r]) - mx) / total);
        if (w == 0.f) continue;
        load_f32(p.outs[i], p.dtype, r * p.dv, p.dv, o);
        for (int64_t e = 0; e < p.dv; ++e) acc[e] += w * o[e];
      }
      store_f32(acc, p.dtype, r * p.dv, p.dv, p.out);
      p.lse[r] = float(mx + std::log(total));
    }
  });
}

void merge_backward(const MergeBwdParams& p) {
  constexpr int64_t kRows = 256;
  ThreadPool::instance().parallel_for(ceil_div(p.rows, kRows), [&](int64_t t, int) {
    float dout[1024], out[1024], o[1024], g[1024];
    for (int64_t r = t * kRows, re = std::min(p.rows, r + kRows); r < re; ++r) {
      load_f32(p.dout, p.dtype, r * p.dv, p.dv, dout);
      load_f32(p.out, p.dtype, r * p.dv, p.dv, out);
      const float dl = p.dlse ? p.dlse[r] : 0.f;
      for (int i = 0; i < p.parts; ++i) {
        // w_i = exp(lse_i - lse); d out_i = w_i dOut; d lse_i = w_i (dOut . (out_i - out) + dLSE)
        const float li = p.lses[i][r];
        const float w = (li == kNegInf || p.lse[r] == kNegInf) ? 0.f : std::exp(li - p.lse[r]);
        load_f32(p.outs[i], p.dtype, r * p.dv, p.dv, o);
        double dot = 0;
        for (int64_t e = 0; e < p.dv; ++e) {
          g[e] = w * dout[e];
          dot += double(dout[e]) * (o[e] - out[e]);
        }
        store_f32(g, p.dtype, r * p.dv, p.dv, p.douts[i]);
        p.dlses[i][r] = w == 0.f ? 0.f : float(w * (dot + dl));
      }
    }
  });
}

}  // namespace attnkit::cpu
