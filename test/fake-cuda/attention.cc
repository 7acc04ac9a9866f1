// Attention on the fake device: the real launchers (native/cuda/fmha/launch.cu, compiled with
// their entry points renamed *_emulated) over the kernels run by the SIMT emulator. An emulated
// launch runs at once on the calling thread, so the stream is drained first: the kernels then see
// everything enqueued before them, as on a GPU.
#include <cuda_runtime.h>

#include "fmha/launch.h"  // with -Dattention_forward=attention_forward_emulated etc.

#undef attention_forward
#undef attention_backward

namespace attnkit::cuda {
void attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask, cudaStream_t stream) {
  cudaStreamSynchronize(stream);
  attention_forward_emulated(p, mask, stream);
}
void attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask, cudaStream_t stream) {
  cudaStreamSynchronize(stream);
  attention_backward_emulated(p, mask, stream);
}
}  // namespace attnkit::cuda
