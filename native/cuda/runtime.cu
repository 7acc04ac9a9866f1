// CUDA runtime queries (compiled only when nvcc is found).
#include <cuda_runtime.h>

#include "runtime.h"

#ifndef ATTNKIT_CUDA_ARCHS
#define ATTNKIT_CUDA_ARCHS ""
#endif

namespace attnkit::cuda {

// Queried once: devices and drivers do not come and go while a process runs, and the device
// properties take milliseconds to read.
static CudaInfo query() {
  CudaInfo info;
  info.compiled = true;
  info.archs = ATTNKIT_CUDA_ARCHS;
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess || info.driver_version == 0) {
    info.reason = "no CUDA driver (libcuda.so.1 not found)";
    return info;
  }
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    info.reason = std::string("CUDA unavailable: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later queries start clean
    return info;
  }
  if (n == 0) {
    info.reason = "no CUDA device";
    return info;
  }
  info.device_count = n;
  info.available = true;
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    info.devices.push_back({prop.name, prop.major, prop.minor, int64_t(prop.totalGlobalMem), prop.multiProcessorCount});
  }
  return info;
}

CudaInfo cuda_info() {
  static const CudaInfo info = query();
  return info;
}

}  // namespace attnkit::cuda
