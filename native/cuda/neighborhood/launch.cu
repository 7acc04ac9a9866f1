// The neighborhood attention entry points on CUDA (device.h: run_neighborhood_forward / _backward):
// select the compiled kernel for the rank, dtype, head dim and tile shape (dispatch.h), build the
// policy, and enqueue the fused attention kernels of ../fmha/ on the stream (the backward with its
// float32 workspace from the stream-ordered allocator). nvcc only; the emulator tests call the same
// table entries directly.
#include <cuda_runtime.h>

#include "../device.h"
#include "../device_check.cuh"
#include "dispatch.h"

namespace attnkit::cuda {

void run_neighborhood_forward(const AttentionFwdParams& p, const NeighborhoodOptions& o, void* stream) {
  neighborhood::with_rank(o.rank, "neighborhood", [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto& e = neighborhood::select_fwd<R>(p, o);
    if (p.shape.B == 0 || p.shape.Nq == 0) return;
    e.run(fmha::fwd_args(p), neighborhood::make_mask<R>(o), static_cast<cudaStream_t>(stream));
  });
}

void run_neighborhood_backward(const AttentionBwdParams& p, const NeighborhoodOptions& o, void* stream) {
  const char* op = "neighborhoodBackward";
  neighborhood::with_rank(o.rank, op, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto& e = neighborhood::select_bwd<R>(p, o);
    const AttentionShape& s = p.shape;
    if (s.B == 0 || s.Nq == 0) return;
    const auto cs = static_cast<cudaStream_t>(stream);
    const size_t bytes = static_cast<size_t>(fmha::bwd_workspace_floats(s.B, s.H, s.Nq)) * sizeof(float);
    float* workspace = nullptr;
    check(cudaMallocAsync(reinterpret_cast<void**>(&workspace), bytes, cs), op,
          ("allocating the " + std::to_string(bytes) + "-byte backward workspace").c_str());
    try {
      fmha::run_bwd(e, fmha::bwd_args(p, workspace), neighborhood::make_mask<R>(o), cs);
    } catch (...) {
      cudaFreeAsync(workspace, cs);
      throw;
    }
    check(cudaFreeAsync(workspace, cs), op, "cudaFreeAsync(neighborhood workspace)");
  });
}

}  // namespace attnkit::cuda
