// The merge family's runtime -> compile-time switch: the generated table (generated/dispatch.h, from
// native/cuda/instantiations.json) of the element types this build compiled, and the checks that
// turn a request into one of its entries or an attnkit::Error. Host code; compiles under nvcc
// (launch.cu) and under g++ (the emulator tests run every table entry).
#pragma once
#include <string>

#include "../cuda_compat.cuh"
#include "attnkit/attention.h"
#include "attnkit/error.h"
#include "merge.cuh"

namespace attnkit::cuda::merge {

struct Entry {
  DType dtype;
  const char* name;
  void (*fwd)(const FwdArgs&, cudaStream_t);
  void (*bwd)(const BwdArgs&, cudaStream_t);
};

struct Table;  // defined by generated/dispatch.h

}  // namespace attnkit::cuda::merge

#include "generated/dispatch.h"

namespace attnkit::cuda::merge {

// The entry for `dtype`, `parts` parts and the direction, or Error UNSUPPORTED naming what is compiled.
inline const Entry& select(DType dtype, int parts, bool backward, const char* op) {
  if (parts < 1 || parts > kMaxParts)
    throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: " + std::to_string(parts) +
                                       " parts; one launch merges 1 to " + std::to_string(kMaxParts) +
                                       " (merge larger sets in groups: merging is associative)");
  std::string compiled;
  for (int i = 0; i < Table::count; ++i) {
    const Entry& e = Table::entries[i];
    if (backward ? e.bwd == nullptr : e.fwd == nullptr) continue;  // a dtype listed for the other direction only
    if (e.dtype == dtype) return e;
    compiled += (compiled.empty() ? "" : ", ") + std::string(dtype_name(e.dtype));
  }
  throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: dtype " + dtype_name(dtype) +
                                     " is not compiled into this build (compiled: " + compiled + ")");
}

// The fields both directions share: the parts and the problem size.
template <typename Args, typename Params>
Args common_args(const Params& p) {
  Args a{};
  for (int i = 0; i < p.parts; ++i) {
    a.outs[i] = p.outs[i];
    a.lses[i] = p.lses[i];
  }
  a.parts = p.parts;
  a.rows = p.rows;
  a.dv = p.dv;
  return a;
}

inline FwdArgs fwd_args(const MergeParams& p) {
  FwdArgs a = common_args<FwdArgs>(p);
  a.out = p.out;
  a.lse = p.lse;
  return a;
}

inline BwdArgs bwd_args(const MergeBwdParams& p) {
  BwdArgs a = common_args<BwdArgs>(p);
  for (int i = 0; i < p.parts; ++i) {
    a.douts[i] = p.douts[i];
    a.dlses[i] = p.dlses[i];
  }
  a.out = p.out;
  a.lse = p.lse;
  a.dout = p.dout;
  a.dlse = p.dlse;
  return a;
}

}  // namespace attnkit::cuda::merge
