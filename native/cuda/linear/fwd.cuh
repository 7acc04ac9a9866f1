// Causal chunked linear attention forward on CUDA, version 0: the CPU kernel's chunk algebra
// (docs/linear.md, "Causal forward") in plain float32 SIMT code, to pin down the semantics, the
// state layout and the gate handling on the device before the tensor-core version. Not in the
// dispatch table yet; the emulator test (tests/linear_test.cc) runs it against a float64 reference.
//
// One block per (batch, query head), kThreads threads, chunks of kC = 64 tokens in order. Shared
// memory holds the running state H [D x Ds] in float32 (Ds = Dv, + 1 with normalize: the key sum),
// the chunk's scale * phi(q) [kC x D], phi(k) [kC x D], V' [kC x Ds], the masked scores [kC x kC] and
// the chunk's cumulative log decay G (double). Per chunk of n rows, with a_t = lambda exp(g_t) and
// G_i = sum_{r <= i} log a_r:
//   O      = diag(exp(G_i)) (Q~ H) + ((Q~ K~^T) . M) V'        M_ij = exp(G_i - G_j), i >= j
//   H_next = exp(G_{n-1}) H + (diag(exp(G_{n-1} - G_j)) K~)^T V'
// Every exponent is <= 0 (no overflow for any gate); factors below 1e-30 are flushed to 0, as on the
// CPU. Compiles under nvcc and, through cuda_compat.cuh, under g++ against the SIMT emulator.
#pragma once
#include <cstdint>

#include "../cuda_compat.cuh"
#include "../merge/merge.cuh"  // the element types F32, F16, BF16 (the CPU's conversions)
#include "attnkit/linear.h"

namespace attnkit::cuda::linear {

constexpr int kC = 64;         // chunk length (the CPU kernel's)
constexpr int kThreads = 128;  // per block
constexpr double kFlushLn = -69.07755278982137;  // ln(1e-30)

struct FwdArgs {
  LinearShape shape;
  bool causal = true;  // only causal is implemented here
  FeatureMap feature_map = FeatureMap::Identity;
  float scale = 1.f, eps = 1e-6f;
  const double* log_decay = nullptr;  // [H] device memory: log lambda per query head
  const float* gate = nullptr;        // [B, N, H] log decays <= 0, or null
  const void* q = nullptr;            // [B, N, H, D]
  const void* k = nullptr;            // [B, N, Hkv, D]
  const void* v = nullptr;            // [B, N, Hkv, Dv]
  const float* state_in = nullptr;    // [B, H, D, Ds] or null
  void* out = nullptr;                // [B, N, H, Dv]
  float* state_out = nullptr;         // [B, H, D, Ds] or null
};

// Dynamic shared memory of one block, in bytes.
ATTNKIT_HD int64_t fwd_smem_bytes(int64_t D, int64_t Ds) {
  return int64_t(sizeof(double)) * kC + int64_t(sizeof(float)) * (D * Ds + 2 * kC * D + kC * Ds + kC * kC);
}

ATTNKIT_DEVICE float feature(FeatureMap f, float x) {
  if (f == FeatureMap::Elu1) return x > 0.f ? x + 1.f : expf(x);
  if (f == FeatureMap::Relu) return x > 0.f ? x : 0.f;
  return x;
}

ATTNKIT_DEVICE float decay_factor(double lnx) { return lnx < kFlushLn ? 0.f : float(exp(lnx)); }

template <typename E>
__global__ void __launch_bounds__(kThreads) linear_fwd_kernel(const FwdArgs a) {
  const LinearShape& s = a.shape;
  const int64_t N = s.N, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = Dv + (s.normalize ? 1 : 0);
  const int64_t bh = blockIdx.x, b = bh / H, h = bh % H, hk = h / (H / Hkv);
  const int tid = int(threadIdx.x);
  ATTNKIT_DYNAMIC_SMEM(double, smem);
  double* G = smem;                                    // [kC]
  float* Hs = reinterpret_cast<float*>(smem + kC);     // [D x Ds]
  float* Q = Hs + D * Ds;                              // [kC x D]
  float* K = Q + kC * D;                               // [kC x D]
  float* V = K + kC * D;                               // [kC x Ds]
  float* A = V + kC * Ds;                              // [kC x kC]
  const double log_lambda = a.log_decay[h];

  for (int64_t i = tid; i < D * Ds; i += kThreads)
    Hs[i] = a.state_in ? a.state_in[bh * D * Ds + i] : 0.f;
  for (int64_t n0 = 0; n0 < N; n0 += kC) {
    const int64_t n = N - n0 < kC ? N - n0 : kC;
    __syncthreads();  // the previous chunk's readers of Q, K, V, A, G are done
    if (tid == 0) {
      double acc = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double g = a.gate ? double(a.gate[(b * N + n0 + i) * H + h]) : 0.0;
        G[i] = acc += g + log_lambda;
      }
    }
    for (int64_t x = tid; x < n * D; x += kThreads) {
      const int64_t i = x / D, d = x % D;
      Q[x] = a.scale * feature(a.feature_map, E::load(a.q, ((b * N + n0 + i) * H + h) * D + d));
      K[x] = feature(a.feature_map, E::load(a.k, ((b * N + n0 + i) * Hkv + hk) * D + d));
    }
    for (int64_t x = tid; x < n * Ds; x += kThreads) {
      const int64_t i = x / Ds, e = x % Ds;
      V[x] = e < Dv ? E::load(a.v, ((b * N + n0 + i) * Hkv + hk) * Dv + e) : 1.f;
    }
    __syncthreads();
    // A = (Q~ K~^T) . M on the causal triangle
    for (int64_t x = tid; x < n * kC; x += kThreads) {
      const int64_t i = x / kC, j = x % kC;
      float acc = 0.f;
      if (j <= i) {
        for (int64_t d = 0; d < D; ++d) acc += Q[i * D + d] * K[j * D + d];
        acc *= decay_factor(G[i] - G[j]);
      }
      A[x] = acc;
    }
    __syncthreads();
    // O = diag(exp(G_i)) (Q~ H) + A V', then out (normalize: divided by the key-sum column + eps)
    for (int64_t x = tid; x < n * Dv; x += kThreads) {
      const int64_t i = x / Dv, e = x % Dv;
      const float qi = decay_factor(G[i]);
      float inter = 0.f, intra = 0.f, zi = 0.f, zx = 0.f;
      for (int64_t d = 0; d < D; ++d) inter += Q[i * D + d] * Hs[d * Ds + e];
      for (int64_t j = 0; j <= i; ++j) intra += A[i * kC + j] * V[j * Ds + e];
      float o = qi * inter + intra;
      if (s.normalize) {
        for (int64_t d = 0; d < D; ++d) zi += Q[i * D + d] * Hs[d * Ds + Dv];
        for (int64_t j = 0; j <= i; ++j) zx += A[i * kC + j];
        o /= qi * zi + zx + a.eps;
      }
      E::store(a.out, ((b * N + n0 + i) * H + h) * Dv + e, o);
    }
    __syncthreads();  // every read of H for this chunk is done
    // H = exp(G_{n-1}) H + (diag(exp(G_{n-1} - G_j)) K~)^T V'
    const float last = decay_factor(G[n - 1]);
    for (int64_t x = tid; x < D * Ds; x += kThreads) {
      const int64_t d = x / Ds, e = x % Ds;
      float acc = 0.f;
      for (int64_t j = 0; j < n; ++j) acc += decay_factor(G[n - 1] - G[j]) * K[j * D + d] * V[j * Ds + e];
      Hs[x] = last * Hs[x] + acc;
    }
  }
  __syncthreads();
  if (a.state_out)
    for (int64_t i = tid; i < D * Ds; i += kThreads) a.state_out[bh * D * Ds + i] = Hs[i];
}

// One block per (batch, query head). Above 48 KiB of shared memory (D = Dv = 64 takes 82 KiB) the
// kernel must opt in; D = Dv = 128 takes 180 KiB, more than an sm_80 block may have: the tensor-core
// version keeps only the state tile and one operand pair in shared memory.
template <typename E>
void launch_fwd(const FwdArgs& a, cudaStream_t stream) {
  auto* kernel = &linear_fwd_kernel<E>;
  const int64_t smem = fwd_smem_bytes(a.shape.D, a.shape.state_cols());
#if defined(__CUDACC__)
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
#endif
  ATTNKIT_LAUNCH(kernel, dim3(unsigned(a.shape.B * a.shape.H)), dim3(kThreads), size_t(smem), stream, a);
}

}  // namespace attnkit::cuda::linear
