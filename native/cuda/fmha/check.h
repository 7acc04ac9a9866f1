// Host-side launch plumbing shared by the kernel launchers: the opt-in for more than 48 KiB of
// dynamic shared memory and the check after a launch. Under nvcc a CUDA error becomes
// attnkit::Error("CUDA"); under the SIMT emulator (g++) a launch is synchronous and throws
// simt::Error itself, so both are no-ops there.
#pragma once
#include <cstddef>
#include <string>

#include "../cuda_compat.cuh"
#include "attnkit/error.h"

namespace attnkit::cuda::fmha {

#if defined(__CUDACC__)
inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw Error("CUDA", "attention", std::string(what) + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}
#endif

template <typename Kernel>
void allow_dynamic_smem(Kernel* kernel, size_t bytes) {
#if defined(__CUDACC__)
  if (bytes > 48 * 1024)
    check_cuda(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(bytes)),
               "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
#else
  (void)kernel;
  (void)bytes;
#endif
}

inline void check_launch(const char* kernel) {
#if defined(__CUDACC__)
  check_cuda(cudaGetLastError(), kernel);
#else
  (void)kernel;
#endif
}

}  // namespace attnkit::cuda::fmha
