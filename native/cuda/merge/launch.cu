// The attention merge entry points on CUDA (device.h: run_merge_forward / run_merge_backward):
// select the compiled kernel for the dtype (dispatch.h) and enqueue it on the stream. nvcc only; the
// emulator tests call the same table entries directly.
#include <cuda_runtime.h>

#include "../device.h"
#include "../device_check.cuh"
#include "dispatch.h"

namespace attnkit::cuda {

void run_merge_forward(const MergeParams& p, void* stream) {
  const auto& e = merge::select(p.dtype, p.parts, false, "mergeAttention");
  if (p.rows == 0) return;
  e.fwd(merge::fwd_args(p), static_cast<cudaStream_t>(stream));
  check(cudaGetLastError(), "mergeAttention", "the merge kernel launch");
}

void run_merge_backward(const MergeBwdParams& p, void* stream) {
  const auto& e = merge::select(p.dtype, p.parts, true, "mergeAttentionBackward");
  if (p.rows == 0) return;
  e.bwd(merge::bwd_args(p), static_cast<cudaStream_t>(stream));
  check(cudaGetLastError(), "mergeAttentionBackward", "the merge backward kernel launch");
}

}  // namespace attnkit::cuda
