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
//
// All matrix products go through the active SIMD table's gemm_f32 (N a multiple of 16; padding
// columns are kept at zero). bfloat16 and float16 inputs are widened to float32 when loaded; the
// state, the decays and every accumulation are float32.
#include "linear.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "buffer.h"
#include "convert.h"
#include "kernels.h"
#include "thread_pool.h"

namespace attnkit::cpu {
namespace {

constexpr int64_t C = 64;  // chunk length
constexpr int64_t S = 16;  // row strip of the intra-chunk products (the GEMM's column granule)
const char* const kFwdOp = "linearAttention";
const char* const kBwdOp = "linearAttentionBackward";

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
void decay_matrix(const Powers& p, bool transposed, float* M) {
  for (int64_t i = 0; i < C; ++i)
    for (int64_t j = 0; j < C; ++j) {
      const float m = i >= j ? p.pw[i - j] : 0.f;
      if (transposed) M[j * C + i] = m;
      else M[i * C + j] = m;
    }
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

// Row j of X (ld, cols) *= pw[n - 1 - j] for j < n: the key-side decay Lk.
inline void scale_rows_lk(float* X, int64_t ld, int64_t n, int64_t cols, const float* pw) {
  for (int64_t j = 0; j < n; ++j) {
    const float s = pw[n - 1 - j];
    float* x = X + j * ld;
    for (int64_t e = 0; e < cols; ++e) x[e] *= s;
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
void masked_product(const CpuKernels& kern, bool upper, int64_t n, int64_t kx, const float* X,
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
void load_state(const float* S, int64_t bh, int64_t D, int64_t Dv, int64_t Ds, const Tile& t,
                float* Hs, int64_t ld) {
  std::fill(Hs, Hs + D * ld, 0.f);
  if (!S) return;
  for (int64_t d = 0; d < D; ++d) {
    const float* src = S + (bh * D + d) * Ds;
    std::copy(src + t.e0, src + t.e0 + t.w, Hs + d * ld);
    if (t.norm) Hs[d * ld + t.w] = src[Dv];
  }
}

void store_state(const float* Hs, int64_t ld, int64_t bh, int64_t D, int64_t Dv, int64_t Ds,
                 const Tile& t, bool write_z, float* S) {
  for (int64_t d = 0; d < D; ++d) {
    float* dst = S + (bh * D + d) * Ds;
    std::copy(Hs + d * ld, Hs + d * ld + t.w, dst + t.e0);
    if (t.norm && write_z) dst[Dv] = Hs[d * ld + t.w];
  }
}

// Rows [n0, n0 + n) of (b, head) of a [B, N, heads, dim] tensor, columns [c0, c0 + w), into X
// (stride ld) as float32; columns [w, pad) are zeroed.
void load_rows(const void* src, DType t, int64_t b, int64_t n0, int64_t n, int64_t head,
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
void load_features(const void* src, DType t, int64_t b, int64_t n0, int64_t n, int64_t head,
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
void load_values(const void* v, DType t, int64_t b, int64_t n0, int64_t n, int64_t hk, int64_t N,
                 int64_t Hkv, int64_t Dv, const Tile& tile, float* X, int64_t ld) {
  load_rows(v, t, b, n0, n, hk, N, Hkv, Dv, tile.e0, tile.w, X, ld, ld);
  if (tile.norm)
    for (int64_t i = 0; i < n; ++i) X[i * ld + tile.w] = 1.f;
}

// ---------------------------------------------------------------- forward

void forward_impl(const LinearFwdParams& p) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const LinearShape& s = p.shape;
  const int64_t B = s.B, N = s.N, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = s.state_cols();
  const bool norm = s.normalize, causal = p.opt.causal;
  const int64_t group = H / Hkv, nch = ceil_div(N, C);
  const FeatureMap fm = p.opt.feature_map;

  // Value-column tiles: one per (batch, head) unless that leaves threads idle; then split the
  // value columns (16 at least per tile). Each tile recomputes the intra-chunk scores, so tiles are
  // only made to fill the pool. With normalize every tile carries its own key-sum column.
  int64_t nvt = 1;
  if (B * H < 2 * pool.size() && Dv > 16)
    nvt = std::min(ceil_div(Dv, 16), ceil_div(2 * pool.size(), B * H));
  const int64_t W = round_up(ceil_div(Dv, nvt), 16);
  nvt = ceil_div(Dv, W);
  const int64_t Wp = round_up(W + (norm ? 1 : 0), 16);

  const int64_t per_worker = round_up(C * D, 16) + 3 * round_up(D * C, 16) + 2 * C * Wp +
                             2 * C * C + D * Wp + Wp + 64;
  Scratch<float> work(size_t(pool.size() * per_worker), kFwdOp, /*zero=*/true);

  pool.parallel_for(B * H * nvt, [&](int64_t t, int worker) {
    const int64_t vt = t % nvt, bh = t / nvt, b = bh / H, h = bh % H, hk = h / group;
    const Tile tile{vt * W, std::min(W, Dv - vt * W), norm};
    Carve cv{work.get() + worker * per_worker};
    float* Qt = cv.take(C * D);   // [C x D] scale * phi(q)
    float* KT = cv.take(D * C);   // [D x C] phi(k)^T
    float* KTd = cv.take(D * C);  // [D x C] (Lk phi(k))^T
    float* Kr = cv.take(D * C);   // [C x D] phi(k) rows before transposing
    float* Vt = cv.take(C * Wp);  // [C x Wp] V'
    float* O = cv.take(C * Wp);   // [C x Wp]
    float* A = cv.take(C * C);    // [C x C] masked scores
    float* M = cv.take(C * C);    // [C x C] decay matrix
    float* Hs = cv.take(D * Wp);  // [D x Wp] running state
    float* orow = cv.take(Wp);
    const Powers pw(causal ? p.opt.decay[h] : 1.0);
    if (causal) decay_matrix(pw, false, M);
    load_state(p.state_in, bh, D, Dv, Ds, tile, Hs, Wp);

    auto load_keys = [&](int64_t n0, int64_t n) {
      load_features(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, fm, 1.f, nullptr, Kr, D, D);
      transpose(Kr, D, n, D, KT, C);
      if (!pw.one)
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) KTd[d * C + j] = KT[d * C + j] * pw.pw[n - 1 - j];
      load_values(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, tile, Vt, Wp);
    };
    // O rows -> out (normalize: divide by the key-sum column plus eps)
    auto store_out = [&](int64_t n0, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const float* o = O + i * Wp;
        if (norm) {
          const float inv = 1.f / (o[tile.w] + p.opt.eps);
          for (int64_t e = 0; e < tile.w; ++e) orow[e] = o[e] * inv;
          o = orow;
        }
        store_f32(o, p.dtype, tok(b, n0 + i, h, N, H, Dv) + tile.e0, tile.w, p.out);
      }
    };

    // The next chunk's q, k and v rows, requested a few at a time while this chunk computes.
    RowPrefetcher pf;
    auto prefetch = [&](int64_t c, bool q, bool kv) {
      pf.clear();
      if (c >= nch) return;
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      if (q) pf.add(p.q, p.dtype, b, n0, n, h, N, H, D, 0, D);
      if (kv) {
        pf.add(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, 0, D);
        pf.add(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, tile.e0, tile.w);
      }
    };

    if (causal) {
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t n0 = c * C, n = std::min(C, N - n0);
        load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, p.opt.scale, nullptr, Qt, D, D);
        load_keys(n0, n);
        prefetch(c + 1, true, true);
        // O = Lq (Q~ H)
        pf.advance(C / 2);
        kern.gemm_f32(n, Wp, D, Qt, D, Hs, Wp, O, Wp, false);
        if (!pw.one) scale_rows(O, Wp, n, Wp, pw.pw + 1);
        // O += ((Q~ K~^T) . M) V' (8 GEMMs: C / 4 rows prefetched before each)
        masked_product(kern, false, n, D, Qt, D, KT, M, A, Vt, Wp, Wp, O, Wp, &pf, C / 4);
        store_out(n0, n);
        // H = lambda^n H + (Lk K~)^T V'
        if (!pw.one) scale_all(Hs, D * Wp, pw.pw[n]);
        pf.advance(C / 2);
        kern.gemm_f32(D, Wp, n, pw.one ? KT : KTd, C, Vt, Wp, Hs, Wp, true);
      }
    } else {
      // S = S0 + K~^T V', then O = Q~ S.
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t n0 = c * C, n = std::min(C, N - n0);
        load_keys(n0, n);
        prefetch(c + 1, false, true);
        pf.advance(2 * C);
        kern.gemm_f32(D, Wp, n, KT, C, Vt, Wp, Hs, Wp, true);
      }
      for (int64_t c = 0; c < nch; ++c) {
        const int64_t n0 = c * C, n = std::min(C, N - n0);
        load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, p.opt.scale, nullptr, Qt, D, D);
        prefetch(c + 1, true, false);
        pf.advance(C);
        kern.gemm_f32(n, Wp, D, Qt, D, Hs, Wp, O, Wp, false);
        store_out(n0, n);
      }
    }
    if (p.state_out) store_state(Hs, Wp, bh, D, Dv, Ds, tile, vt == 0, p.state_out);
  });
}

// ---------------------------------------------------------------- backward

struct BwdBuffers {
  float *Qraw, *Qt, *QT, *QTd, *Kraw, *Kr, *KT, *KTd, *Vt, *VT, *dO, *dOT, *O, *A, *dA, *M, *MT,
      *Hs, *HT, *dS, *dQ, *dK, *dV;
  static int64_t elems(int64_t D, int64_t D16, int64_t Dp) {
    return 2 * round_up(C * D, 16) + 3 * C * D16 + 4 * round_up(D * C, 16) + 4 * C * Dp +
           2 * Dp * C + 4 * C * C + 2 * D * Dp + Dp * D16 + 256;
  }
  BwdBuffers(float* base, int64_t D, int64_t D16, int64_t Dp) {
    Carve cv{base};
    Qraw = cv.take(C * D);   // [C x D] raw q (feature-map gradient)
    Qt = cv.take(C * D16);   // [C x D16] scale * phi(q)
    QT = cv.take(D * C);     // [D x C] Q~^T
    QTd = cv.take(D * C);    // [D x C] (Lq Q~)^T
    Kraw = cv.take(C * D);   // [C x D] raw k
    Kr = cv.take(C * D16);   // [C x D16] phi(k)
    KT = cv.take(D * C);     // [D x C] K~^T
    KTd = cv.take(D * C);    // [D x C] (Lk K~)^T
    Vt = cv.take(C * Dp);    // [C x Dp] V'
    VT = cv.take(Dp * C);    // [Dp x C] V'^T
    dO = cv.take(C * Dp);    // [C x Dp] dO' (normalize: [dO / u, -g / u])
    dOT = cv.take(Dp * C);   // [Dp x C] dO'^T
    O = cv.take(C * Dp);     // [C x Dp] recomputed output (normalize)
    A = cv.take(C * C);      // [C x C] A or A^T
    dA = cv.take(C * C);     // [C x C] dA or dA^T
    M = cv.take(C * C);      // decay matrix
    MT = cv.take(C * C);     // its transpose
    Hs = cv.take(D * Dp);    // [D x Dp] state H, or its gradient dH
    HT = cv.take(Dp * D16);  // [Dp x D16] transposed
    dS = cv.take(D * Dp);    // [D x Dp] non-causal state gradient
    dQ = cv.take(C * D16);   // [C x D16] (dK in the reverse pass)
    dK = dQ;
    dV = cv.take(C * Dp);    // [C x Dp]
  }
};

void backward_impl(const LinearBwdParams& p) {
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();
  const LinearShape& s = p.shape;
  const int64_t B = s.B, N = s.N, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = s.state_cols();
  const bool norm = s.normalize, causal = p.opt.causal;
  const int64_t group = H / Hkv, nch = ceil_div(N, C);
  const int64_t D16 = round_up(D, 16), Dp = round_up(Ds, 16);
  const FeatureMap fm = p.opt.feature_map;
  const float scale = p.opt.scale, eps = p.opt.eps;
  const Tile full{0, Dv, norm};

  const int64_t per_worker = BwdBuffers::elems(D, D16, Dp);
  Scratch<float> work(size_t(pool.size() * per_worker), kBwdOp, /*zero=*/true);
  // normalize: per row u = den + eps and g = dO . out; the dq pass writes them, the dk/dv pass
  // reads them
  Scratch<float> ug(norm ? size_t(2 * B * H * N) : 0, kBwdOp);
  // GQA: dk/dv per query head in float32, summed over each group at the end
  Scratch<float> dKh(group > 1 ? size_t(B * N * H * D) : 0, kBwdOp);
  Scratch<float> dVh(group > 1 ? size_t(B * N * H * Dv) : 0, kBwdOp);

  auto load_dout = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n) {
    load_rows(p.dout, p.dtype, b, n0, n, h, N, H, Dv, 0, Dv, w.dO, Dp, Dp);
  };
  // dO' from stored u, g (normalize): dO'[:, :Dv] = dO / u, dO'[:, Dv] = -g / u
  auto normalize_dout = [&](const BwdBuffers& w, int64_t bh, int64_t n0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const float u = ug[size_t(2 * (bh * N + n0 + i))], g = ug[size_t(2 * (bh * N + n0 + i) + 1)];
      float* d = w.dO + i * Dp;
      const float inv = 1.f / u;
      for (int64_t e = 0; e < Dv; ++e) d[e] *= inv;
      d[Dv] = -g * inv;
    }
  };
  // From the recomputed O' rows: u, g, and dO' in place (normalize only).
  auto normalize_from_output = [&](const BwdBuffers& w, int64_t bh, int64_t n0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      const float* o = w.O + i * Dp;
      float* d = w.dO + i * Dp;
      const float u = o[Dv] + eps, inv = 1.f / u;
      float g = 0.f;
      for (int64_t e = 0; e < Dv; ++e) g += d[e] * o[e];
      g *= inv;  // dO . out with out = O / u
      for (int64_t e = 0; e < Dv; ++e) d[e] *= inv;
      d[Dv] = -g * inv;
      ug[size_t(2 * (bh * N + n0 + i))] = u;
      ug[size_t(2 * (bh * N + n0 + i) + 1)] = g;
    }
  };
  auto store_dq = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      float* d = w.dQ + i * D16;
      feature_grad(fm, w.Qraw + i * D, d, D);
      scale_all(d, D, scale);
      store_f32(d, p.dtype, tok(b, n0 + i, h, N, H, D), D, p.dq);
    }
  };
  auto store_dkv = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n) {
    const int64_t hk = h / group;
    for (int64_t i = 0; i < n; ++i) {
      float* dk = w.dK + i * D16;
      feature_grad(fm, w.Kraw + i * D, dk, D);
      const float* dv = w.dV + i * Dp;
      if (group == 1) {
        store_f32(dk, p.dtype, tok(b, n0 + i, hk, N, Hkv, D), D, p.dk);
        store_f32(dv, p.dtype, tok(b, n0 + i, hk, N, Hkv, Dv), Dv, p.dv);
      } else {
        std::copy(dk, dk + D, dKh.get() + tok(b, n0 + i, h, N, H, D));
        std::copy(dv, dv + Dv, dVh.get() + tok(b, n0 + i, h, N, H, Dv));
      }
    }
  };
  auto load_chunk = [&](const BwdBuffers& w, int64_t b, int64_t h, int64_t n0, int64_t n,
                        bool with_q = true) {
    const int64_t hk = h / group;
    if (with_q)
      load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, scale, w.Qraw, w.Qt, D16, D16);
    load_features(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, fm, 1.f, w.Kraw, w.Kr, D16, D16);
    load_values(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, full, w.Vt, Dp);
  };

  // Rows of chunk c (if it exists) to prefetch while the current chunk computes.
  auto prefetch_chunk = [&](RowPrefetcher& pf, int64_t b, int64_t h, int64_t c, bool q, bool kv,
                            bool dout) {
    pf.clear();
    if (c < 0 || c >= nch) return;
    const int64_t n0 = c * C, n = std::min(C, N - n0), hk = h / group;
    if (q) pf.add(p.q, p.dtype, b, n0, n, h, N, H, D, 0, D);
    if (kv) {
      pf.add(p.k, p.dtype, b, n0, n, hk, N, Hkv, D, 0, D);
      pf.add(p.v, p.dtype, b, n0, n, hk, N, Hkv, Dv, 0, Dv);
    }
    if (dout) pf.add(p.dout, p.dtype, b, n0, n, h, N, H, Dv, 0, Dv);
  };

  // Causal pass 1 (forward scan over chunks with the running state H): dq, and u, g for normalize.
  //   dQ~ = Lq (dO' H^T) + ((dO' V'^T) . M) K~
  auto causal_dq = [&](int64_t bh, const BwdBuffers& w) {
    const int64_t b = bh / H, h = bh % H;
    const Powers pw(p.opt.decay[h]);
    decay_matrix(pw, false, w.M);
    load_state(p.state_in, bh, D, Dv, Ds, full, w.Hs, Dp);
    RowPrefetcher pf;
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_chunk(w, b, h, n0, n);
      load_dout(w, b, h, n0, n);
      prefetch_chunk(pf, b, h, c + 1, true, true, true);
      transpose(w.Kr, D16, n, D, w.KT, C);
      const float* KTd = w.KT;
      if (!pw.one) {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t j = 0; j < n; ++j) w.KTd[d * C + j] = w.KT[d * C + j] * pw.pw[n - 1 - j];
        KTd = w.KTd;
      }
      transpose(w.Vt, Dp, n, Ds, w.VT, C);
      if (norm) {  // recompute O' = Lq (Q~ H) + ((Q~ K~^T) . M) V'
        kern.gemm_f32(n, Dp, D, w.Qt, D16, w.Hs, Dp, w.O, Dp, false);
        if (!pw.one) scale_rows(w.O, Dp, n, Dp, pw.pw + 1);
        masked_product(kern, false, n, D, w.Qt, D16, w.KT, w.M, w.A, w.Vt, Dp, Dp, w.O, Dp);
        normalize_from_output(w, bh, n0, n);
      }
      transpose(w.Hs, Dp, D, Ds, w.HT, D16);
      pf.advance(C);
      kern.gemm_f32(n, D16, Ds, w.dO, Dp, w.HT, D16, w.dQ, D16, false);
      if (!pw.one) scale_rows(w.dQ, D16, n, D16, pw.pw + 1);
      masked_product(kern, false, n, Ds, w.dO, Dp, w.VT, w.M, w.dA, w.Kr, D16, D16, w.dQ, D16, &pf,
                     C / 4);
      store_dq(w, b, h, n0, n);
      if (c + 1 < nch) {
        if (!pw.one) scale_all(w.Hs, D * Dp, pw.pw[n]);
        pf.advance(C);
        kern.gemm_f32(D, Dp, n, KTd, C, w.Vt, Dp, w.Hs, Dp, true);
      }
    }
  };

  // Causal pass 2 (reverse scan with the state gradient dH, starting from dS_T): dk, dv, dS0.
  //   dK~ = Lk (V' dH^T) + dA^T Q~,  dV' = Lk (K~ dH) + A^T dO'
  //   dH  = lambda^n dH + (Lq Q~)^T dO'
  auto causal_dkv = [&](int64_t bh, const BwdBuffers& w) {
    const int64_t b = bh / H, h = bh % H;
    const Powers pw(p.opt.decay[h]);
    decay_matrix(pw, true, w.MT);
    float* dH = w.Hs;
    load_state(p.dstate_out, bh, D, Dv, Ds, full, dH, Dp);
    RowPrefetcher pf;
    for (int64_t c = nch - 1; c >= 0; --c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_chunk(w, b, h, n0, n);
      prefetch_chunk(pf, b, h, c - 1, true, true, true);
      transpose(w.Qt, D16, n, D, w.QT, C);
      const float* QTd = w.QT;
      if (!pw.one) {
        for (int64_t d = 0; d < D; ++d)
          for (int64_t i = 0; i < n; ++i) w.QTd[d * C + i] = w.QT[d * C + i] * pw.pw[i + 1];
        QTd = w.QTd;
      }
      load_dout(w, b, h, n0, n);
      if (norm) normalize_dout(w, bh, n0, n);
      transpose(w.dO, Dp, n, Ds, w.dOT, C);
      // dK~ = Lk (V' dH^T) + dA^T Q~ with dA^T = (V' dO'^T) . M^T
      transpose(dH, Dp, D, Ds, w.HT, D16);
      pf.advance(C / 2);
      kern.gemm_f32(n, D16, Ds, w.Vt, Dp, w.HT, D16, w.dK, D16, false);
      if (!pw.one) scale_rows_lk(w.dK, D16, n, D16, pw.pw);
      masked_product(kern, true, n, Ds, w.Vt, Dp, w.dOT, w.MT, w.dA, w.Qt, D16, D16, w.dK, D16, &pf,
                     C / 8);
      // dV' = Lk (K~ dH) + A^T dO' with A^T = (K~ Q~^T) . M^T
      pf.advance(C / 2);
      kern.gemm_f32(n, Dp, D, w.Kr, D16, dH, Dp, w.dV, Dp, false);
      if (!pw.one) scale_rows_lk(w.dV, Dp, n, Dp, pw.pw);
      masked_product(kern, true, n, D, w.Kr, D16, w.QT, w.MT, w.A, w.dO, Dp, Dp, w.dV, Dp, &pf,
                     C / 8);
      if (!pw.one) scale_all(dH, D * Dp, pw.pw[n]);
      pf.advance(C);
      kern.gemm_f32(D, Dp, n, QTd, C, w.dO, Dp, dH, Dp, true);
      store_dkv(w, b, h, n0, n);
    }
    if (p.dstate_in) store_state(dH, Dp, bh, D, Dv, Ds, full, true, p.dstate_in);
  };

  // Non-causal: S = S0 + K~^T V'; dQ~ = dO' S^T; dS = dS_T + Q~^T dO'; dK~ = V' dS^T; dV' = K~ dS.
  auto noncausal = [&](int64_t bh, const BwdBuffers& w) {
    const int64_t b = bh / H, h = bh % H;
    float* S = w.Hs;
    load_state(p.state_in, bh, D, Dv, Ds, full, S, Dp);
    RowPrefetcher pf;
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_chunk(w, b, h, n0, n, /*with_q=*/false);
      prefetch_chunk(pf, b, h, c + 1, false, true, false);
      transpose(w.Kr, D16, n, D, w.KT, C);
      pf.advance(2 * C);
      kern.gemm_f32(D, Dp, n, w.KT, C, w.Vt, Dp, S, Dp, true);
    }
    transpose(S, Dp, D, Ds, w.HT, D16);  // S^T
    float* dS = w.dS;
    load_state(p.dstate_out, bh, D, Dv, Ds, full, dS, Dp);
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_features(p.q, p.dtype, b, n0, n, h, N, H, D, fm, scale, w.Qraw, w.Qt, D16, D16);
      load_dout(w, b, h, n0, n);
      prefetch_chunk(pf, b, h, c + 1, true, false, true);
      if (norm) {
        kern.gemm_f32(n, Dp, D, w.Qt, D16, S, Dp, w.O, Dp, false);
        normalize_from_output(w, bh, n0, n);
      }
      pf.advance(C);
      kern.gemm_f32(n, D16, Ds, w.dO, Dp, w.HT, D16, w.dQ, D16, false);
      store_dq(w, b, h, n0, n);
      transpose(w.Qt, D16, n, D, w.QT, C);
      pf.advance(C);
      kern.gemm_f32(D, Dp, n, w.QT, C, w.dO, Dp, dS, Dp, true);
    }
    transpose(dS, Dp, D, Ds, w.HT, D16);  // dS^T
    for (int64_t c = 0; c < nch; ++c) {
      const int64_t n0 = c * C, n = std::min(C, N - n0);
      load_chunk(w, b, h, n0, n, /*with_q=*/false);
      prefetch_chunk(pf, b, h, c + 1, false, true, false);
      pf.advance(C);
      kern.gemm_f32(n, D16, Ds, w.Vt, Dp, w.HT, D16, w.dK, D16, false);
      pf.advance(C);
      kern.gemm_f32(n, Dp, D, w.Kr, D16, dS, Dp, w.dV, Dp, false);
      store_dkv(w, b, h, n0, n);
    }
    if (p.dstate_in) store_state(dS, Dp, bh, D, Dv, Ds, full, true, p.dstate_in);
  };

  const int64_t BH = B * H;
  auto buffers = [&](int worker) {
    return BwdBuffers(work.get() + worker * per_worker, D, D16, Dp);
  };
  if (!causal) {
    pool.parallel_for(BH, [&](int64_t t, int worker) { noncausal(t, buffers(worker)); });
  } else if (norm) {
    // The reverse pass needs u and g, which the forward scan produces.
    pool.parallel_for(BH, [&](int64_t t, int worker) { causal_dq(t, buffers(worker)); });
    pool.parallel_for(BH, [&](int64_t t, int worker) { causal_dkv(t, buffers(worker)); });
  } else {
    // Independent scans: one pool job with both, so small batch x head counts still fill the pool.
    pool.parallel_for(2 * BH, [&](int64_t t, int worker) {
      if (t < BH) causal_dkv(t, buffers(worker));
      else causal_dq(t - BH, buffers(worker));
    });
  }

  if (group > 1) {
    // dk, dv of kv head hk = sum over its query heads, in head order.
    const int64_t rows = B * N;
    pool.parallel_for(ceil_div(rows, C), [&](int64_t t, int) {
      std::vector<float> acc(static_cast<size_t>(std::max(D, Dv)));
      for (int64_t r = t * C, re = std::min(rows, r + C); r < re; ++r) {
        const int64_t b = r / N, n = r % N;
        for (int64_t hk = 0; hk < Hkv; ++hk) {
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            const float* src = dKh.get() + tok(b, n, h, N, H, D);
            for (int64_t d = 0; d < D; ++d) acc[d] += src[d];
          }
          store_f32(acc.data(), p.dtype, tok(b, n, hk, N, Hkv, D), D, p.dk);
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
            const float* src = dVh.get() + tok(b, n, h, N, H, Dv);
            for (int64_t e = 0; e < Dv; ++e) acc[e] += src[e];
          }
          store_f32(acc.data(), p.dtype, tok(b, n, hk, N, Hkv, Dv), Dv, p.dv);
        }
      }
    });
  }
}

}  // namespace

void linear_forward(const LinearFwdParams& p) { forward_impl(p); }
void linear_backward(const LinearBwdParams& p) { backward_impl(p); }

// One token: S' = lambda S + phi(k) [v, 1]^T, out = scale phi(q)^T S' (/ (den + eps)).
void linear_step(const LinearStepParams& p) {
  const LinearShape& s = p.shape;
  const int64_t B = s.B, H = s.H, Hkv = s.Hkv, D = s.D, Dv = s.Dv, Ds = s.state_cols();
  const int64_t group = H / Hkv;
  const bool norm = s.normalize;
  ThreadPool::instance().parallel_for(B * H, [&](int64_t bh, int) {
    const int64_t b = bh / H, h = bh % H, hk = h / group;
    std::vector<float> q(static_cast<size_t>(D)), k(static_cast<size_t>(D)),
        v(static_cast<size_t>(Ds)), o(static_cast<size_t>(Ds), 0.f);
    load_f32(p.q, p.dtype, (b * H + h) * D, D, q.data());
    load_f32(p.k, p.dtype, (b * Hkv + hk) * D, D, k.data());
    load_f32(p.v, p.dtype, (b * Hkv + hk) * Dv, Dv, v.data());
    if (norm) v[size_t(Dv)] = 1.f;
    feature(p.opt.feature_map, q.data(), D);
    feature(p.opt.feature_map, k.data(), D);
    const float lambda = float(p.opt.decay[h]);
    for (int64_t d = 0; d < D; ++d) {
      const float* in = p.state_in ? p.state_in + (bh * D + d) * Ds : nullptr;
      float* out = p.state_out + (bh * D + d) * Ds;
      const float qd = q[size_t(d)] * p.opt.scale, kd = k[size_t(d)];
      for (int64_t e = 0; e < Ds; ++e) {
        const float x = (in ? lambda * in[e] : 0.f) + kd * v[size_t(e)];
        out[e] = x;
        o[size_t(e)] += qd * x;
      }
    }
    if (norm) {
      const float inv = 1.f / (o[size_t(Dv)] + p.opt.eps);
      for (int64_t e = 0; e < Dv; ++e) o[size_t(e)] *= inv;
    }
    store_f32(o.data(), p.dtype, (b * H + h) * Dv, Dv, p.out);
  });
}

}  // namespace attnkit::cpu
