// The emulation of native/cuda/ptx.cuh against plain arithmetic:
//   - ldmatrix x1/x2/x4, with and without .trans: every lane's registers equal a plain load of the
//     documented elements of an index-coded matrix;
//   - mma.sync m16n8k16 f16 and bf16: fragments assembled with the PTX ISA's *tabulated* layouts
//     (written here independently of the closed forms the emulator uses) give A*B + C;
//   - the FlashAttention-2 addressing patterns: A (Q, P) via ldmatrix.x4 at row lane%16, column
//     (lane/16)*8; K-major B (K in Q*K^T) via ldmatrix.x4 / x2; N-major B (V in P*V) via .trans —
//     each followed by mma and compared with a plain matrix product;
//   - f16x2 / bf16x2 packing rounds to nearest even, on probes where toward-zero and
//     round-half-away give other bits;
//   - misuse is reported: misaligned or non-shared ldmatrix rows, tensor-core ops in a partial warp.
#include <atomic>
#include <cstdint>
#include <random>
#include <vector>

#include "../../cuda/ptx.cuh"
#include "harness.h"

using simt_test::at;
namespace ptx = attnkit::ptx;

namespace {

std::atomic<int> line_a{0};

uint16_t bits16(__half h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
uint16_t bits16(__nv_bfloat16 h) {
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float to_f(__half h) { return __half2float(h); }
float to_f(__nv_bfloat16 h) { return __bfloat162float(h); }
template <typename T>
T from_f(float f);
template <>
__half from_f<__half>(float f) {
  return __float2half_rn(f);
}
template <>
__nv_bfloat16 from_f<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}

// ---- ldmatrix against plain loads ----------------------------------------------------------------

constexpr int kLd = 24;  // row stride in 16-bit elements: 48 bytes, 16-byte aligned, not a power of two

// Matrices j = 0..3 stored one under the other (rows 8j..8j+7 of a [32][kLd] u16 array), element
// (j, r, c) = 0x1000*j + 0x100*r + c + 1. Lane l passes row l%8 of matrix l/8; lanes beyond the
// instruction's count pass null, which the instruction must ignore.
template <int kNum, bool kTrans>
__global__ void ldmatrix_kernel(const uint16_t* mats, uint32_t* out) {
  ATTNKIT_DYNAMIC_SMEM(uint16_t, s);
  const int l = threadIdx.x;
  for (int i = l; i < 32 * kLd; i += 32) s[i] = mats[i];
  __syncwarp();
  const void* row = l < 8 * kNum ? static_cast<const void*>(s + l * kLd) : nullptr;
  uint32_t r[kNum];
  if constexpr (kNum == 1) {
    if (kTrans) ptx::ldmatrix_x1_trans(r, row);
    else ptx::ldmatrix_x1(r, row);
  } else if constexpr (kNum == 2) {
    if (kTrans) ptx::ldmatrix_x2_trans(r, row);
    else ptx::ldmatrix_x2(r, row);
  } else {
    if (kTrans) ptx::ldmatrix_x4_trans(r, row);
    else ptx::ldmatrix_x4(r, row);
  }
  for (int j = 0; j < kNum; ++j) out[l * kNum + j] = r[j];
}

template <int kNum, bool kTrans>
void check_ldmatrix() {
  std::vector<uint16_t> mats(32 * kLd, 0xdead);
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) mats[(8 * j + r) * kLd + c] = static_cast<uint16_t>(0x1000 * j + 0x100 * r + c + 1);
  std::vector<uint32_t> out(32 * kNum);
  auto* k = &ldmatrix_kernel<kNum, kTrans>;
  ATTNKIT_LAUNCH(k, 1, 32, 32 * kLd * sizeof(uint16_t), 0, mats.data(), out.data());
  // PTX ISA: lane l receives in register j the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix j,
  // or with .trans (2(l%4), l/4) and (2(l%4)+1, l/4); the first one in the low half.
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < kNum; ++j) {
      const int r0 = kTrans ? 2 * (l % 4) : l / 4, c0 = kTrans ? l / 4 : 2 * (l % 4);
      const int r1 = kTrans ? r0 + 1 : r0, c1 = kTrans ? c0 : c0 + 1;
      const uint32_t lo = mats[(8 * j + r0) * kLd + c0], hi = mats[(8 * j + r1) * kLd + c1];
      CHECK_MSG(out[l * kNum + j] == (lo | hi << 16),
                "ldmatrix x" + std::to_string(kNum) + (kTrans ? ".trans" : "") + " lane " + std::to_string(l) +
                    " register " + std::to_string(j));
    }
}

SIMT_TEST(ldmatrix_x1) { check_ldmatrix<1, false>(); }
SIMT_TEST(ldmatrix_x2) { check_ldmatrix<2, false>(); }
SIMT_TEST(ldmatrix_x4) { check_ldmatrix<4, false>(); }
SIMT_TEST(ldmatrix_x1_trans) { check_ldmatrix<1, true>(); }
SIMT_TEST(ldmatrix_x2_trans) { check_ldmatrix<2, true>(); }
SIMT_TEST(ldmatrix_x4_trans) { check_ldmatrix<4, true>(); }

// ---- mma against A*B + C, fragments from the tabulated layouts ------------------------------------

// The PTX ISA's tables for m16n8k16 (g = lane>>2, t = lane%4), written out as tabulated:
//   A: row = g for a0, a1, a4, a5, else g + 8; col = 2t + (i&1) for a0..a3, else 2t + (i&1) + 8
//   B: row (k) = 2t + (i&1) for b0, b1, else 2t + (i&1) + 8; col (n) = g
//   C: row = g for c0, c1, else g + 8; col = 2t + (i&1)
int a_row(int lane, int i) { return (i < 2 || (i >= 4 && i < 6)) ? lane / 4 : lane / 4 + 8; }
int a_col(int lane, int i) { return i < 4 ? 2 * (lane % 4) + (i & 1) : 2 * (lane % 4) + (i & 1) + 8; }
int b_row(int lane, int i) { return i < 2 ? 2 * (lane % 4) + (i & 1) : 2 * (lane % 4) + (i & 1) + 8; }
int b_col(int lane, int) { return lane / 4; }
int c_row(int lane, int i) { return i < 2 ? lane / 4 : lane / 4 + 8; }
int c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }

struct Tables {
  int a[32][8][2], b[32][4][2], c[32][4][2];
};

Tables tables() {
  Tables t;
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 8; ++i) t.a[l][i][0] = a_row(l, i), t.a[l][i][1] = a_col(l, i);
    for (int i = 0; i < 4; ++i) t.b[l][i][0] = b_row(l, i), t.b[l][i][1] = b_col(l, i);
    for (int i = 0; i < 4; ++i) t.c[l][i][0] = c_row(l, i), t.c[l][i][1] = c_col(l, i);
  }
  return t;
}

// A [16][16], B [16][8] (k, n), C, D [16][8], all row-major.
template <typename T>
__global__ void mma_table_kernel(const T* A, const T* B, const float* C, float* D, const Tables* tab) {
  const int l = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int r = 0; r < 4; ++r) {
    const int i = 2 * r;
    a[r] = static_cast<uint32_t>(bits16(A[tab->a[l][i][0] * 16 + tab->a[l][i][1]])) |
           static_cast<uint32_t>(bits16(A[tab->a[l][i + 1][0] * 16 + tab->a[l][i + 1][1]])) << 16;
  }
  for (int r = 0; r < 2; ++r) {
    const int i = 2 * r;
    b[r] = static_cast<uint32_t>(bits16(B[tab->b[l][i][0] * 8 + tab->b[l][i][1]])) |
           static_cast<uint32_t>(bits16(B[tab->b[l][i + 1][0] * 8 + tab->b[l][i + 1][1]])) << 16;
  }
  for (int i = 0; i < 4; ++i) c[i] = C[tab->c[l][i][0] * 8 + tab->c[l][i][1]];
  ptx::mma_m16n8k16<T>(d, a, b, c);
  for (int i = 0; i < 4; ++i) D[tab->c[l][i][0] * 8 + tab->c[l][i][1]] = d[i];
}

template <typename T>
std::vector<T> random_matrix(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<T> m(n);
  for (T& x : m) x = from_f<T>(u(rng));
  return m;
}

// |got - want| <= 1e-5 * (1 + sum |terms|): the emulator rounds once from double.
void check_close(double got, double want, double scale, const std::string& where) {
  CHECK_MSG(std::fabs(got - want) <= 1e-5 * (1.0 + scale),
            where + ": got " + std::to_string(got) + ", want " + std::to_string(want));
}

template <typename T>
void check_mma_tables() {
  std::mt19937 rng(7);
  const std::vector<T> A = random_matrix<T>(256, rng), B = random_matrix<T>(128, rng);
  std::vector<float> C(128), D(128);
  for (int i = 0; i < 128; ++i) C[i] = 0.25f * static_cast<float>(i % 9) - 1.0f;
  const Tables tab = tables();
  auto* k = &mma_table_kernel<T>;
  ATTNKIT_LAUNCH(k, 1, 32, 0, 0, A.data(), B.data(), C.data(), D.data(), &tab);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = C[m * 8 + n], scale = std::fabs(want);
      for (int kk = 0; kk < 16; ++kk) {
        const double p = static_cast<double>(to_f(A[m * 16 + kk])) * to_f(B[kk * 8 + n]);
        want += p;
        scale += std::fabs(p);
      }
      check_close(D[m * 8 + n], want, scale, "D[" + std::to_string(m) + "][" + std::to_string(n) + "]");
    }
}

SIMT_TEST(mma_f16_tabulated_layouts) { check_mma_tables<__half>(); }
SIMT_TEST(mma_bf16_tabulated_layouts) { check_mma_tables<__nv_bfloat16>(); }

// ---- FlashAttention-2 addressing: ldmatrix then mma ------------------------------------------------

constexpr int kS = 24;  // smem row stride (elements) of the 16x16 tiles below

// S = Q * K^T with Q [16 m][16 k], K [16 n][16 k] (K-major B); O = P * V with P [16 m][16 k],
// V [16 k][16 n] (N-major B, via .trans). kX2 loads each n8 half of B with ldmatrix.x2 instead of one
// x4. out: S [16][16] then O [16][16], row-major.
template <typename T, bool kX2>
__global__ void fa2_kernel(const T* Q, const T* K, const T* P, const T* V, float* out) {
  ATTNKIT_DYNAMIC_SMEM(T, s);
  T* sQ = s;
  T* sK = s + 16 * kS;
  T* sP = s + 32 * kS;
  T* sV = s + 48 * kS;
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) {
    sQ[(i / 16) * kS + i % 16] = Q[i];
    sK[(i / 16) * kS + i % 16] = K[i];
    sP[(i / 16) * kS + i % 16] = P[i];
    sV[(i / 16) * kS + i % 16] = V[i];
  }
  __syncwarp();

  uint32_t a[4], b[2][2];
  // Q*K^T
  ptx::ldmatrix_x4(a, sQ + (lane % 16) * kS + (lane / 16) * 8);
  if (kX2) {
    for (int h = 0; h < 2; ++h)  // rows n = 8h + lane%8, column k = ((lane/8)%2)*8
      ptx::ldmatrix_x2(b[h], sK + (8 * h + lane % 8) * kS + ((lane / 8) % 2) * 8);
  } else {
    uint32_t r[4];
    ptx::ldmatrix_x4(r, sK + ((lane % 8) + (lane / 16) * 8) * kS + ((lane / 8) % 2) * 8);
    b[0][0] = r[0], b[0][1] = r[1], b[1][0] = r[2], b[1][1] = r[3];
  }
  for (int h = 0; h < 2; ++h) {
    float acc[4] = {0, 0, 0, 0};
    ptx::mma_m16n8k16<T>(acc, a, b[h], acc);
    for (int i = 0; i < 4; ++i) {
      const int row = lane / 4 + 8 * (i / 2), col = 8 * h + 2 * (lane % 4) + (i % 2);
      out[row * 16 + col] = acc[i];
    }
  }
  // P*V
  ptx::ldmatrix_x4(a, sP + (lane % 16) * kS + (lane / 16) * 8);
  if (kX2) {
    for (int h = 0; h < 2; ++h)  // rows k = lane%16, column n = 8h
      ptx::ldmatrix_x2_trans(b[h], sV + (lane % 16) * kS + 8 * h);
  } else {
    uint32_t r[4];
    ptx::ldmatrix_x4_trans(r, sV + (lane % 16) * kS + (lane / 16) * 8);
    b[0][0] = r[0], b[0][1] = r[1], b[1][0] = r[2], b[1][1] = r[3];
  }
  for (int h = 0; h < 2; ++h) {
    float acc[4] = {0, 0, 0, 0};
    ptx::mma_m16n8k16<T>(acc, a, b[h], acc);
    for (int i = 0; i < 4; ++i) {
      const int row = lane / 4 + 8 * (i / 2), col = 8 * h + 2 * (lane % 4) + (i % 2);
      out[256 + row * 16 + col] = acc[i];
    }
  }
}

template <typename T, bool kX2>
void check_fa2() {
  std::mt19937 rng(11);
  const std::vector<T> Q = random_matrix<T>(256, rng), K = random_matrix<T>(256, rng);
  const std::vector<T> P = random_matrix<T>(256, rng), V = random_matrix<T>(256, rng);
  std::vector<float> out(512);
  auto* k = &fa2_kernel<T, kX2>;
  ATTNKIT_LAUNCH(k, 1, 32, 64 * kS * sizeof(T), 0, Q.data(), K.data(), P.data(), V.data(), out.data());
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      double s = 0, ss = 0, o = 0, os = 0;
      for (int kk = 0; kk < 16; ++kk) {
        const double qk = static_cast<double>(to_f(Q[m * 16 + kk])) * to_f(K[n * 16 + kk]);
        const double pv = static_cast<double>(to_f(P[m * 16 + kk])) * to_f(V[kk * 16 + n]);
        s += qk, ss += std::fabs(qk), o += pv, os += std::fabs(pv);
      }
      const std::string where = "[" + std::to_string(m) + "][" + std::to_string(n) + "]";
      check_close(out[m * 16 + n], s, ss, "Q*K^T" + where);
      check_close(out[256 + m * 16 + n], o, os, "P*V" + where);
    }
}

SIMT_TEST(fa2_f16_x4) { check_fa2<__half, false>(); }
SIMT_TEST(fa2_bf16_x4) { check_fa2<__nv_bfloat16, false>(); }
SIMT_TEST(fa2_f16_x2) { check_fa2<__half, true>(); }
SIMT_TEST(fa2_bf16_x2) { check_fa2<__nv_bfloat16, true>(); }

// Packing rounds to nearest, lo in the low half, as the device intrinsics do.
SIMT_TEST(pack_helpers) {
  const uint32_t h = ptx::pack_f16x2(1.0f, -2.5f);
  CHECK((h & 0xffffu) == 0x3c00u && (h >> 16) == 0xc100u);
  const uint32_t b = ptx::pack_bf16x2(1.0f, 3.0f + 1.0f / 256);  // below half an ulp (1/128): 3.0
  CHECK((b & 0xffffu) == 0x3f80u && (b >> 16) == 0x4040u);
  CHECK(ptx::pack2<__half>(0.5f, 0.25f) == ptx::pack_f16x2(0.5f, 0.25f));
}

// Probes that tell the rounding modes apart (the value above, 3 + 2^-8, rounds to 3.0 in every mode
// that rounds toward zero or to nearest, so it cannot tell them apart). x = 1 + m 2^-p: a tie with an
// even neighbour below (RNE and RTZ down, round-half-away up), a tie with an odd one (RNE and
// half-away up, RTZ down), just above and just below half an ulp, both signs, the overflow boundary
// (half an ulp past the largest finite value goes to infinity only when rounding to nearest), f16
// subnormal ties, and NaN. Expected bits written out by hand from the formats.
struct Probe {
  float x;
  uint16_t want;
  const char* what;
};

float f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const Probe kBf16Probes[] = {
    {1.0f + 0x1p-8f, 0x3f80, "tie, even below: RNE down (half-away would go up)"},
    {1.0f + 0x1p-7f + 0x1p-8f, 0x3f82, "tie, odd below: RNE up (toward zero would stay)"},
    {1.0f + 0x1p-8f + 0x1p-16f, 0x3f81, "just above half an ulp: up"},
    {1.0f + 0x1p-8f - 0x1p-16f, 0x3f80, "just below half an ulp: down"},
    {-(1.0f + 0x1p-7f + 0x1p-8f), 0xbf82, "negative tie, odd below: away from zero"},
    {-(1.0f + 0x1p-8f + 0x1p-16f), 0xbf81, "negative, just above half: away from zero"},
    {f32(0x7f7fffffu), 0x7f80, "largest float: rounds to +inf"},
    {f32(0x7f7f7fffu), 0x7f7f, "just below half an ulp under the largest bf16: stays finite"},
};
const Probe kF16Probes[] = {
    {1.0f + 0x1p-11f, 0x3c00, "tie, even below: RNE down"},
    {1.0f + 0x1p-10f + 0x1p-11f, 0x3c02, "tie, odd below: RNE up"},
    {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01, "just above half an ulp: up"},
    {1.0f + 0x1p-11f - 0x1p-20f, 0x3c00, "just below half an ulp: down"},
    {-(1.0f + 0x1p-10f + 0x1p-11f), 0xbc02, "negative tie, odd below: away from zero"},
    {65520.0f, 0x7c00, "half an ulp past 65504: rounds to +inf"},
    {65519.0f, 0x7bff, "just below: 65504"},
    {0x1p-25f, 0x0000, "subnormal tie with 0: to 0 (even)"},
    {3.0f * 0x1p-25f, 0x0002, "subnormal tie, odd below: up"},
};

SIMT_TEST(pack_rounding_modes) {
  const auto check = [](const Probe* probes, size_t n, bool bf16) {
    for (size_t i = 0; i < n; ++i) {
      const Probe& p = probes[i];
      // Each probe in both halves, against a neighbour that rounds exactly.
      const uint32_t lo = bf16 ? ptx::pack_bf16x2(p.x, 1.0f) : ptx::pack_f16x2(p.x, 1.0f);
      const uint32_t hi = bf16 ? ptx::pack_bf16x2(1.0f, p.x) : ptx::pack_f16x2(1.0f, p.x);
      const uint16_t one = bf16 ? 0x3f80 : 0x3c00;
      char msg[256];
      std::snprintf(msg, sizeof msg, "%s pack of %.9g (%s): got 0x%04x / 0x%04x, want 0x%04x", bf16 ? "bf16" : "f16",
                    static_cast<double>(p.x), p.what, lo & 0xffffu, hi >> 16, p.want);
      CHECK_MSG((lo & 0xffffu) == p.want && (lo >> 16) == one && (hi >> 16) == p.want && (hi & 0xffffu) == one, msg);
    }
  };
  check(kBf16Probes, sizeof kBf16Probes / sizeof kBf16Probes[0], true);
  check(kF16Probes, sizeof kF16Probes / sizeof kF16Probes[0], false);
  const uint32_t nan = ptx::pack_bf16x2(NAN, -NAN), hnan = ptx::pack_f16x2(NAN, NAN);
  CHECK(((nan & 0x7f80u) == 0x7f80u) && (nan & 0x7fu) != 0 && ((nan >> 16) & 0x7f80u) == 0x7f80u && ((nan >> 16) & 0x7fu) != 0);
  CHECK(((hnan & 0x7c00u) == 0x7c00u) && (hnan & 0x3ffu) != 0);
}

// ---- misuse ----------------------------------------------------------------------------------------

__global__ void ldmatrix_misaligned_kernel(uint32_t* out) {
  ATTNKIT_DYNAMIC_SMEM(uint16_t, s);
  uint32_t r[4];
  line_a = __LINE__; ptx::ldmatrix_x4(r, s + threadIdx.x * 8 + (threadIdx.x == 9 ? 4 : 0));
  out[threadIdx.x] = r[0];
}

SIMT_TEST(ldmatrix_misaligned_row) {
  std::vector<uint32_t> out(32);
  auto* k = &ldmatrix_misaligned_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 33 * 16, 0, out.data()), "ldmatrix.m8n8.x4 at " + at(__FILE__, line_a),
               "row 1 of matrix 1", "lane 9", "not 16-byte aligned");
}

__global__ void ldmatrix_global_kernel(const uint16_t* g, uint32_t* out) {
  uint32_t r[2];
  line_a = __LINE__; ptx::ldmatrix_x2_trans(r, g + (threadIdx.x % 16) * 8);
  out[threadIdx.x] = r[0];
}

SIMT_TEST(ldmatrix_row_not_in_shared_memory) {
  alignas(16) uint16_t g[16 * 8] = {};
  std::vector<uint32_t> out(32);
  auto* k = &ldmatrix_global_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 0, 0, g, out.data()), "ldmatrix.m8n8.x2.trans at " + at(__FILE__, line_a),
               "not in this block's shared memory");
}

__global__ void mma_half_warp_kernel(float* out) {
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0};
  if (threadIdx.x < 16) {
    line_a = __LINE__; ptx::mma_m16n8k16_f16(c, a, b, c);
  }
  out[threadIdx.x] = c[0];
}

SIMT_TEST(mma_in_a_partial_warp) {
  std::vector<float> out(32);
  auto* k = &mma_half_warp_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 0, 0, out.data()), "mma.sync.m16n8k16.f32.f16",
               at(__FILE__, line_a), "returned from the kernel");
}

SIMT_TEST(mma_in_a_block_smaller_than_a_warp) {
  std::vector<float> out(32);
  auto* k = &mma_half_warp_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 16, 0, 0, out.data()), "names lanes 16-31 that do not exist");
}

}  // namespace

SIMT_TEST_MAIN
