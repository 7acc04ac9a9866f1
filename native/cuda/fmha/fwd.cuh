// Fused attention forward (FlashAttention-2 structure) for one mask policy: one CTA per (query tile,
// head, batch), 4 warps of 16 query rows. The key tiles come from the policy (kv_count/kv_at, Skip
// tiles dropped), K and V streamed through a 2-stage cp.async ring; S = Q K^T and O += P V on
// mma.sync m16n8k16; online softmax in registers in log2 units (scale * log2(e) folded into one
// multiply); Full tiles skip element masking, Partial ones apply the policy's row masks. A row that
// sees no key gets out = 0 and LSE = -inf; LSE is written in natural log. Grid: (query tile, head,
// batch x group): a policy with several groups (neighborhood attention's dilation groups) runs them as
// the minor part of grid z; dense and block-sparse masks have one group.
#pragma once
#include "check.h"
#include "params.h"
#include "tile.cuh"

namespace attnkit::cuda::fmha {

// The first position >= i of query tile qt's key-tile list that is not Skip (count if none).
template <typename View>
ATTNKIT_DEVICE int64_t next_kv(const View& v, int64_t qt, int64_t i, int64_t count) {
  for (; i < count; ++i)
    if (v.classify(qt, v.kv_at(qt, i)) != TileClass::Skip) break;
  return i;
}

template <typename Tr, typename Mask>
__global__ void __launch_bounds__(Tr::kThreads, (fwd_min_blocks<Tr, Mask>)) fmha_fwd_kernel(const FwdArgs a, const Mask mask) {
  using T = typename Tr::T;
  constexpr int D = Tr::kD, BN = Tr::kBlockN;
  const int64_t groups = mask.groups();
  const int64_t qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z / groups, grp = blockIdx.z % groups;
  const auto& view = cta_view(mask, grp, b, h);
  if (qt >= view.q_tiles()) return;

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int64_t hk = h / (a.H / a.Hkv);
  const int64_t q_stride = a.H * D, kv_stride = a.Hkv * D;
  const T* q = static_cast<const T*>(a.q) + b * a.Nq * q_stride + h * D;
  const T* k = static_cast<const T*>(a.k) + b * a.Nk * kv_stride + hk * D;
  const T* v = static_cast<const T*>(a.v) + b * a.Nk * kv_stride + hk * D;
  T* out = static_cast<T*>(a.out) + b * a.Nq * q_stride + h * D;
  const int64_t q0 = qt * Tr::kBlockM;
  const auto q_tok = [&](int64_t p) { return view.q_token(p); };
  const auto k_tok = [&](int64_t p) { return view.k_token(p); };

  ATTNKIT_DYNAMIC_SMEM(T, smem);
  T* const sQ = smem;                    // [64][D]
  T* const sKV = smem + Tr::kTileElems;  // 2 stages of K [64][D], V [64][D]

  const int64_t count = view.kv_count(qt);
  int64_t i = next_kv(view, qt, 0, count);
  if (i < count) {
    load_tile<Tr>(sQ, q, q_stride, q0, q_tok);
    const int64_t k0 = view.kv_at(qt, i) * BN;
    load_tile<Tr>(sKV, k, kv_stride, k0, k_tok);
    load_tile<Tr>(sKV + Tr::kTileElems, v, kv_stride, k0, k_tok);
    ptx::cp_async_commit();
  }

  const float c = a.scale * kLog2e;
  float o[D / 8][4];
  zero(o);
  float m[2] = {-INFINITY, -INFINITY};  // running max of rows g, g + 8, in log2 units
  float l[2] = {0.f, 0.f};              // this lane's part of the running sums
  int stage = 0;
  while (i < count) {
    const int64_t kt = view.kv_at(qt, i);
    const int64_t next = next_kv(view, qt, i + 1, count);
    if (next < count) {
      T* dst = sKV + (stage ^ 1) * 2 * Tr::kTileElems;
      const int64_t k0 = view.kv_at(qt, next) * BN;
      load_tile<Tr>(dst, k, kv_stride, k0, k_tok);
      load_tile<Tr>(dst + Tr::kTileElems, v, kv_stride, k0, k_tok);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();  // every thread's copies of this stage (and of Q) have landed
    const T* sK = sKV + stage * 2 * Tr::kTileElems;
    const T* sV = sK + Tr::kTileElems;

    float s[BN / 8][4];
    zero(s);
    gemm_nt<Tr, BN, D>(s, sQ, warp * 16, sK, 0);

    // Scores to log2 units; on a Partial tile, elements the policy hides become -inf.
    const bool partial = view.classify(qt, kt) == TileClass::Partial;
    uint64_t bits[2] = {~uint64_t(0), ~uint64_t(0)};
    if (partial) {
      bits[0] = view.row_mask(q0 + warp * 16 + g, kt);
      bits[1] = view.row_mask(q0 + warp * 16 + g + 8, kt);
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2, col = 8 * j + 2 * t + e % 2;
        s[j][e] = (bits[r] >> col) & 1 ? s[j][e] * c : -INFINITY;
        mx[r] = fmaxf(mx[r], s[j][e]);
      }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = quad_max(mx[r]);
      // A row with nothing visible yet keeps max -inf: subtract 0 instead (exp2(-inf) = 0, no NaN).
      base[r] = mx[r] == -INFINITY ? 0.f : mx[r];
      alpha[r] = exp2f(m[r] - base[r]);
      m[r] = mx[r];
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        s[j][e] = exp2f(s[j][e] - base[r]);
        l[r] += s[j][e];
      }
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[j][e] *= alpha[e / 2];
    gemm_rt<Tr, D, BN>(o, s, sV, 0);

    __syncthreads();  // this stage is read before the next iteration's copies overwrite it
    stage ^= 1;
    i = next;
  }

  // out = O / l (0 where nothing was visible), staged through the Q tile for 16-byte stores.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float sum = quad_sum(l[r]);
    inv[r] = sum > 0.f ? 1.f / sum : 0.f;
    const int64_t n = view.q_token(q0 + warp * 16 + g + 8 * r);
    if (t == 0 && n >= 0)
      a.lse[(b * a.Nq + n) * a.H + h] = sum > 0.f ? (m[r] + log2f(sum)) * kLn2 : -INFINITY;
  }
  stage_rows<Tr, D>(sQ, warp * 16, o, inv);
  __syncthreads();
  store_tile<Tr>(out, q_stride, sQ, q0, q_tok);
}

template <typename Tr, typename Mask>
void launch_fwd(const FwdArgs& a, const Mask& mask, cudaStream_t stream) {
  if (a.B == 0 || a.H == 0 || mask.max_q_tiles() == 0) return;
  auto* kernel = &fmha_fwd_kernel<Tr, Mask>;
  allow_dynamic_smem(kernel, Tr::kFwdSmem);
  const dim3 grid(static_cast<unsigned>(mask.max_q_tiles()), static_cast<unsigned>(a.H),
                  static_cast<unsigned>(a.B * mask.groups()));
  ATTNKIT_LAUNCH(kernel, grid, Tr::kThreads, Tr::kFwdSmem, stream, a, mask);
  check_launch("fmha_fwd_kernel");
}

}  // namespace attnkit::cuda::fmha
