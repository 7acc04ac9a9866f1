// Stand-in for the CUDA runtime module in builds without CUDA (binding.gyp, or no nvcc found).
#include "runtime.h"

namespace attnkit::cuda {

CudaInfo cuda_info() {
  CudaInfo info;
  info.reason = "attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)";
  return info;
}

}  // namespace attnkit::cuda
