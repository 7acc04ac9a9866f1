// The runtime's own small kernels: elementwise dtype conversion (Tensor.to(dtype) on a CUDA tensor),
// the elementwise sum of two tensors in float32 arithmetic (the `add` op: gradient accumulation, e.g.
// neighborhood attention's dq with additional keys), and two test hooks: a spin kernel that keeps a stream busy and a kernel that faults. The conversions use the
// host+device functions of attnkit/dtype.h, so a CUDA conversion is bit-identical to the CPU's.
// Compiled by nvcc for the GPU, and by g++ for the fake CUDA device (test/fake-cuda/), where the
// kernels run on the SIMT emulator: launches go through ATTNKIT_LAUNCH (cuda_compat.cuh).
#include <cstdint>

#include "cuda_compat.cuh"

#include "attnkit/dtype.h"
#include "device.h"
#include "device_check.cuh"

namespace attnkit::cuda {

namespace {

__device__ __forceinline__ float load_element(const void* src, DType t, int64_t i) {
  switch (t) {
    case DType::Float32: return static_cast<const float*>(src)[i];
    case DType::Float16: return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::BFloat16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::Int32: return float(static_cast<const int32_t*>(src)[i]);
    case DType::UInt8: return float(static_cast<const uint8_t*>(src)[i]);
  }
  return 0.f;
}

__device__ __forceinline__ void store_element(void* dst, DType t, int64_t i, float v) {
  switch (t) {
    case DType::Float32: static_cast<float*>(dst)[i] = v; break;
    case DType::Float16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v); break;
    case DType::Int32: static_cast<int32_t*>(dst)[i] = int32_t(v); break;
    case DType::UInt8: static_cast<uint8_t*>(dst)[i] = uint8_t(v); break;
  }
}

__global__ void convert_kernel(const void* src, DType from, void* dst, DType to, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store_element(dst, to, i, load_element(src, from, i));
}

__global__ void add_kernel(const void* a, const void* b, void* out, DType t, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store_element(out, t, i, load_element(a, t, i) + load_element(b, t, i));
}

__global__ void fault_kernel(int* p) { *p = 1; }

__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) __nanosleep(1000);
}

constexpr int kThreads = 256;
// Blocks of an elementwise grid-stride kernel over n elements.
dim3 elementwise_grid(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return dim3(unsigned(blocks < 65535 * 8 ? blocks : 65535 * 8));
}

}  // namespace

void convert(const void* src, DType from, void* dst, DType to, int64_t n, void* h, const char* op) {
  auto s = static_cast<cudaStream_t>(h);
  if (n == 0) return;
  if (from == to) {
    check(cudaMemcpyAsync(dst, src, size_t(n * dtype_size(from)), cudaMemcpyDeviceToDevice, s), op, "cudaMemcpyAsync");
    return;
  }
  ATTNKIT_LAUNCH(convert_kernel, elementwise_grid(n), dim3(kThreads), 0, s, src, from, dst, to, n);
  check(cudaGetLastError(), op, "the conversion kernel launch");
}

void add(const void* a, const void* b, void* out, DType t, int64_t n, void* h, const char* op) {
  if (n == 0) return;
  ATTNKIT_LAUNCH(add_kernel, elementwise_grid(n), dim3(kThreads), 0, static_cast<cudaStream_t>(h), a, b, out, t, n);
  check(cudaGetLastError(), op, "the add kernel launch");
}

void spin(double ms, void* h) {
  int device = 0, khz = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, device);  // the peak clock: spins at least `ms`
  if (khz <= 0) khz = 2000000;
  ATTNKIT_LAUNCH(spin_kernel, dim3(1), dim3(1), 0, static_cast<cudaStream_t>(h), static_cast<long long>(ms * khz));
  check(cudaGetLastError(), "test", "the spin kernel launch");
}

void fault(void* h) {
  ATTNKIT_LAUNCH(fault_kernel, dim3(1), dim3(1), 0, static_cast<cudaStream_t>(h), reinterpret_cast<int*>(uintptr_t(16)));
  check(cudaGetLastError(), "test", "the fault kernel launch");
}

}  // namespace attnkit::cuda
