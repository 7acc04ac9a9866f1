// check_cuda for native/cuda/fmha/launch.cu compiled by g++ for the fake device (fmha/check.h
// defines it under nvcc only); force-included before launch.cu.
#pragma once
#include <cuda_runtime.h>
#include <string>
#include "attnkit/error.h"
namespace attnkit::cuda::fmha {
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error("CUDA", "attention", std::string(what) + ": " + cudaGetErrorName(err));
}
}  // namespace attnkit::cuda::fmha
