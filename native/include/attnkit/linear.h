// Plain problem descriptors for the linear-attention family (docs/linear.md): forward (causal
// chunked or non-causal), backward and the one-token decode step. Layout is heads-last and
// contiguous: q [B, N, H, D], k [B, N, Hkv, D], v [B, N, Hkv, Dv], out [B, N, H, Dv]; query head h
// reads kv head h / (H / Hkv). States are float32 [B, H, D, Ds] with Ds = Dv + normalize: with
// `normalize` the last column is the running key sum z (the same recurrence with v extended by 1).
// Convention (FLA's recurrent form): S_t = a_t * S_{t-1} + phi(k_t) v_t^T,
// o_t = scale * phi(q_t)^T S_t, with a_t = decay[h] * exp(gate[b, t, h]) (the gate, when given, is a
// per-token log decay <= 0; without it a_t is the constant decay).
#pragma once
#include <cstdint>
#include "attnkit/dtype.h"

namespace attnkit {

enum class FeatureMap : int32_t { Identity = 0, Elu1 = 1, Relu = 2 };

struct LinearShape {
  int64_t B = 0, N = 0, H = 0, Hkv = 0, D = 0, Dv = 0;
  bool normalize = false;
  int64_t state_cols() const { return Dv + (normalize ? 1 : 0); }
};

struct LinearOptions {
  bool causal = true;
  FeatureMap feature_map = FeatureMap::Identity;
  float scale = 1.f;
  float eps = 1e-6f;              // normalize: out = num / (den + eps)
  const double* decay = nullptr;  // [H], per query head, in (0, 1] (powers are taken in double)
  const float* gate = nullptr;    // [B, N, H] log decays <= 0 (the step: [B, H]), or null (none)
};

struct LinearFwdParams {
  LinearShape shape;
  LinearOptions opt;
  DType dtype = DType::Float32;   // of q, k, v, out
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* state_in = nullptr;  // [B, H, D, Ds] or null (zero)
  void* out = nullptr;
  float* state_out = nullptr;       // [B, H, D, Ds] or null (not wanted)
};

struct LinearBwdParams {
  LinearShape shape;
  LinearOptions opt;
  DType dtype = DType::Float32;    // of q, k, v, dout, dq, dk, dv
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* state_in = nullptr;   // [B, H, D, Ds] or null (zero)
  const void* dout = nullptr;
  const float* dstate_out = nullptr; // gradient of the final state [B, H, D, Ds] or null (zero)
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  float* dstate_in = nullptr;        // gradient of the initial state [B, H, D, Ds] or null
  float* dgate = nullptr;            // gradient of the gate [B, N, H]; set exactly when opt.gate is
};

// One token per sequence (N = 1): state_out = decay * state_in + phi(k) [v, 1]^T, then read.
struct LinearStepParams {
  LinearShape shape;  // N == 1
  LinearOptions opt;
  DType dtype = DType::Float32;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* state_in = nullptr;  // or null (zero)
  void* out = nullptr;
  float* state_out = nullptr;
};

}  // namespace attnkit
