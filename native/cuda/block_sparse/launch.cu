// The block-sparse attention entry points on CUDA (device.h: run_block_sparse_forward / _backward):
// check the request against the generated table (dispatch.h), build the mask's plan on the stream
// when it is the mask's first use on the device, and enqueue the fmha kernels with the block-sparse
// policy. nvcc only (and g++ against the fake device); the emulator tests call the same entries.
#include <cuda_runtime.h>

#include "../device.h"
#include "../device_check.cuh"
#include "dispatch.h"

namespace attnkit::cuda {

namespace {
block_sparse::DevicePlan plan_of(const BlockSparseDevice& d) {
  return {d.plan, d.plan_ints, d.build_plan, d.full_capacity, d.partial_capacity};
}
}  // namespace

void run_block_sparse_forward(const AttentionFwdParams& p, const BlockMaskView& view, const BlockSparseDevice& d,
                              void* raw) {
  const auto stream = static_cast<cudaStream_t>(raw);
  const auto& e = block_sparse::select_fwd(p);
  const block_sparse::BlockSparseDeviceMask mask = block_sparse::mask_of(view, plan_of(d), p.shape.B, p.shape.H, block_sparse::kFwdOp, stream);
  if (p.shape.B == 0 || p.shape.Nq == 0) return;
  e.run(fmha::fwd_args(p), mask, stream);
}

void run_block_sparse_backward(const AttentionBwdParams& p, const BlockMaskView& view, const BlockSparseDevice& d,
                               void* raw) {
  const auto stream = static_cast<cudaStream_t>(raw);
  const char* op = block_sparse::kBwdOp;
  const auto& e = block_sparse::select_bwd(p);
  const block_sparse::BlockSparseDeviceMask mask = block_sparse::mask_of(view, plan_of(d), p.shape.B, p.shape.H, op, stream);
  const AttentionShape& s = p.shape;
  if (s.B == 0 || (s.Nq == 0 && s.Nk == 0)) return;
  const size_t bytes = static_cast<size_t>(fmha::bwd_workspace_floats(s.B, s.H, s.Nq)) * sizeof(float);
  float* workspace = nullptr;
  if (bytes > 0)
    check(cudaMallocAsync(reinterpret_cast<void**>(&workspace), bytes, stream), op,
          ("allocating the " + std::to_string(bytes) + "-byte backward workspace").c_str());
  try {
    fmha::run_bwd(e, fmha::bwd_args(p, workspace), mask, stream);
  } catch (...) {
    if (workspace) cudaFreeAsync(workspace, stream);
    throw;
  }
  if (workspace) check(cudaFreeAsync(workspace, stream), op, "cudaFreeAsync(block-sparse workspace)");
}

}  // namespace attnkit::cuda
