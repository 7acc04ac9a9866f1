// Dense fused attention on CUDA tensors: the binding's entry to the kernels of native/cuda/fmha/
// (their host launchers, fmha/launch.h). CMake defines ATTNKIT_HAVE_FMHA_CUDA when that header
// exists; without it every CUDA attention call says "not implemented on CUDA yet".
#include <string>

#include "device.h"

#if defined(ATTNKIT_HAVE_FMHA_CUDA)
#include "fmha/launch.h"
#endif

namespace attnkit::cuda {

bool have_attention_kernels() {
#if defined(ATTNKIT_HAVE_FMHA_CUDA)
  return true;
#else
  return false;
#endif
}

// The synchronous check at the call. It mirrors what native/cuda/fmha/instantiations.json
// compiles (float16/bfloat16, head dims 32, 64 and 128, the value head dim equal to the key head
// dim); the launchers check again when the work is issued, so a combination this list lets through
// and the build lacks fails the enqueued work with the launcher's message instead of crashing.
std::string attention_support(const AttentionShape& s, DType dtype, bool backward) {
  (void)backward;
  if (!have_attention_kernels())
    return "not implemented on CUDA yet (this build has no CUDA attention kernels)";
  if (dtype != DType::Float16 && dtype != DType::BFloat16)
    return std::string("dtype ") + dtype_name(dtype) +
           " is not supported on CUDA (the kernels take float16 or bfloat16); convert with .to('bfloat16') "
           "or run on the CPU";
  if (s.D != s.Dv)
    return "a value head dim (" + std::to_string(s.Dv) + ") different from the key head dim (" + std::to_string(s.D) +
           ") is not supported on CUDA";
  if (s.D != 32 && s.D != 64 && s.D != 128)
    return "head dim " + std::to_string(s.D) + " is not supported on CUDA (32, 64 or 128)";
  return "";
}

void run_attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask, void* stream) {
#if defined(ATTNKIT_HAVE_FMHA_CUDA)
  attention_forward(p, mask, static_cast<cudaStream_t>(stream));
#else
  (void)p;
  (void)mask;
  (void)stream;
  throw Error("UNSUPPORTED", "attention", "attention: not implemented on CUDA yet (this build has no CUDA attention kernels)");
#endif
}

void run_attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask, void* stream) {
#if defined(ATTNKIT_HAVE_FMHA_CUDA)
  attention_backward(p, mask, static_cast<cudaStream_t>(stream));
#else
  (void)p;
  (void)mask;
  (void)stream;
  throw Error("UNSUPPORTED", "attentionBackward",
              "attentionBackward: not implemented on CUDA yet (this build has no CUDA attention kernels)");
#endif
}

}  // namespace attnkit::cuda
