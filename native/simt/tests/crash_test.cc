// Bugs that end the process rather than fail a launch; test/simt.test.ts runs each case alone and
// reads stderr.
//   oob_shared_write  (AddressSanitizer build) a kernel writes one element past its dynamic shared
//                     memory: ASan reports a heap-buffer-overflow at this file's kernel line, as
//                     compute-sanitizer would on a GPU.
//   stack_overflow    unbounded recursion in a kernel hits the guard page under its fiber stack: the
//                     emulator names the CUDA thread before the process dies of SIGSEGV.
#include <vector>

#include "../../cuda/cuda_compat.cuh"
#include "harness.h"

namespace {

__global__ void oob_shared_kernel(float* out, int n) {
  ATTNKIT_DYNAMIC_SMEM(float, s);
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) s[n] = 1.0f;  // OOB_WRITE: one past the end of the block's n floats
  out[threadIdx.x] = s[threadIdx.x];
}

SIMT_TEST(oob_shared_write) {
  const int n = 64;
  std::vector<float> out(n);
  auto* k = &oob_shared_kernel;
  ATTNKIT_LAUNCH(k, 1, n, n * sizeof(float), 0, out.data(), n);
  simt_test::note("oob_shared_write", "not detected");
}

__device__ int recurse(volatile int* p, int depth) {
  volatile int frame[64];
  if (depth > (1 << 30)) return 0;  // never reached: the stack ends first
  frame[depth % 64] = depth;
  *p += frame[(depth * 7) % 64];
  return recurse(p, depth + 1) + frame[0];
}

__global__ void overflow_kernel(int* out) {
  volatile int sink = 0;
  if (threadIdx.x == 7) out[0] = recurse(&sink, 0);
}

SIMT_TEST(stack_overflow) {
  int out = 0;
  auto* k = &overflow_kernel;
  ATTNKIT_LAUNCH(k, 1, 32, 0, 0, &out);
  simt_test::note("stack_overflow", "not detected");
}

}  // namespace

SIMT_TEST_MAIN
