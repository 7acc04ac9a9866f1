// The selection family's runtime -> compile-time switch: the generated table (generated/dispatch.h,
// from native/cuda/instantiations.json) of the element types this build compiled, with the MoBA and
// the XAttention launcher of each, and the check that turns a request into an entry or an
// attnkit::Error. Host code; compiles under nvcc (launch.cu) and under g++ (the emulator tests run
// every table entry).
#pragma once
#include <string>

#include "../cuda_compat.cuh"
#include "attnkit/error.h"
#include "selection.cuh"

namespace attnkit::cuda::selection {

// The kernels of one dtype that read q and k (the others take every dtype; generated/dispatch.h
// declares them). kbar: the MoBA workspace, moba_workspace_floats(p) floats.
struct Entry {
  DType dtype;
  const char* name;
  void (*moba_pool)(const MobaParams&, float* kbar, cudaStream_t);
  void (*moba_gate)(const MobaParams&, float* kbar, cudaStream_t);
  void (*xattention_score)(const XattnParams&, cudaStream_t);
};

struct Table;  // defined by generated/dispatch.h

inline int64_t moba_workspace_floats(const MobaParams& p) {
  return p.in.B * p.in.Hkv * ceil_div(p.in.Nk, p.block) * p.in.D;
}

}  // namespace attnkit::cuda::selection

#include "generated/dispatch.h"

namespace attnkit::cuda::selection {

// The entry for `dtype` with a launcher for the op (MoBA or XAttention), or Error UNSUPPORTED naming
// what is compiled.
inline const Entry& select(DType dtype, bool moba, const char* op) {
  std::string compiled;
  for (int i = 0; i < Table::count; ++i) {
    const Entry& e = Table::entries[i];
    if (moba ? e.moba_pool == nullptr : e.xattention_score == nullptr) continue;  // listed for the other op only
    if (e.dtype == dtype) return e;
    compiled += (compiled.empty() ? "" : ", ") + std::string(dtype_name(e.dtype));
  }
  throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: dtype " + dtype_name(dtype) +
                                     " is not compiled into this build (compiled: " + compiled + ")");
}

// What one launch can take: grid y/z carry heads and batch, and the mask kernels give one thread
// per query row of a block.
inline void check_shape(const SelectionInput& in, int64_t bq, const char* op) {
  if (in.H >= 65536 || in.B >= 65536)
    throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: batch and heads must be below 65536");
  if (bq > kThreads)
    throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: query blocks of at most " + std::to_string(kThreads) + " rows");
}

// The whole selection, in stream order: scores and picks, then the mask lists (count, offsets, write).
inline void run_moba(const Entry& e, const MobaParams& p, float* kbar, cudaStream_t stream) {
  e.moba_pool(p, kbar, stream);
  e.moba_gate(p, kbar, stream);
  selection_moba_mask(p, false, stream);
  selection_offsets_scan(p.mask, p.in.B * p.in.H * ceil_div(p.in.Nq, p.mask.bq), stream);
  selection_moba_mask(p, true, stream);
}
inline void run_xattention(const Entry& e, const XattnParams& p, cudaStream_t stream) {
  e.xattention_score(p, stream);
  selection_xattention_select(p, stream);
  selection_xattention_mask(p, false, stream);
  selection_offsets_scan(p.mask, p.in.B * p.in.H * ceil_div(p.in.Nq, p.block), stream);
  selection_xattention_mask(p, true, stream);
}

}  // namespace attnkit::cuda::selection
