// The runtime's kernels (native/cuda/device_kernels.cu: conversion, spin, fault) on the fake device:
// host code run in order on the stream, with the same element conversions (attnkit/dtype.h).
#include <cuda_runtime.h>

#include "fake.h"

#include <chrono>
#include <thread>

#include "attnkit/dtype.h"
#include "device.h"

namespace attnkit::cuda {
static float load(const void* s, DType t, int64_t i) {
  switch (t) {
    case DType::Float32: return static_cast<const float*>(s)[i];
    case DType::Float16: return f16_to_f32(static_cast<const uint16_t*>(s)[i]);
    case DType::BFloat16: return bf16_to_f32(static_cast<const uint16_t*>(s)[i]);
    case DType::Int32: return float(static_cast<const int32_t*>(s)[i]);
    case DType::UInt8: return float(static_cast<const uint8_t*>(s)[i]);
  }
  return 0;
}
static void store(void* d, DType t, int64_t i, float v) {
  switch (t) {
    case DType::Float32: static_cast<float*>(d)[i] = v; break;
    case DType::Float16: static_cast<uint16_t*>(d)[i] = f32_to_f16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(d)[i] = f32_to_bf16(v); break;
    case DType::Int32: static_cast<int32_t*>(d)[i] = int32_t(v); break;
    case DType::UInt8: static_cast<uint8_t*>(d)[i] = uint8_t(v); break;
  }
}
void convert(const void* src, DType from, void* dst, DType to, int64_t n, void* h, const char*) {
  if (n == 0) return;
  fakeLaunch(static_cast<cudaStream_t>(h), [=] {
    fakeCheckRange(src, size_t(n * dtype_size(from)), "convert src");
    fakeCheckRange(dst, size_t(n * dtype_size(to)), "convert dst");
    for (int64_t i = 0; i < n; ++i) store(dst, to, i, load(src, from, i));
  });
}
void spin(double ms, void* h) {
  fakeLaunch(static_cast<cudaStream_t>(h), [ms] { std::this_thread::sleep_for(std::chrono::microseconds(int64_t(ms * 1000))); });
}
void fault(void* h) {
  fakeLaunch(static_cast<cudaStream_t>(h), [] { fakeSetSticky(cudaErrorIllegalAddress); });
}
}  // namespace attnkit::cuda
