// The dense fused attention entry points (launch.h): check the request against the generated
// dispatch table (dispatch.h), build the mask policy, and enqueue the kernels. nvcc only: the SIMT
// emulator tests call the same table entries directly, with a host workspace.
#include <cuda_runtime.h>

#include "../device_check.cuh"
#include "check.h"
#include "dispatch.h"
#include "launch.h"

namespace attnkit::cuda {

using fmha::kOp;

void attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask, cudaStream_t stream) {
  const auto& entry = fmha::select_fwd(p);
  if (p.shape.B == 0 || p.shape.Nq == 0) return;
  entry.run(fmha::fwd_args(p), fmha::dense_mask(p.shape, mask), stream);
}

void attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask, cudaStream_t stream) {
  const auto& entry = fmha::select_bwd(p);
  const AttentionShape& s = p.shape;
  if (s.B == 0 || (s.Nq == 0 && s.Nk == 0)) return;
  const size_t bytes = static_cast<size_t>(fmha::bwd_workspace_floats(s.B, s.H, s.Nq)) * sizeof(float);
  float* workspace = nullptr;
  if (bytes > 0) {
    check(cudaMallocAsync(reinterpret_cast<void**>(&workspace), bytes, stream), kOp,
          ("allocating the " + std::to_string(bytes) + "-byte backward workspace").c_str());
  }
  try {
    fmha::run_bwd(entry, fmha::bwd_args(p, workspace), fmha::dense_mask(s, mask), stream);
  } catch (...) {
    if (workspace) cudaFreeAsync(workspace, stream);
    throw;
  }
  if (workspace) check(cudaFreeAsync(workspace, stream), kOp, "cudaFreeAsync(attention workspace)");
}

}  // namespace attnkit::cuda
