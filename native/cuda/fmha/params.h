// What the fused attention kernels receive: plain pointers and sizes, no framework types (STYLE 2).
// Tensors are heads-last and contiguous as in attnkit/attention.h: q [B, Nq, H, D], k and v
// [B, Nk, Hkv, D], out/dout/dq [B, Nq, H, D], dk/dv [B, Nk, Hkv, D], lse/dlse [B, Nq, H] float32
// (natural log). Query head h reads kv head h / (H / Hkv). Element types and D are template
// parameters of the kernels; pointers must be 16-byte aligned (cp.async), which launch.cu checks.
#pragma once
#include <cstdint>

#include "attnkit/common.h"

namespace attnkit::cuda::fmha {

struct FwdArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  int64_t B = 0, Nq = 0, Nk = 0, H = 0, Hkv = 0;
  float scale = 1.f;  // softmax scale (applied to q . k)
};

struct BwdArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const void* dout = nullptr;
  const float* lse = nullptr;
  const float* dlse = nullptr;  // optional
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  int64_t B = 0, Nq = 0, Nk = 0, H = 0, Hkv = 0;
  float scale = 1.f;
  // float32 scratch of bwd_workspace_floats(B, H, Nq): per (b, h) and query position padded to a
  // whole tile, LSE * log2(e) (+inf where the row sees no key or is padding) and
  // delta = rowsum(dO * O) - dLSE (0 on padding). Written by the pre-pass, read by dK/dV and dQ.
  float* workspace = nullptr;
};

// Query positions per (b, h) in the workspace: Nq rounded up to whole 64-row tiles.
ATTNKIT_HD int64_t bwd_padded_rows(int64_t Nq) { return (Nq + 63) / 64 * 64; }
ATTNKIT_HD int64_t bwd_workspace_floats(int64_t B, int64_t H, int64_t Nq) { return 2 * B * H * bwd_padded_rows(Nq); }

}  // namespace attnkit::cuda::fmha
