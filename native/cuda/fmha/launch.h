// Host entry points of the dense fused attention CUDA kernels (FlashAttention-2 structure on
// mma.sync; docs/cuda-kernels.md). Stream-ordered: they enqueue on `stream` and return. Tensors are
// device pointers in the layouts of attnkit/attention.h, 16-byte aligned; float16 or bfloat16 with
// D == Dv in the compiled head dims (instantiations.json), otherwise attnkit::Error("UNSUPPORTED");
// a failed launch or allocation is attnkit::Error("CUDA") (or "OOM"). The backward takes a float32
// workspace of 2 * B * H * ceil(Nq / 64) * 64 floats from the stream-ordered allocator.
#pragma once

#include "attnkit/attention.h"

struct CUstream_st;  // as cuda_runtime_api.h declares it: callers need no CUDA headers
typedef struct CUstream_st* cudaStream_t;

namespace attnkit::cuda {

void attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask, cudaStream_t stream);
void attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask, cudaStream_t stream);

}  // namespace attnkit::cuda
