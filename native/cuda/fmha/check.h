// Host-side launch plumbing shared by the kernel launchers: the opt-in for more than 48 KiB of
// dynamic shared memory and the check after a launch. Under nvcc a CUDA error becomes
// attnkit::Error("CUDA") through the runtime's one error helper (../device_check.cuh); under the
// SIMT emulator (g++) a launch is synchronous and throws simt::Error itself, so both are no-ops there.
#pragma once
#include <cstddef>

#include "../cuda_compat.cuh"

#if defined(__CUDACC__)
#include "../device_check.cuh"
#endif

namespace attnkit::cuda::fmha {

constexpr const char* kOp = "attention";

template <typename Kernel>
void allow_dynamic_smem(Kernel* kernel, size_t bytes) {
#if defined(__CUDACC__)
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(bytes)),
          kOp, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
#else
  (void)kernel;
  (void)bytes;
#endif
}

inline void check_launch(const char* kernel) {
#if defined(__CUDACC__)
  check(cudaGetLastError(), kOp, kernel);
#else
  (void)kernel;
#endif
}

}  // namespace attnkit::cuda::fmha
