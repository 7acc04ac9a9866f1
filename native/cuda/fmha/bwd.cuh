// Fused attention backward (FlashAttention-2 structure) for one mask policy, in three deterministic
// kernels (no atomics: every output element is written by exactly one CTA, in a fixed order):
//   prep  per query row: delta = rowsum(dO * O) - dLSE and LSE * log2(e) into a float32 workspace
//         laid out per (b, h) over the query tokens, tile-padded (+inf LSE where a row sees no key,
//         so that P = exp2(S - LSE) is 0 there without a test); the kernels below read it through
//         the policy's q_token (padding positions: +inf and 0), so a permuting policy reads the
//         rows of its own positions;
//   dK/dV one CTA per (key tile, kv head, batch), 4 warps of 16 keys: K and V stay in shared memory,
//         Q, dO, LSE, delta and the row masks of the query tiles that see the key tile (the policy's
//         inverse list q_count/q_at, for every query head of the kv head) stream through a 2-stage
//         cp.async ring; P^T = exp2(K Q^T * c - LSE) is recomputed, dV += P^T dO,
//         dS^T = P^T * (V dO^T - delta), dK += dS^T Q;
//   dQ    one CTA per (query tile, head, batch), 4 warps of 16 queries: Q and dO stay, K and V
//         stream over the policy's key-tile list; dS = P * (dO V^T - delta), dQ += dS K.
// P and dS are rounded to the input type before their products, as FlashAttention 2 does. The grid's
// z is batch x group (fwd.cuh), for policies with several groups.
#pragma once
#include "check.h"
#include "fwd.cuh"
#include "params.h"
#include "tile.cuh"

namespace attnkit::cuda::fmha {

ATTNKIT_DEVICE float to_float(__half x) { return __half2float(x); }
ATTNKIT_DEVICE float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// ---- prep: one 16-byte chunk of dO and O per thread, D / 8 threads per row.
template <typename T, int D>
__global__ void __launch_bounds__(128) fmha_bwd_prep_kernel(const BwdArgs a) {
  constexpr int kThr = D / 8, kRows = 128 / kThr;
  const int64_t Nqp = bwd_padded_rows(a.Nq), total = a.B * a.H * Nqp;
  const int64_t row = int64_t(blockIdx.x) * kRows + threadIdx.x / kThr;  // (b * H + h) * Nqp + n
  const int chunk = threadIdx.x % kThr;
  const bool in = row < total;
  const int64_t bh = in ? row / Nqp : 0, n = in ? row % Nqp : 0;
  const bool real = in && n < a.Nq;
  const int64_t li = ((bh / a.H) * a.Nq + n) * a.H + bh % a.H;  // [B, Nq, H] index of a real row
  float acc = 0.f;
  if (real) {
    alignas(16) T o[8], d[8];
    copy16(o, static_cast<const T*>(a.out) + li * D + chunk * 8);
    copy16(d, static_cast<const T*>(a.dout) + li * D + chunk * 8);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc += to_float(o[e]) * to_float(d[e]);
  }
#pragma unroll
  for (int off = kThr / 2; off >= 1; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (in && chunk == 0) {
    float* lse2 = a.workspace;
    float* delta = a.workspace + total;
    const float lse = real ? a.lse[li] : -INFINITY;
    lse2[row] = lse == -INFINITY ? INFINITY : lse * kLog2e;
    delta[row] = real ? acc - (a.dlse ? a.dlse[li] : 0.f) : 0.f;
  }
}

// LSE * log2(e) and delta of query token n (< 0: padding) for (b, h): its workspace row, +inf and 0
// on padding (what the pre-pass writes past Nq, so the identity map reads the same).
ATTNKIT_DEVICE void row_stats(const BwdArgs& a, int64_t n, int64_t b, int64_t h, float* lse2, float* delta) {
  const int64_t rows = bwd_padded_rows(a.Nq);
  const int64_t at = (b * a.H + h) * rows + n;
  *lse2 = n >= 0 ? a.workspace[at] : INFINITY;
  *delta = n >= 0 ? a.workspace[a.B * a.H * rows + at] : 0.f;
}

// ---- dK/dV

// The view of head h: the CTA's view0 when the policy's views do not depend on the head.
template <typename Mask, typename View>
ATTNKIT_DEVICE decltype(auto) head_view(const Mask& mask, const View& view0, int64_t grp, int64_t b, int64_t h) {
  if constexpr (head_invariant_views<Mask>::value) {
    (void)mask, (void)grp, (void)b, (void)h;
    return view0;
  } else {
    return mask.group(grp, b, h);
  }
}

// The first work item at or after (h, i) for key tile kt: query head h in [h, h_end), position i of
// its inverse list, not Skip. Returns false when none is left.
template <typename Mask, typename View>
ATTNKIT_DEVICE bool next_q(const Mask& mask, const View& view0, int64_t grp, int64_t b, int64_t kt, int64_t h_end,
                           int64_t& h, int64_t& i, TileClass& cls) {
  for (; h < h_end; ++h, i = 0) {
    const auto& vh = head_view(mask, view0, grp, b, h);
    for (const int64_t count = vh.q_count(kt); i < count; ++i) {
      cls = vh.classify(vh.q_at(kt, i), kt);
      if (cls != TileClass::Skip) return true;
    }
  }
  return false;
}

template <typename Tr, typename Mask>
__global__ void __launch_bounds__(Tr::kThreads, 1) fmha_bwd_dkdv_kernel(const BwdArgs a, const Mask mask) {
  using T = typename Tr::T;
  constexpr int D = Tr::kD, BM = Tr::kBlockM, QS = dkdv_qsub<Tr, Mask>, TE = Tr::kTileElems;
  const int64_t groups = mask.groups();
  const int64_t kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z / groups, grp = blockIdx.z % groups;
  const int64_t group = a.H / a.Hkv, h_end = (hk + 1) * group;
  const auto& view0 = cta_view(mask, grp, b, hk * group);
  if (kt >= view0.k_tiles()) return;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int64_t q_stride = a.H * D, kv_stride = a.Hkv * D, k0 = kt * Tr::kBlockN;
  const auto k_tok = [&](int64_t p) { return view0.k_token(p); };
  T* dk = static_cast<T*>(a.dk) + b * a.Nk * kv_stride + hk * D;
  T* dv = static_cast<T*>(a.dv) + b * a.Nk * kv_stride + hk * D;

  int64_t h = hk * group, i = 0;
  TileClass cls = TileClass::Skip;
  if (!next_q(mask, view0, grp, b, kt, h_end, h, i, cls)) {  // no query sees this key tile: zero gradients
    zero_rows<Tr>(dk, kv_stride, k0, k_tok);
    zero_rows<Tr>(dv, kv_stride, k0, k_tok);
    return;
  }

  ATTNKIT_DYNAMIC_SMEM(T, smem);
  T* const sK = smem;
  T* const sV = smem + TE;
  T* const sStages = smem + 2 * TE;  // stage s: Q at 2s * TE, dO at (2s + 1) * TE
  unsigned char* const sExtra = reinterpret_cast<unsigned char*>(smem + 6 * TE);  // stage s at s * kStageExtra

  // Copies of work item (h, i) into stage st: Q and dO rows (cp.async), and with plain stores
  // (published by the barrier after the wait) each row's LSE*log2e and delta, gathered through the
  // policy's token map, and on a Partial tile the 64 row masks. A policy that builds its views
  // computes each row's token once, into a table (one thread per row, then a barrier), instead of in
  // every thread that copies a chunk of the row: its int64 window arithmetic, inlined per chunk next
  // to the dK/dV accumulators, spilled at D >= 64.
  const auto issue = [&](int64_t hh, int64_t ii, TileClass cc, int st) {
    const auto& vh = head_view(mask, view0, grp, b, hh);
    const int64_t q0 = vh.q_at(kt, ii) * BM;
    unsigned char* extra = sExtra + st * Tr::kStageExtra;
    const auto row_data = [&](int64_t n) {  // thread r < BM: row q0 + r, its token n
      float* lse2 = reinterpret_cast<float*>(extra);
      row_stats(a, n, b, hh, &lse2[threadIdx.x], &lse2[BM + threadIdx.x]);
      if (cc == TileClass::Partial)
        reinterpret_cast<uint64_t*>(extra + 8 * BM)[threadIdx.x] = vh.row_mask(q0 + threadIdx.x, kt);
    };
    const auto load = [&](auto q_tok) {
      load_tile<Tr>(sStages + 2 * st * TE, static_cast<const T*>(a.q) + b * a.Nq * q_stride + hh * D, q_stride, q0,
                    q_tok);
      load_tile<Tr>(sStages + (2 * st + 1) * TE, static_cast<const T*>(a.dout) + b * a.Nq * q_stride + hh * D,
                    q_stride, q0, q_tok);
    };
    if constexpr (builds_views<Mask>) {
      __shared__ int64_t sTok[2][BM];
      if (threadIdx.x < BM) row_data(sTok[st][threadIdx.x] = vh.q_token(q0 + threadIdx.x));
      __syncthreads();  // the stage's token table is written (its last readers passed the trailing barrier)
      load([&](int64_t p) { return sTok[st][p - q0]; });
    } else {
      load([&](int64_t p) { return vh.q_token(p); });
      if (threadIdx.x < BM) row_data(vh.q_token(q0 + threadIdx.x));
    }
  };

  load_tile<Tr>(sK, static_cast<const T*>(a.k) + b * a.Nk * kv_stride + hk * D, kv_stride, k0, k_tok);
  load_tile<Tr>(sV, static_cast<const T*>(a.v) + b * a.Nk * kv_stride + hk * D, kv_stride, k0, k_tok);
  issue(h, i, cls, 0);
  ptx::cp_async_commit();

  const float c = a.scale * kLog2e;
  float acc_dk[D / 8][4], acc_dv[D / 8][4];
  zero(acc_dk);
  zero(acc_dv);
  int stage = 0;
  bool more = true;
  while (more) {
    int64_t nh = h, ni = i + 1;
    TileClass ncls = TileClass::Skip;
    more = next_q(mask, view0, grp, b, kt, h_end, nh, ni, ncls);
    if (more) {
      issue(nh, ni, ncls, stage ^ 1);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();  // this stage's copies (and K, V) have landed; its row masks are written

    const T* sQ = sStages + 2 * stage * TE;
    const T* sdO = sQ + TE;
    const float* sLse = reinterpret_cast<const float*>(sExtra + stage * Tr::kStageExtra);
    const float* sDelta = sLse + BM;
    const uint64_t* sMask = reinterpret_cast<const uint64_t*>(sDelta + BM);
    const bool partial = cls == TileClass::Partial;
#pragma unroll 1
    for (int qs = 0; qs < BM; qs += QS) {
      // S^T = K_w Q^T and P^T (16 keys x QS queries); element e of n-tile j is key 16w + g + 8(e/2),
      // query qs + 8j + 2t + e%2.
      float p[QS / 8][4];
      zero(p);
      gemm_nt<Tr, QS, D>(p, sK, warp * 16, sQ, qs);
#pragma unroll
      for (int j = 0; j < QS / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int qc = qs + 8 * j + 2 * t + e % 2, key = warp * 16 + g + 8 * (e / 2);
          const bool hidden = partial && !((sMask[qc] >> key) & 1);
          p[j][e] = hidden ? 0.f : exp2f(p[j][e] * c - sLse[qc]);
        }
      // dP^T = V_w dO^T; dV += P^T dO; dS^T = P^T * (dP^T - delta); dK += dS^T Q.
      float ds[QS / 8][4];
      zero(ds);
      gemm_nt<Tr, QS, D>(ds, sV, warp * 16, sdO, qs);
      gemm_rt<Tr, D, QS>(acc_dv, p, sdO, qs);
#pragma unroll
      for (int j = 0; j < QS / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - sDelta[qs + 8 * j + 2 * t + e % 2]);
      gemm_rt<Tr, D, QS>(acc_dk, ds, sQ, qs);
    }

    __syncthreads();  // this stage is read before the next iteration's copies overwrite it
    stage ^= 1;
    h = nh;
    i = ni;
    cls = ncls;
  }

  const float scale[2] = {a.scale, a.scale}, one[2] = {1.f, 1.f};
  stage_rows<Tr, D>(sK, warp * 16, acc_dk, scale);
  stage_rows<Tr, D>(sV, warp * 16, acc_dv, one);
  __syncthreads();
  store_tile<Tr>(dk, kv_stride, sK, k0, k_tok);
  store_tile<Tr>(dv, kv_stride, sV, k0, k_tok);
}

// ---- dQ

template <typename Tr, typename Mask>
__global__ void __launch_bounds__(Tr::kThreads, 1) fmha_bwd_dq_kernel(const BwdArgs a, const Mask mask) {
  using T = typename Tr::T;
  constexpr int D = Tr::kD, BN = Tr::kBlockN, TE = Tr::kTileElems;
  const int64_t groups = mask.groups();
  const int64_t qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z / groups, grp = blockIdx.z % groups;
  const auto& view = cta_view(mask, grp, b, h);
  if (qt >= view.q_tiles()) return;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int64_t hk = h / (a.H / a.Hkv);
  const int64_t q_stride = a.H * D, kv_stride = a.Hkv * D;
  const int64_t q0 = qt * Tr::kBlockM;
  const auto q_tok = [&](int64_t p) { return view.q_token(p); };
  const auto k_tok = [&](int64_t p) { return view.k_token(p); };
  const T* k = static_cast<const T*>(a.k) + b * a.Nk * kv_stride + hk * D;
  const T* v = static_cast<const T*>(a.v) + b * a.Nk * kv_stride + hk * D;
  T* dq = static_cast<T*>(a.dq) + b * a.Nq * q_stride + h * D;

  const int64_t count = view.kv_count(qt);
  int64_t i = next_kv(view, qt, 0, count);
  if (i == count) {  // no visible key: dq = 0
    zero_rows<Tr>(dq, q_stride, q0, q_tok);
    return;
  }

  ATTNKIT_DYNAMIC_SMEM(T, smem);
  T* const sQ = smem;
  T* const sdO = smem + TE;
  T* const sKV = smem + 2 * TE;  // 2 stages of K, V
  load_tile<Tr>(sQ, static_cast<const T*>(a.q) + b * a.Nq * q_stride + h * D, q_stride, q0, q_tok);
  load_tile<Tr>(sdO, static_cast<const T*>(a.dout) + b * a.Nq * q_stride + h * D, q_stride, q0, q_tok);
  {
    const int64_t k0 = view.kv_at(qt, i) * BN;
    load_tile<Tr>(sKV, k, kv_stride, k0, k_tok);
    load_tile<Tr>(sKV + TE, v, kv_stride, k0, k_tok);
  }
  ptx::cp_async_commit();

  // LSE*log2e and delta of rows g and g + 8.
  float lse2[2], delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) row_stats(a, view.q_token(q0 + warp * 16 + g + 8 * r), b, h, &lse2[r], &delta[r]);

  const float c = a.scale * kLog2e;
  float acc[D / 8][4];
  zero(acc);
  int stage = 0;
  while (i < count) {
    const int64_t kt = view.kv_at(qt, i);
    const int64_t next = next_kv(view, qt, i + 1, count);
    if (next < count) {
      T* dst = sKV + (stage ^ 1) * 2 * TE;
      const int64_t k0 = view.kv_at(qt, next) * BN;
      load_tile<Tr>(dst, k, kv_stride, k0, k_tok);
      load_tile<Tr>(dst + TE, v, kv_stride, k0, k_tok);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();
    const T* sK = sKV + stage * 2 * TE;
    const T* sV = sK + TE;

    float p[BN / 8][4];
    zero(p);
    gemm_nt<Tr, BN, D>(p, sQ, warp * 16, sK, 0);
    uint64_t bits[2] = {~uint64_t(0), ~uint64_t(0)};
    if (view.classify(qt, kt) == TileClass::Partial) {
      bits[0] = view.row_mask(q0 + warp * 16 + g, kt);
      bits[1] = view.row_mask(q0 + warp * 16 + g + 8, kt);
    }
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2, col = 8 * j + 2 * t + e % 2;
        p[j][e] = (bits[r] >> col) & 1 ? exp2f(p[j][e] * c - lse2[r]) : 0.f;
      }
    float ds[BN / 8][4];
    zero(ds);
    gemm_nt<Tr, BN, D>(ds, sdO, warp * 16, sV, 0);
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - delta[e / 2]);
    gemm_rt<Tr, D, BN>(acc, ds, sK, 0);

    __syncthreads();
    stage ^= 1;
    i = next;
  }

  const float scale[2] = {a.scale, a.scale};
  stage_rows<Tr, D>(sQ, warp * 16, acc, scale);
  __syncthreads();
  store_tile<Tr>(dq, q_stride, sQ, q0, q_tok);
}

// ---- launchers (stream-ordered under nvcc; synchronous under the emulator)

template <typename T, int D>
void launch_bwd_prep(const BwdArgs& a, cudaStream_t stream) {
  constexpr int kRows = 128 / (D / 8);
  const int64_t total = a.B * a.H * bwd_padded_rows(a.Nq);
  if (total == 0) return;
  auto* kernel = &fmha_bwd_prep_kernel<T, D>;
  ATTNKIT_LAUNCH(kernel, static_cast<unsigned>((total + kRows - 1) / kRows), 128, 0, stream, a);
  check_launch("fmha_bwd_prep_kernel");
}

template <typename Tr, typename Mask>
void launch_bwd_dkdv(const BwdArgs& a, const Mask& mask, cudaStream_t stream) {
  if (a.B == 0 || a.Hkv == 0 || mask.max_k_tiles() == 0) return;
  auto* kernel = &fmha_bwd_dkdv_kernel<Tr, Mask>;
  allow_dynamic_smem(kernel, Tr::kDkdvSmem);
  const dim3 grid(static_cast<unsigned>(mask.max_k_tiles()), static_cast<unsigned>(a.Hkv),
                  static_cast<unsigned>(a.B * mask.groups()));
  ATTNKIT_LAUNCH(kernel, grid, Tr::kThreads, Tr::kDkdvSmem, stream, a, mask);
  check_launch("fmha_bwd_dkdv_kernel");
}

template <typename Tr, typename Mask>
void launch_bwd_dq(const BwdArgs& a, const Mask& mask, cudaStream_t stream) {
  if (a.B == 0 || a.H == 0 || mask.max_q_tiles() == 0) return;
  auto* kernel = &fmha_bwd_dq_kernel<Tr, Mask>;
  allow_dynamic_smem(kernel, Tr::kDqSmem);
  const dim3 grid(static_cast<unsigned>(mask.max_q_tiles()), static_cast<unsigned>(a.H),
                  static_cast<unsigned>(a.B * mask.groups()));
  ATTNKIT_LAUNCH(kernel, grid, Tr::kThreads, Tr::kDqSmem, stream, a, mask);
  check_launch("fmha_bwd_dq_kernel");
}

}  // namespace attnkit::cuda::fmha
