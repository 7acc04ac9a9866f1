// Plain problem descriptors for the fused softmax attention family (forward, backward, merge).
// Layout is heads-last and contiguous: q [B, Nq, H, D], k [B, Nk, Hkv, D], v [B, Nk, Hkv, Dv],
// out [B, Nq, H, Dv], lse [B, Nq, H] (float32, natural log). Query head h reads kv head
// h / (H / Hkv). No framework type reaches a kernel: only pointers, sizes and options.
#pragma once
#include <cstdint>
#include "attnkit/dtype.h"

namespace attnkit {

struct AttentionShape {
  int64_t B = 0, Nq = 0, Nk = 0, H = 0, Hkv = 0, D = 0, Dv = 0;
};

struct DenseMaskOptions {
  bool causal = false;
  int64_t left = -1, right = -1;  // sliding window; -1 = unbounded
};

struct AttentionFwdParams {
  AttentionShape shape;
  DType dtype = DType::Float32;  // of q, k, v and out
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  float scale = 1.f;
};

struct AttentionBwdParams {
  AttentionShape shape;
  DType dtype = DType::Float32;  // of q, k, v, out, dout, dq, dk, dv
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const float* lse = nullptr;
  const void* dout = nullptr;
  const float* dlse = nullptr;  // optional gradient of the LSE output ([B, Nq, H]); may be null
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  float scale = 1.f;
};

// Merge of P partial attentions over the same queries: out = sum_i w_i out_i with
// w_i = exp(lse_i - lse), lse = log sum_i exp(lse_i).
// The most parts one CUDA merge takes (native/cuda/merge/merge.cuh: the parts' pointers travel in
// the kernel parameters). The CPU takes any number.
constexpr int kCudaMergeMaxParts = 16;

struct MergeParams {
  int64_t rows = 0;  // B * N * H
  int64_t dv = 0;
  DType dtype = DType::Float32;
  int parts = 0;
  const void* const* outs = nullptr;
  const float* const* lses = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
};

struct MergeBwdParams {
  int64_t rows = 0, dv = 0;
  DType dtype = DType::Float32;
  int parts = 0;
  const void* const* outs = nullptr;
  const float* const* lses = nullptr;
  const void* out = nullptr;   // merged output
  const float* lse = nullptr;  // merged LSE
  const void* dout = nullptr;
  const float* dlse = nullptr;  // optional
  void* const* douts = nullptr;
  float* const* dlses = nullptr;
};

}  // namespace attnkit
