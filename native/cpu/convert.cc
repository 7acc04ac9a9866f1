#include "convert.h"

#include <cmath>
#include <cstring>

#include "thread_pool.h"

namespace attnkit::cpu {

void load_f32(const void* src, DType t, int64_t offset, int64_t n, float* dst) {
  switch (t) {
    case DType::Float32: {
      // An inline loop, not memcpy: kernels copy many short rows (a head dim of floats), where the
      // call overhead of memmove showed up at 5% of a neighborhood-attention profile.
      const float* s = static_cast<const float*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
      break;
    }
    case DType::Float16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      break;
    }
    case DType::BFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::Int32: {
      const int32_t* s = static_cast<const int32_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = float(s[i]);
      break;
    }
    case DType::UInt8: {
      const uint8_t* s = static_cast<const uint8_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = float(s[i]);
      break;
    }
  }
}

void store_f32(const float* src, DType t, int64_t offset, int64_t n, void* dst) {
  switch (t) {
    case DType::Float32: {
      float* d = static_cast<float*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = src[i];
      break;
    }
    case DType::Float16: {
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      break;
    }
    case DType::BFloat16: {
      // Branch-free form of f32_to_bf16 (same results), so the compiler vectorizes the loop.
      uint16_t* d = static_cast<uint16_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, src + i, 4);
        const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        const uint32_t quiet = (u >> 16) | 0x0040u;
        d[i] = uint16_t((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
      }
      break;
    }
    case DType::Int32: {
      int32_t* d = static_cast<int32_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = int32_t(src[i]);
      break;
    }
    case DType::UInt8: {
      uint8_t* d = static_cast<uint8_t*>(dst) + offset;
      for (int64_t i = 0; i < n; ++i) d[i] = uint8_t(src[i]);
      break;
    }
  }
}

void narrow_f64(const double* src, int64_t n, float* dst, bool round_to_odd) {
  for (int64_t i = 0; i < n; ++i) {
    const double x = src[i];
    float f = float(x);
    if (round_to_odd && !std::isnan(x) && double(f) != x) {
      uint32_t u = f32_bits(f);
      if (std::fabs(double(f)) > std::fabs(x)) u -= 1;  // the neighbour toward zero (truncation)
      f = bits_f32(u | 1u);
    }
    dst[i] = f;
  }
}

static constexpr int64_t kChunk = 1 << 14;

void convert(const void* src, DType from, void* dst, DType to, int64_t n) {
  if (from == to) {
    std::memcpy(dst, src, size_t(n * dtype_size(from)));
    return;
  }
  ThreadPool::instance().parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c, int) {
    float buf[1024];
    for (int64_t i = c * kChunk, end = std::min(n, (c + 1) * kChunk); i < end; i += 1024) {
      int64_t m = std::min<int64_t>(1024, end - i);
      load_f32(src, from, i, m, buf);
      store_f32(buf, to, i, m, dst);
    }
  });
}

void add(const void* a, const void* b, void* out, DType t, int64_t n) {
  ThreadPool::instance().parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c, int) {
    float x[1024], y[1024];
    for (int64_t i = c * kChunk, end = std::min(n, (c + 1) * kChunk); i < end; i += 1024) {
      const int64_t m = std::min<int64_t>(1024, end - i);
      load_f32(a, t, i, m, x);
      load_f32(b, t, i, m, y);
      for (int64_t j = 0; j < m; ++j) x[j] += y[j];
      store_f32(x, t, i, m, out);
    }
  });
}

// splitmix64: a counter-based generator, so element i's value never depends on who computes it.
static inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void randn_fill(void* dst, DType t, int64_t n, uint64_t seed) {
  const uint64_t key = mix64(seed ^ 0x61747474656e6b69ull);
  ThreadPool::instance().parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c, int) {
    float buf[1024];
    for (int64_t i = c * kChunk, end = std::min(n, (c + 1) * kChunk); i < end; i += 1024) {
      int64_t m = std::min<int64_t>(1024, end - i);
      for (int64_t j = 0; j < m; ++j) {
        // Box-Muller on a pair of 53-bit uniforms drawn for this element's pair index; the pair's
        // two outputs go to elements 2p and 2p+1.
        int64_t idx = i + j;
        uint64_t pair = uint64_t(idx) >> 1;
        uint64_t r1 = mix64(key + 2 * pair), r2 = mix64(key + 2 * pair + 1);
        double u1 = (double((r1 >> 11) + 1)) * 0x1.0p-53;  // (0, 1]
        double u2 = double(r2 >> 11) * 0x1.0p-53;          // [0, 1)
        double rad = std::sqrt(-2.0 * std::log(u1));
        double ang = 6.283185307179586 * u2;
        buf[j] = float((idx & 1) ? rad * std::sin(ang) : rad * std::cos(ang));
      }
      store_f32(buf, t, i, m, dst);
    }
  });
}

}  // namespace attnkit::cpu
