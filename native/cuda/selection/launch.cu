// The block selection entry points on CUDA (device.h: run_moba_select / run_xattention_select):
// select the compiled launchers for the dtype (dispatch.h) and enqueue them on the stream; MoBA's
// pooled keys live in a workspace from the stream-ordered allocator. nvcc only; the emulator tests
// call the same table entries directly.
#include <cuda_runtime.h>

#include "../device.h"
#include "../device_check.cuh"
#include "dispatch.h"

namespace attnkit::cuda {

void run_moba_select(const MobaParams& p, void* stream) {
  static const char* op = "mobaMask";
  const auto& e = selection::select(p.in.dtype, true, op);
  selection::check_shape(p.in, p.mask.bq, op);
  const auto s = static_cast<cudaStream_t>(stream);
  float* kbar = nullptr;
  check(cudaMallocAsync(reinterpret_cast<void**>(&kbar), size_t(selection::moba_workspace_floats(p)) * 4, s), op,
        "cudaMallocAsync(MoBA pooled keys)");
  try {
    selection::run_moba(e, p, kbar, s);
    check(cudaGetLastError(), op, "the MoBA selection kernel launches");
  } catch (...) {
    cudaFreeAsync(kbar, s);
    throw;
  }
  check(cudaFreeAsync(kbar, s), op, "cudaFreeAsync(MoBA pooled keys)");
}

void run_xattention_select(const XattnParams& p, void* stream) {
  static const char* op = "xattentionMask";
  const auto& e = selection::select(p.in.dtype, false, op);
  selection::check_shape(p.in, p.block, op);
  selection::run_xattention(e, p, static_cast<cudaStream_t>(stream));
  check(cudaGetLastError(), op, "the XAttention selection kernel launches");
}

}  // namespace attnkit::cuda
