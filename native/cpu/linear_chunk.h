// Pieces of the CPU linear attention shared by its forward (linear.cc) and its backward
// (linear_backward.cc): layout helpers, feature maps, the per-chunk decays (constant or gated) and
// their masks, the chunk tiles and their loads and stores. Internal to native/cpu/.
// CPU linear attention: the chunked causal forward, the non-causal forward (two GEMMs), the
// backward (forward scan for dq, reverse state-gradient scan for dk, dv, dS0) and the decode step.
// The math, with the chunked identities, is in docs/linear.md; the float64 references in
// src/reference/linear.ts compute the same quantities by the O(N^2) closed form and by the
// token-by-token recurrence.
//
// Notation inside one (batch, head): chunk of n <= C rows, Q~ = scale * phi(q), K~ = phi(k),
// V' = [v, 1] (the ones column only with normalize: it makes the state carry the key sum z, so the
// denominator is the same recurrence as the numerator), M_ij = lambda^(i-j) for i >= j else 0.
//   O      = Lq (Q~ H) + (Q~ K~^T . M) V'          Lq = diag(lambda^(i+1))
//   H_next = lambda^n H + (Lk K~)^T V'             Lk = diag(lambda^(n-1-j))
// Every power of lambda comes from one table pw[m] = lambda^m, m = 0..C, so lambda^(i-j) is never
// formed as lambda^i * lambda^-j (which overflows; docs/anchors §2.4). Powers below 1e-30 are
// flushed to 0: they only scale contributions that are negligible in float32 anyway, and it keeps
// subnormals out of the GEMMs.
// With a gate (per-token log decay g <= 0), lambda^m generalizes to exp of a difference of the
// in-chunk cumulative log decay G (ChunkDecay below): M_ij = exp(G_i - G_j), Lq = diag(exp(G_i)),
// Lk = diag(exp(G_{n-1} - G_j)), lambda^n = exp(G_{n-1}); every exponent is <= 0.
//
// All matrix products go through the active SIMD table's gemm_f32 (N a multiple of 16; padding
// columns are kept at zero). bfloat16 and float16 inputs are widened to float32 when loaded; the
// state, the decays and every accumulation are float32.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "attnkit/error.h"
#include "buffer.h"
#include "convert.h"
#include "kernels.h"
#include "linear.h"
#include "thread_pool.h"

namespace attnkit::cpu::linear_chunk {

constexpr int64_t C = 64;  // chunk length
constexpr int64_t S = 16;  // row strip of the intra-chunk products (the GEMM's column granule)
inline const char* const kFwdOp = "linearAttention";
inline const char* const kBwdOp = "linearAttentionBackward";

// Element offset of token n, head h in a [B, N, heads, dim] tensor.
inline int64_t tok(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t dim) {
  return ((b * N + n) * heads + h) * dim;
}

// ---------------------------------------------------------------- elementwise pieces

inline void feature(FeatureMap f, float* x, int64_t n) {
  switch (f) {
    case FeatureMap::Identity: break;
    case FeatureMap::Elu1:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] + 1.f : std::exp(x[i]);
      break;
    case FeatureMap::Relu:
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] > 0.f ? x[i] : 0.f;
      break;
  }
}

// g *= phi'(raw)
inline void feature_grad(FeatureMap f, const float* raw, float* g, int64_t n) {
  switch (f) {
    case FeatureMap::Identity: break;
    case FeatureMap::Elu1:
      for (int64_t i = 0; i < n; ++i) g[i] *= raw[i] > 0.f ? 1.f : std::exp(raw[i]);
      break;
    case FeatureMap::Relu:
      for (int64_t i = 0; i < n; ++i) g[i] = raw[i] > 0.f ? g[i] : 0.f;
      break;
  }
}

// Powers of one head's decay, pw[m] = lambda^m for m = 0..C, in float32 (computed in double).
struct Powers {
  float pw[C + 1];
  bool one;  // lambda == 1: every Lq/Lk/chunk scaling is skipped
  explicit Powers(double lambda) : one(lambda == 1.0) {
    for (int64_t m = 0; m <= C; ++m) {
      const double x = std::pow(lambda, double(m));
      pw[m] = x < 1e-30 ? 0.f : float(x);
    }
  }
};

// M [C x C]: M_ij = lambda^(i-j) for i >= j, else 0; `transposed` stores M^T.
inline void decay_matrix(const Powers& p, bool transposed, float* M) {
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const float m = i >= j ? p.pw[i - j] : 0.f;
      if (transposed) M[j * C + i] = m;
      else M[i * C + j] = m;
    }
}

// Refuses gate values that are not finite log decays <= 0 (NaN, > 0, -inf) before anything is
// written: a positive log decay would grow the state without bound, and -inf - -inf is NaN in the
// cumulative sums. The gate is [B, N, H] ([B, H] for the step, N = 1).
inline void check_gate(const float* gate, int64_t B, int64_t N, int64_t H, bool step, const char* op) {
  if (!gate) return;
  for (int64_t i = 0, n = B * N * H; i < n; ++i) {
    const float g = gate[i];
    if (g <= 0.f && g > -__builtin_inff()) continue;
    const int64_t b = i / (N * H), t = i / H % N, h = i % H;
    char at[96];
    if (step) std::snprintf(at, sizeof at, "[%lld, %lld]", (long long)b, (long long)h);
    else std::snprintf(at, sizeof at, "[%lld, %lld, %lld]", (long long)b, (long long)t, (long long)h);
    char got[32];
    std::snprintf(got, sizeof got, "%g", double(g));
    throw Error("ARGUMENT", op,
                std::string(op) + ": expected 'gate' to hold finite log decays <= 0, received " +
                    got + " at " + at);
  }
}

// The decays of one (batch, head), chunk by chunk. For a chunk of n rows with local indices i, j
// and the in-chunk cumulative log decay G_i = sum_{r <= i} log a_r (a_r = lambda exp(g_r)):
//   M_ij = exp(G_i - G_j) for i >= j, else 0     (M^T when `transposed`)
//   q[i] = exp(G_i),  k[j] = exp(G_{n-1} - G_j),  last = exp(G_{n-1})
// Every exponent is <= 0, so nothing overflows however negative the gates are (M_ij is never
// formed as exp(G_i) exp(-G_j)); factors below 1e-30 are flushed to 0, as in Powers. Without a
// gate these are powers of lambda from the Powers table and M is built once. With a gate, G is
// summed in double per chunk (so G_i - G_j keeps its precision when G is large) and M is rebuilt
// per chunk, only its causal triangle's 16-row strips, with the SIMD table's exp2 (bwd_probs).
class ChunkDecay {
 public:
  // gate: this (batch, head)'s gate at token 0, `stride` floats between tokens; or null.
  // M: the caller's C x C buffer for the decay matrix.
  ChunkDecay(double lambda, const float* gate, int64_t stride, bool transposed, float* M)
      : pw_(lambda), gate_(gate), stride_(stride), transposed_(transposed), M_(M),
        log_lambda_(std::log(lambda)), one_(pw_.one && !gate) {
    if (!gate_) decay_matrix(pw_, transposed_, M_);
  }
  // true: lambda = 1 and no gate, every decay scaling can be skipped.
  bool one() const { return one_; }
  // Sets q, k, last (and M, when gated) for the chunk of rows [n0, n0 + n). `scratch`: C x C
  // floats the caller does not need during the call.
  void chunk(const CpuKernels& kern, int64_t n0, int64_t n, float* scratch) {
    if (!gate_) {
      for (int64_t i = 0; i < n; ++i) q[i] = pw_.pw[i + 1], k[i] = pw_.pw[n - 1 - i];
      last = pw_.pw[n];
      return;
    }
    // Every factor is exp2 of its log2, computed in double from the cumulative sums and rounded
    // to float once (-inf where masked or below the flush threshold), then exponentiated by the
    // SIMD table's exp2 (bwd_probs) 16 columns at a time. The loops are branch-free per row.
    constexpr double kLog2e = 1.4426950408889634;
    constexpr float kFlush2 = -99.65784f;  // log2(1e-30)
    static const float zeros[S] = {};
    const float neg_inf = -__builtin_inff();
    auto lg = [&](double d) {
      const float e = float(d * kLog2e);
      return e < kFlush2 ? neg_inf : e;
    };
    double G[C];
    double acc = 0.0;
    for (int64_t i = 0; i < n; ++i) G[i] = acc += double(gate_[(n0 + i) * stride_]) + log_lambda_;
    const int64_t np = round_up(n, S);
    // q[i] = exp(G_i), k[j] = exp(G_{n-1} - G_j): rows 0 and 1 of a 2 x C exp2. These scale whole
    // rows (the state read, the state update), so they keep full float precision however large
    // |G| is: x = m + f with m = floor(x) exact, exp2 of the fraction f in [0, 1), times 2^m. (M's
    // entries are rounded as float(x): a relative error of about |x| 6e-8, on entries exp(-|x|).)
    alignas(64) float fx[2 * C], fy[2 * C], p2[2 * C];
    auto split = [&](double d, float& f, float& p) {
      const double x = d * kLog2e;
      if (x < double(kFlush2)) {
        f = neg_inf, p = 0.f;
        return;
      }
      const double m = std::floor(x);
      const uint32_t bits = uint32_t(int32_t(m) + 127) << 23;  // 2^m, m >= -100: a normal float
      std::memcpy(&p, &bits, sizeof p);
      f = float(x - m);
    };
    for (int64_t i = 0; i < n; ++i) split(G[i], fx[i], p2[i]), split(G[n - 1] - G[i], fx[C + i], p2[C + i]);
    for (int64_t i = n; i < np; ++i) fx[i] = fx[C + i] = neg_inf;
    kern.bwd_probs(2, np, fx, C, 1.f, zeros, fy, C);
    for (int64_t i = 0; i < n; ++i) q[i] = fy[i] * p2[i], k[i] = fy[C + i] * p2[C + i];
    last = q[n - 1];
    // M (or M^T) strip by strip: rows r are the later index i (M) or the earlier index j (M^T)
    for (int64_t r0 = 0; r0 < n; r0 += S) {
      const int64_t rows = std::min(S, n - r0);
      const int64_t c0 = transposed_ ? r0 : 0, c1 = transposed_ ? np : r0 + S;
      for (int64_t r = r0; r < r0 + rows; ++r) {
        float* x = scratch + r * C;
        const double Gr = G[r];
        if (transposed_) {  // columns i >= r, i < n
          for (int64_t c = c0; c < r; ++c) x[c] = neg_inf;
          for (int64_t c = r; c < n; ++c) x[c] = lg(G[c] - Gr);
          for (int64_t c = n; c < c1; ++c) x[c] = neg_inf;
        } else {  // columns j <= r
          for (int64_t c = 0; c <= r; ++c) x[c] = lg(Gr - G[c]);
          for (int64_t c = r + 1; c < c1; ++c) x[c] = neg_inf;
        }
      }
      kern.bwd_probs(rows, c1 - c0, scratch + r0 * C + c0, C, 1.f, zeros, M_ + r0 * C + c0, C);
    }
  }
  float q[C], k[C], last = 1.f;

 private:
  Powers pw_;
  const float* gate_;
  int64_t stride_;
  bool transposed_;
  float* M_;
  double log_lambda_;
  bool one_;
};

// The gate of (b, h) at token 0 in a [B, N, H] gate, or null.
inline const float* gate_of(const float* gate, int64_t b, int64_t h, int64_t N, int64_t H) {
  return gate ? gate + b * N * H + h : nullptr;
}

// sum_i x[i] y[i]
inline float dot_f32(const float* x, const float* y, int64_t n) {
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += x[i] * y[i];
  return acc;
}

// X[r][0..cols) *= M[r][0..cols) for r < rows (both with stride C)
inline void apply_mask(float* X, const float* M, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* x = X + r * C;
    const float* m = M + r * C;
    for (int64_t j = 0; j < cols; ++j) x[j] *= m[j];
  }
}

// Row r of X (ld, cols) *= f[r]
inline void scale_rows(float* X, int64_t ld, int64_t rows, int64_t cols, const float* f) {
  for (int64_t r = 0; r < rows; ++r) {
    const float s = f[r];
    float* x = X + r * ld;
    for (int64_t j = 0; j < cols; ++j) x[j] *= s;
  }
}

inline void scale_all(float* X, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) X[i] *= s;
}

// Y[c][r] = X[r][c] for r < rows, c < cols
inline void transpose(const float* X, int64_t ldx, int64_t rows, int64_t cols, float* Y,
                      int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) Y[c * ldy + r] = X[r * ldx + c];
}

// Prefetches the rows of the next chunk into L2, a few rows at a time between the current chunk's
// GEMMs. A task reads its head's rows at a stride of heads * dim elements, which the hardware
// prefetchers follow poorly: without this, loading the rows took a quarter of the float32
// forward's cycles (perf, H = 8, D = 64, N = 16384), and spreading the prefetches cut the
// forward's CPU time by about 20%. Issuing a whole chunk's prefetches at once only moved the stall
// onto the prefetch instructions (the fill buffers are full).
class RowPrefetcher {
 public:
  // Rows [n0, n0 + n) of (b, head), columns [c0, c0 + w), of a [B, N, heads, dim] tensor.
  void add(const void* src, DType t, int64_t b, int64_t n0, int64_t n, int64_t head, int64_t N,
           int64_t heads, int64_t dim, int64_t c0, int64_t w) {
    const int64_t es = dtype_size(t);
    const char* row0 = static_cast<const char*>(src) + (tok(b, n0, head, N, heads, dim) + c0) * es;
    streams_[count_++] = {row0, heads * dim * es, w * es, n};
  }
  void clear() { count_ = 0, stream_ = 0, row_ = 0; }
  // Issues the prefetches of the next `rows` rows (over all added tensors, in order).
  void advance(int64_t rows) {
    for (; rows > 0 && stream_ < count_; --rows) {
      const Stream& st = streams_[stream_];
      const char* r = st.base + row_ * st.stride;
      for (int64_t o = 0; o < st.bytes; o += 64) __builtin_prefetch(r + o, 0, 2);
      if (++row_ == st.rows) row_ = 0, ++stream_;
    }
  }

 private:
  struct Stream {
    const char* base;
    int64_t stride, bytes, rows;
  };
  Stream streams_[4];
  int count_ = 0, stream_ = 0;
  int64_t row_ = 0;
};

// Y[n x ny] += ((X Bt) . M) Z over the causal triangle, by strips of S rows, so blocks of the C x C
// product that the mask zeroes are never computed. X [n x kx] (ldx); Bt [kx x C] (ld C), its
// columns indexing the other side's rows; M the decay matrix for this orientation (ld C); Z rows
// indexed like Bt's columns (ldz); A is C x C scratch. upper = false: row r sees columns c <= r
// (the Q K^T orientation); upper = true: row r sees columns c >= r (the transposed one).
// pf (optional) advances by pf_rows before each GEMM.
inline void masked_product(const CpuKernels& kern, bool upper, int64_t n, int64_t kx, const float* X,
                    int64_t ldx, const float* Bt, const float* M, float* A, const float* Z,
                    int64_t ldz, int64_t ny, float* Y, int64_t ldy, RowPrefetcher* pf = nullptr,
                    int64_t pf_rows = 0) {
  for (int64_t r0 = 0; r0 < n; r0 += S) {
    const int64_t rows = std::min(S, n - r0);
    const int64_t c0 = upper ? r0 : 0, c1 = upper ? n : std::min(n, r0 + S);
    float* a = A + r0 * C + c0;
    if (pf) pf->advance(pf_rows);
    kern.gemm_f32(rows, round_up(c1, 16) - c0, kx, X + r0 * ldx, ldx, Bt + c0, C, a, C, false);
    apply_mask(a, M + r0 * C + c0, rows, c1 - c0);
    if (pf) pf->advance(pf_rows);
    kern.gemm_f32(rows, ny, c1 - c0, a, C, Z + c0 * ldz, ldz, Y + r0 * ldy, ldy, true);
  }
}

// Per-worker scratch carved into 64-byte aligned pieces.
struct Carve {
  float* p;
  float* take(int64_t n) {
    float* r = p;
    p += round_up(n, 16);
    return r;
  }
};

// The columns of the state / value one task owns: value columns [e0, e0 + w) plus, with
// normalize, the key-sum column (global index Dv) at local index w.
struct Tile {
  int64_t e0, w;
  bool norm;
};

// Hs [D x ld] <- state tile of (bh); zero when S is null. Padding columns are zeroed too.
inline void load_state(const float* S, int64_t bh, int64_t D, int64_t Dv, int64_t Ds, const Tile& t,
                float* Hs, int64_t ld) {
  std::fill(Hs, Hs + D * ld, 0.f);
  if (!S) return;
  for (int64_t d = 0; d < D; ++d) {
    const float* src = S + (bh * D + d) * Ds;
    std::copy(src + t.e0, src + t.e0 + t.w, Hs + d * ld);
    if (t.norm) Hs[d * ld + t.w] = src[Dv];
  }
}

inline void store_state(const float* Hs, int64_t ld, int64_t bh, int64_t D, int64_t Dv, int64_t Ds,
                 const Tile& t, bool write_z, float* S) {
  for (int64_t d = 0; d < D; ++d) {
    float* dst = S + (bh * D + d) * Ds;
    std::copy(Hs + d * ld, Hs + d * ld + t.w, dst + t.e0);
    if (t.norm && write_z) dst[Dv] = Hs[d * ld + t.w];
  }
}

// Rows [n0, n0 + n) of (b, head) of a [B, N, heads, dim] tensor, columns [c0, c0 + w), into X
// (stride ld) as float32; columns [w, pad) are zeroed.
inline void load_rows(const void* src, DType t, int64_t b, int64_t n0, int64_t n, int64_t head,
               int64_t N, int64_t heads, int64_t dim, int64_t c0, int64_t w, float* X, int64_t ld,
               int64_t pad) {
  for (int64_t i = 0; i < n; ++i) {
    float* x = X + i * ld;
    load_f32(src, t, tok(b, n0 + i, head, N, heads, dim) + c0, w, x);
    std::fill(x + w, x + pad, 0.f);
  }
}

// Chunk rows of q or k: raw copy (when the feature map needs it for the gradient) and the
// feature-mapped, scaled rows X [n x ld].
inline void load_features(const void* src, DType t, int64_t b, int64_t n0, int64_t n, int64_t head,
                   int64_t N, int64_t heads, int64_t D, FeatureMap fm, float scale, float* raw,
                   float* X, int64_t ld, int64_t pad) {
  load_rows(src, t, b, n0, n, head, N, heads, D, 0, D, X, ld, pad);
  for (int64_t i = 0; i < n; ++i) {
    float* x = X + i * ld;
    if (raw && fm != FeatureMap::Identity) std::copy(x, x + D, raw + i * D);
    feature(fm, x, D);
    if (scale != 1.f) scale_all(x, D, scale);
  }
}

// V' rows: value columns of the tile and, with normalize, a 1 at local column w.
inline void load_values(const void* v, DType t, int64_t b, int64_t n0, int64_t n, int64_t hk, int64_t N,
                 int64_t Hkv, int64_t Dv, const Tile& tile, float* X, int64_t ld) {
  load_rows(v, t, b, n0, n, hk, N, Hkv, Dv, tile.e0, tile.w, X, ld, ld);
  if (tile.norm)
    for (int64_t i = 0; i < n; ++i) X[i * ld + tile.w] = 1.f;
}

}  // namespace attnkit::cpu::linear_chunk
