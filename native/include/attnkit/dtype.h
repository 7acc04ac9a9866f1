// Element types and the exact float <-> float16 / bfloat16 conversions (round to nearest, ties to
// even; subnormals, signed zeros, infinities and NaN preserved). The numbering is shared with the
// TypeScript dtype table (src/dtype.ts) and must not change.
#pragma once
#include <cstdint>
#include <cstring>
#include "attnkit/common.h"

namespace attnkit {

enum class DType : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2, Int32 = 3, UInt8 = 4 };

inline int64_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: case DType::Int32: return 4;
    case DType::Float16: case DType::BFloat16: return 2;
    case DType::UInt8: return 1;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int32: return "int32";
    case DType::UInt8: return "uint8";
  }
  return "?";
}

ATTNKIT_HD uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
ATTNKIT_HD float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

ATTNKIT_HD float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

ATTNKIT_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet the NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // ties to even; overflow carries into Inf correctly
  return uint16_t(u >> 16);
}

ATTNKIT_HD float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));  // Inf / NaN (payload kept)
  if (exp == 0) {
    if (man == 0) return bits_f32(sign);
    // subnormal: value = man * 2^-24, exact in float32
    float v = float(man) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

ATTNKIT_HD uint16_t f32_to_f16(float f) {
  uint32_t u = f32_bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN stays NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (a < 0x38800000u) {
    // result is subnormal or zero: value / 2^-24 rounded to nearest even integer
    if (a < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself ties to 0, even)
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;  // 14 + (113 - e) with the implicit bit at position 23
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return uint16_t(sign | r);
  }
  uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15 (still with 13 extra mantissa bits)
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}

}  // namespace attnkit
