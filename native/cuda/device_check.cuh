// CUDA error handling shared by the runtime's .cu files (native/cuda/device_*.cu, CUDA build only):
// a cudaError_t becomes attnkit::Error with code OOM (cudaErrorMemoryAllocation) or CUDA, naming the
// op, what failed and the CUDA error's name and description. DeviceGuard switches the calling
// thread's current device and restores it (the runtime's current device is per thread, and the JS
// thread and the CPU workers also release device memory).
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "attnkit/error.h"

namespace attnkit::cuda {

inline std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

[[noreturn]] inline void throw_cuda(cudaError_t e, const std::string& op, const std::string& what) {
  cudaGetLastError();  // clear a non-sticky error so that later calls start clean
  throw Error(e == cudaErrorMemoryAllocation ? "OOM" : "CUDA", op,
              op + ": " + what + " failed: " + cuda_error_text(e));
}

inline void check(cudaError_t e, const std::string& op, const char* what) {
  if (e != cudaSuccess) throw_cuda(e, op, what);
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) cudaSetDevice(device);
    else previous_ = -2;  // nothing to restore
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace attnkit::cuda
