// Kernels the compile gate must reject (test/compile-gate.test.ts): one with a local-memory array,
// one that spills under its launch bounds, and one with no tensor-core instruction that the test
// marks as a tensor-core kernel (the tripwire). Never part of a build.
#include "../../cuda/cuda_compat.cuh"

// A dynamically indexed 4 KiB array cannot live in registers: a 4096-byte stack frame.
__global__ void gate_local_memory(const float* a, float* b, int i0) {
  float loc[1024];
  for (int i = 0; i < 1024; ++i) loc[i] = a[i * 7 + threadIdx.x];
  b[threadIdx.x] = loc[(i0 + threadIdx.x) & 1023];
}

// 96 live accumulators under a 32-register cap (1024 threads x 2 blocks per SM): spills.
__global__ void __launch_bounds__(1024, 2) gate_spills(const float* a, float* b) {
  float acc[96];
#pragma unroll
  for (int i = 0; i < 96; ++i) acc[i] = a[i * 1024 + threadIdx.x];
#pragma unroll
  for (int r = 0; r < 8; ++r)
#pragma unroll
    for (int i = 0; i < 96; ++i) acc[i] = acc[i] * acc[(i + r + 1) % 96] + 1.0f;
  float s = 0;
#pragma unroll
  for (int i = 0; i < 96; ++i) s += acc[i];
  b[threadIdx.x] = s;
}

// Clean, but computes its product on the CUDA cores.
__global__ void gate_no_tensor_cores(const __half* a, const __half* b, float* c) {
  float s = 0;
  for (int k = 0; k < 16; ++k) s += __half2float(a[threadIdx.x * 16 + k]) * __half2float(b[k]);
  c[threadIdx.x] = s;
}
