// The only runtime -> compile-time switch of the fused attention kernels: the generated table
// (generated/dispatch.h, from instantiations.json) of what this build compiled, per mask policy, and
// the checks that turn a request into one of its entries or an attnkit::Error. Host code; compiles
// under nvcc (launch.cu) and under g++ (the emulator tests run every table entry).
#pragma once
#include <cstdint>
#include <string>

#include "../cuda_compat.cuh"
#include "check.h"
#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "attnkit/mask_dense.h"
#include "params.h"

namespace attnkit::cuda::fmha {

template <typename Mask>
struct FwdEntry {
  DType dtype;
  int head_dim;
  const char* name;
  void (*run)(const FwdArgs&, const Mask&, cudaStream_t);
};

// The backward is three launches in stream order: prep (delta, LSE into the workspace), dK/dV, dQ.
template <typename Mask>
struct BwdEntry {
  DType dtype;
  int head_dim;
  const char* name;
  void (*prep)(const BwdArgs&, cudaStream_t);
  void (*dkdv)(const BwdArgs&, const Mask&, cudaStream_t);
  void (*dq)(const BwdArgs&, const Mask&, cudaStream_t);
};

template <typename Mask>
struct Table;  // specialised per policy by generated/dispatch.h

}  // namespace attnkit::cuda::fmha

#include "generated/dispatch.h"

namespace attnkit::cuda::fmha {

// The compiled head dims of a table, e.g. "32, 64, 128" (for messages).
template <typename Entry>
std::string head_dims(const Entry* entries, int count, DType dtype) {
  std::string s;
  for (int i = 0; i < count; ++i)
    if (entries[i].dtype == dtype) s += (s.empty() ? "" : ", ") + std::to_string(entries[i].head_dim);
  return s.empty() ? "none" : s;
}

// Shape and type checks shared by both directions; returns the entry or throws.
template <typename Entry>
const Entry& select(const Entry* entries, int count, const AttentionShape& s, DType dtype, const char* direction) {
  if (dtype != DType::Float16 && dtype != DType::BFloat16)
    throw Error("UNSUPPORTED", kOp,
                std::string("attention ") + direction + " on CUDA: dtype " + dtype_name(dtype) +
                    " is not supported (float16 or bfloat16)");
  if (s.Dv != s.D)
    throw Error("UNSUPPORTED", kOp,
                std::string("attention ") + direction + " on CUDA: the value head dim " + std::to_string(s.Dv) +
                    " must equal the query/key head dim " + std::to_string(s.D));
  const Entry* found = nullptr;
  for (int i = 0; i < count; ++i)
    if (entries[i].dtype == dtype && entries[i].head_dim == s.D) found = &entries[i];
  if (!found)
    throw Error("UNSUPPORTED", kOp,
                std::string("attention ") + direction + " on CUDA: head dim " + std::to_string(s.D) + " for " +
                    dtype_name(dtype) + " is not compiled into this build (compiled: " +
                    head_dims(entries, count, dtype) + ")");
  if (s.B < 0 || s.Nq < 0 || s.Nk < 0 || s.H <= 0 || s.Hkv <= 0 || s.H % s.Hkv != 0)
    throw Error("SHAPE", kOp,
                "attention on CUDA: expected H > 0 to be a multiple of Hkv > 0, received H = " + std::to_string(s.H) +
                    ", Hkv = " + std::to_string(s.Hkv));
  // Grid: x = tiles (< 2^31), y = heads, z = batch (each < 65536).
  if (s.B > 65535 || s.H > 65535 || (s.Nq + 63) / 64 > 0x7fffffff || (s.Nk + 63) / 64 > 0x7fffffff)
    throw Error("UNSUPPORTED", kOp, "attention on CUDA: batch and heads must be < 65536");
  return *found;
}

inline void check_aligned(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    throw Error("UNSUPPORTED", kOp, std::string("attention on CUDA: ") + what + " must be 16-byte aligned");
}

inline FwdArgs fwd_args(const AttentionFwdParams& p) {
  FwdArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.out = p.out;
  a.lse = p.lse;
  a.B = p.shape.B;
  a.Nq = p.shape.Nq;
  a.Nk = p.shape.Nk;
  a.H = p.shape.H;
  a.Hkv = p.shape.Hkv;
  a.scale = p.scale;
  return a;
}

inline BwdArgs bwd_args(const AttentionBwdParams& p, float* workspace) {
  BwdArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.out = p.out;
  a.dout = p.dout;
  a.lse = p.lse;
  a.dlse = p.dlse;
  a.dq = p.dq;
  a.dk = p.dk;
  a.dv = p.dv;
  a.B = p.shape.B;
  a.Nq = p.shape.Nq;
  a.Nk = p.shape.Nk;
  a.H = p.shape.H;
  a.Hkv = p.shape.Hkv;
  a.scale = p.scale;
  a.workspace = workspace;
  return a;
}

inline DenseMask dense_mask(const AttentionShape& s, const DenseMaskOptions& o) {
  return DenseMask::make(s.Nq, s.Nk, o.causal, o.left, o.right);
}

// Checks a forward request and returns its kernel.
inline const FwdEntry<DenseMask>& select_fwd(const AttentionFwdParams& p) {
  using Tab = Table<DenseMask>;
  const auto& e = select(Tab::fwd, Tab::fwd_count, p.shape, p.dtype, "forward");
  for (const void* ptr : {p.q, p.k, p.v, static_cast<const void*>(p.out)}) check_aligned(ptr, "q, k, v and out");
  return e;
}

inline const BwdEntry<DenseMask>& select_bwd(const AttentionBwdParams& p) {
  using Tab = Table<DenseMask>;
  const auto& e = select(Tab::bwd, Tab::bwd_count, p.shape, p.dtype, "backward");
  for (const void* ptr : {p.q, p.k, p.v, p.out, p.dout, static_cast<const void*>(p.dq), static_cast<const void*>(p.dk),
                          static_cast<const void*>(p.dv)})
    check_aligned(ptr, "q, k, v, out, dout, dq, dk and dv");
  return e;
}

// The backward in stream order; a.workspace holds bwd_workspace_floats(B, H, Nq) floats.
template <typename Mask>
void run_bwd(const BwdEntry<Mask>& e, const BwdArgs& a, const Mask& mask, cudaStream_t stream) {
  e.prep(a, stream);
  e.dkdv(a, mask, stream);
  e.dq(a, mask, stream);
}

}  // namespace attnkit::cuda::fmha
