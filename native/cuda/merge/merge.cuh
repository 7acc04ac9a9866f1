// Attention merge on CUDA (docs/merge.md): P partial attentions over the same queries, each an output
// out_i [rows, Dv] and its log-sum-exp lse_i [rows], combine into
//   lse = log sum_i exp(lse_i),   out = sum_i w_i out_i,   w_i = exp(lse_i - lse),
// and the backward gives, with g = dOut and the merged output out,
//   dOut_i = w_i g,   dLse_i = w_i (g . (out_i - out) + dLse).
// A row whose parts all have lse = -inf (no key seen anywhere) merges to out = 0, lse = -inf, and has
// zero gradients. The semantics and the float32 accumulation are the CPU backend's
// (native/cpu/attention.cc merge_forward / merge_backward); element conversions are attnkit/dtype.h's,
// bit-identical to the CPU's.
//
// Memory-bound: one warp per row, each lane owning the elements e = lane, lane + 32, ...; the parts'
// pointers travel in the kernel parameters (kMaxParts of them). Compiles under nvcc and, through
// cuda_compat.cuh, under g++ against the SIMT emulator.
#pragma once
#include <cstdint>

#include "../cuda_compat.cuh"
#include "attnkit/attention.h"
#include "attnkit/dtype.h"

namespace attnkit::cuda::merge {

// The most parts one launch merges (the pointers are kernel parameters: 4 * 16 * 8 bytes backward).
constexpr int kMaxParts = kCudaMergeMaxParts;
constexpr int kWarps = 4;  // rows per block
constexpr float kNegInf = -__builtin_huge_valf();

struct FwdArgs {
  const void* outs[kMaxParts];
  const float* lses[kMaxParts];
  int parts;
  int64_t rows, dv;
  void* out;
  float* lse;
};

struct BwdArgs {
  const void* outs[kMaxParts];
  const float* lses[kMaxParts];
  void* douts[kMaxParts];
  float* dlses[kMaxParts];
  int parts;
  int64_t rows, dv;
  const void* out;   // merged output
  const float* lse;  // merged LSE
  const void* dout;
  const float* dlse;  // optional
};

// Element access per dtype: float32, or 16-bit storage converted exactly as on the CPU (host and
// device: the tests round their inputs with the same functions).
struct F32 {
  static constexpr DType kDType = DType::Float32;
  using Storage = float;
  ATTNKIT_HD static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  ATTNKIT_HD static void store(void* p, int64_t i, float v) { static_cast<float*>(p)[i] = v; }
};
struct F16 {
  static constexpr DType kDType = DType::Float16;
  using Storage = uint16_t;
  ATTNKIT_HD static float load(const void* p, int64_t i) { return f16_to_f32(static_cast<const uint16_t*>(p)[i]); }
  ATTNKIT_HD static void store(void* p, int64_t i, float v) { static_cast<uint16_t*>(p)[i] = f32_to_f16(v); }
};
struct BF16 {
  static constexpr DType kDType = DType::BFloat16;
  using Storage = uint16_t;
  ATTNKIT_HD static float load(const void* p, int64_t i) { return bf16_to_f32(static_cast<const uint16_t*>(p)[i]); }
  ATTNKIT_HD static void store(void* p, int64_t i, float v) { static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); }
};

ATTNKIT_DEVICE float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename E>
__global__ void __launch_bounds__(32 * kWarps) merge_fwd_kernel(const FwdArgs a) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarps + (int(threadIdx.x) >> 5);
  if (r >= a.rows) return;  // whole warps leave together: r is uniform per warp
  const int64_t base = r * a.dv;
  float mx = kNegInf;
  for (int i = 0; i < a.parts; ++i) mx = fmaxf(mx, a.lses[i][r]);
  if (mx == kNegInf) {
    for (int64_t e = lane; e < a.dv; e += 32) E::store(a.out, base + e, 0.f);
    if (lane == 0) a.lse[r] = kNegInf;
    return;
  }
  // The weights once per row, in registers: the loops over parts are unrolled to kMaxParts, so every
  // index is a constant (no local memory; the gate checks it).
  float w[kMaxParts];
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxParts; ++i) {
    w[i] = i < a.parts ? expf(a.lses[i][r] - mx) : 0.f;
    total += w[i];
  }
  const float inv = 1.f / total;
#pragma unroll
  for (int i = 0; i < kMaxParts; ++i) w[i] *= inv;
  for (int64_t e = lane; e < a.dv; e += 32) {
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxParts; ++i)
      if (w[i] != 0.f) acc += w[i] * E::load(a.outs[i], base + e);
    E::store(a.out, base + e, acc);
  }
  if (lane == 0) a.lse[r] = mx + logf(total);
}

template <typename E>
__global__ void __launch_bounds__(32 * kWarps) merge_bwd_kernel(const BwdArgs a) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t r = int64_t(blockIdx.x) * kWarps + (int(threadIdx.x) >> 5);
  if (r >= a.rows) return;
  const int64_t base = r * a.dv;
  const float lse = a.lse[r];
  const float dl = a.dlse ? a.dlse[r] : 0.f;
  for (int i = 0; i < a.parts; ++i) {
    const float li = a.lses[i][r];
    const float w = (li == kNegInf || lse == kNegInf) ? 0.f : expf(li - lse);
    float dot = 0.f;
    for (int64_t e = lane; e < a.dv; e += 32) {
      const float g = E::load(a.dout, base + e);
      dot += g * (E::load(a.outs[i], base + e) - E::load(a.out, base + e));
      E::store(a.douts[i], base + e, w * g);
    }
    dot = warp_sum(dot);
    if (lane == 0) a.dlses[i][r] = w == 0.f ? 0.f : w * (dot + dl);
  }
}

inline unsigned blocks_for(int64_t rows) { return unsigned((rows + kWarps - 1) / kWarps); }

template <typename E>
void launch_fwd(const FwdArgs& a, cudaStream_t stream) {
  auto* kernel = &merge_fwd_kernel<E>;
  ATTNKIT_LAUNCH(kernel, dim3(blocks_for(a.rows)), dim3(32 * kWarps), 0, stream, a);
}

template <typename E>
void launch_bwd(const BwdArgs& a, cudaStream_t stream) {
  auto* kernel = &merge_bwd_kernel<E>;
  ATTNKIT_LAUNCH(kernel, dim3(blocks_for(a.rows)), dim3(32 * kWarps), 0, stream, a);
}

}  // namespace attnkit::cuda::merge
