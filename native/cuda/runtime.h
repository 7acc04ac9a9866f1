// The CUDA runtime module. This build links cudart statically and never links libcuda, so the
// addon loads on machines without a driver; availability and the reason it is missing are asked
// of the runtime at call time.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace attnkit::cuda {

struct CudaDevice {
  std::string name;
  int major = 0, minor = 0;  // compute capability
  int64_t memory = 0;        // bytes
  int multiprocessors = 0;
};

struct CudaInfo {
  bool compiled = false;   // CUDA sources are part of this build
  bool available = false;  // at least one usable device and a driver
  int device_count = 0;
  std::string reason;      // why not available ("" when available)
  std::string archs;       // architectures compiled into this build, e.g. "80;86;89;90"
  int runtime_version = 0;
  int driver_version = 0;
  std::vector<CudaDevice> devices;  // when available
};

CudaInfo cuda_info();

}  // namespace attnkit::cuda
