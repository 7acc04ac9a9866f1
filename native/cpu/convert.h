// Row conversions between storage dtypes and the float32 the kernels compute in.
#pragma once
#include <cstdint>

#include "attnkit/dtype.h"

namespace attnkit::cpu {

// dst[i] = float(src[offset + i]) for i < n
void load_f32(const void* src, DType t, int64_t offset, int64_t n, float* dst);
// dst[offset + i] = dtype(src[i]) with round-to-nearest-even
void store_f32(const float* src, DType t, int64_t offset, int64_t n, void* dst);
// Narrows float64 to float32. With round_to_odd, an inexact result gets its last mantissa bit set
// (rounding to odd), so that a later round-to-nearest-even to float16/bfloat16 (at least 2 bits
// narrower) gives the correctly rounded result of the float64 value: no double rounding.
void narrow_f64(const double* src, int64_t n, float* dst, bool round_to_odd);
// Bulk conversions used by tensor factories and reads (parallel over the compute pool).
void convert(const void* src, DType from, void* dst, DType to, int64_t n);
// out = a + b elementwise, computed in float32 (parallel over the compute pool).
void add(const void* a, const void* b, void* out, DType t, int64_t n);
// Standard normal numbers that depend only on (seed, index): the same for every thread count.
void randn_fill(void* dst, DType t, int64_t n, uint64_t seed);

}  // namespace attnkit::cpu
