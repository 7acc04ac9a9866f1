// The blockSparse family's runtime -> compile-time switch: the generated table (generated/dispatch.h,
// from native/cuda/instantiations.json) of the fmha kernels instantiated with the block-sparse policy,
// the checks that turn a request into one of its entries or an attnkit::Error naming the op, and the
// policy over a device plan. Host code; compiles under nvcc (launch.cu) and under g++ (the emulator
// tests run every table entry).
#pragma once
#include <cstdint>
#include <string>

#include "../cuda_compat.cuh"
#include "../fmha/dispatch.h"
#include "attnkit/mask_block_sparse.h"
#include "plan.h"
#include "policy.h"

namespace attnkit::cuda::block_sparse {

using FwdEntry = fmha::FwdEntry<BlockSparseDeviceMask>;
using BwdEntry = fmha::BwdEntry<BlockSparseDeviceMask>;
struct Table;  // defined by generated/dispatch.h

constexpr const char* kFwdOp = "blockSparseAttention";
constexpr const char* kBwdOp = "blockSparseAttentionBackward";
constexpr int64_t kMaxTokens = int64_t(1) << 30;

}  // namespace attnkit::cuda::block_sparse

#include "generated/dispatch.h"

namespace attnkit::cuda::block_sparse {

// The entry for the request's dtype and head dim; Error UNSUPPORTED / SHAPE naming `op` otherwise.
template <typename Entry>
const Entry& select_entry(const Entry* entries, int count, const AttentionShape& s, DType dtype, const char* op) {
  const std::string on = std::string(op) + " on CUDA: ";
  if (s.Dv != s.D)
    throw Error("UNSUPPORTED", op, on + "the value head dim " + std::to_string(s.Dv) + " must equal the query/key head dim " +
                                       std::to_string(s.D));
  const Entry* found = nullptr;
  for (int i = 0; i < count; ++i)
    if (entries[i].dtype == dtype && entries[i].head_dim == s.D) found = &entries[i];
  if (!found)
    throw Error("UNSUPPORTED", op, on + "head dim " + std::to_string(s.D) + " for " + dtype_name(dtype) +
                                       " is not compiled into this build (compiled: " + fmha::head_dims(entries, count, dtype) + ")");
  if (s.B < 0 || s.Nq < 0 || s.Nk < 0 || s.H <= 0 || s.Hkv <= 0 || s.H % s.Hkv != 0)
    throw Error("SHAPE", op, on + "expected H > 0 to be a multiple of Hkv > 0, received H = " + std::to_string(s.H) +
                                 ", Hkv = " + std::to_string(s.Hkv));
  if (s.B > 65535 || s.H > 65535)
    throw Error("UNSUPPORTED", op, on + "batch and heads must be < 65536");
  if (s.Nq > kMaxTokens || s.Nk > kMaxTokens)  // the policy's 32-bit indices (policy.h)
    throw Error("UNSUPPORTED", op, on + "sequences must be shorter than 2^30 tokens");
  return *found;
}

inline void check_aligned(const void* p, const char* op) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
    throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: the tensors must be 16-byte aligned");
}

inline const FwdEntry& select_fwd(const AttentionFwdParams& p) {
  const FwdEntry& e = select_entry(Table::fwd, Table::fwd_count, p.shape, p.dtype, kFwdOp);
  for (const void* ptr : {p.q, p.k, p.v, static_cast<const void*>(p.out)}) check_aligned(ptr, kFwdOp);
  return e;
}

inline const BwdEntry& select_bwd(const AttentionBwdParams& p) {
  const BwdEntry& e = select_entry(Table::bwd, Table::bwd_count, p.shape, p.dtype, kBwdOp);
  for (const void* ptr : {p.q, p.k, p.v, p.out, p.dout, static_cast<const void*>(p.dq), static_cast<const void*>(p.dk),
                          static_cast<const void*>(p.dv)})
    check_aligned(ptr, kBwdOp);
  return e;
}

// A mask's device plan: the buffer (plan_layout(view, listed).ints int32 elements), built by the plan
// kernel when `build` (the first use of the mask on its device), read as it is otherwise.
struct DevicePlan {
  int32_t* base = nullptr;
  int64_t ints = 0;
  bool build = false;
  int64_t full_cap = 0, part_cap = 0;  // elements of the mask's index lists
};

// The policy of a problem with B batch entries and H heads over `view` and its plan; enqueues the
// plan's build first when asked. Throws ARGUMENT (naming `op`) when the buffer does not fit the mask.
inline BlockSparseDeviceMask mask_of(const BlockMaskView& view, const DevicePlan& plan, int64_t B, int64_t H, const char* op,
                               cudaStream_t stream) {
  const PlanLayout l = plan_layout(view, plan.full_cap + plan.part_cap);
  if (plan.base == nullptr || plan.ints != l.ints)
    throw Error("ARGUMENT", op, std::string(op) + ": the mask's device plan has " + std::to_string(plan.ints) +
                                    " int32 elements, its geometry needs " + std::to_string(l.ints));
  if (plan.build) {
    PlanArgs a;
    a.m = view;
    a.full_cap = plan.full_cap;
    a.part_cap = plan.part_cap;
    a.l = l;
    a.base = plan.base;
    build_plan(a, stream);
  }
  BlockSparseDeviceMask mask;
  mask.view = view;
  mask.plan = plan_view(l, plan.base);
  mask.B = B;
  mask.H = H;
  return mask;
}

}  // namespace attnkit::cuda::block_sparse
