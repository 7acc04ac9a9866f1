// MoBA gating and XAttention scoring on CUDA (semantics: docs/block-sparse.md; the CPU op is
// native/cpu/selection.cc, whose outputs these kernels reproduce): each writes its raw scores, its
// selection and a BlockMask in the list form of attnkit/mask_block_sparse.h, all in device memory
// and in stream order, with no host round trip.
//
// MoBA, five launches: pool (mean of each key block, float32, summed in token order as on the CPU)
// -> gate (one warp per (b, head) and 8 tokens: the scores q . kbar_j, then the top-k picks) -> the mask
// lists (mask_lists.cuh: count, scan, write). XAttention, five launches: score (one CTA per
// (b, h, query block): the strided antidiagonal products, a row softmax, the block sums) -> select
// (one CTA per (b, h, query block): the threshold rule) -> the mask lists. One generated unit per
// kernel (its launch_* below): per dtype the kernels that read q and k, once the others;
// dispatch.h strings them together.
//
// Ties (both backends): MoBA picks by decreasing score, equal scores to the lower block index;
// XAttention orders candidates by decreasing score, equal scores to the lower index (the CPU's
// stable sort over increasing indices). Element types through the merge family's F32/F16/BF16
// (attnkit/dtype.h conversions, exact). Compiles under nvcc and, through cuda_compat.cuh, under
// g++ against the SIMT emulator.
#pragma once
#include <cstdint>

#include "../cuda_compat.cuh"
#include "../merge/merge.cuh"  // F32, F16, BF16: element loads shared with the merge family
#include "attnkit/common.h"
#include "attnkit/selection.h"
#include "mask_lists.cuh"

namespace attnkit::cuda::selection {

using merge::BF16;
using merge::F16;
using merge::F32;

constexpr int kWarps = kThreads / 32;
constexpr int kRowGroup = 8;  // XAttention: reshaped rows whose products one pass keeps in registers
constexpr float kInf = __builtin_huge_valf();

ATTNKIT_HD int64_t tok(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t dim) {
  return ((b * N + n) * heads + h) * dim;
}

// ------------------------------------------------------------------ MoBA

// kbar[b, hk, :, j] = mean of the real tokens of key block j, transposed ([D][nb] per (b, hk)) so
// that the gate's lanes, one block each, read consecutive floats. Grid (nb, Hkv, B); threads over D.
template <typename E>
__global__ void __launch_bounds__(kThreads) moba_pool_kernel(const MobaParams p, float* kbar) {
  const SelectionInput& in = p.in;
  const int64_t j = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const int64_t nb = ceil_div(in.Nk, p.block);
  const int64_t k0 = j * p.block, k1 = imin(in.Nk, k0 + p.block);
  for (int64_t d = threadIdx.x; d < in.D; d += kThreads) {
    float acc = 0.f;
    for (int64_t x = k0; x < k1; ++x) acc += E::load(in.k, tok(b, x, hk, in.Nk, in.Hkv, in.D) + d);
    kbar[((b * in.Hkv + hk) * in.D + d) * nb + j] = acc / float(k1 - k0);
  }
}

// The pick order: a before b when its score is higher, or equal with a lower block index; j < 0 is
// "no candidate".
ATTNKIT_DEVICE bool ranks_before(float s, int j, float bs, int bj) {
  return j >= 0 && (bj < 0 || s > bs || (s == bs && j < bj));
}

// The picks of one row (query t) from its scores, by the whole warp: own block first when causal,
// then the top of the complete past blocks (or of all blocks) in the pick order, -1 padded. Each
// round takes the best candidate ranked after the previous pick (no exclusion set).
ATTNKIT_DEVICE void moba_pick(const MobaParams& p, const float* score, int32_t* sel, int64_t t, int lane) {
  const int64_t nb = ceil_div(p.in.Nk, p.block);
  int64_t count = 0, ncand = nb;
  if (p.causal) {
    const int64_t ta = t + (p.in.Nk - p.in.Nq);  // aligned position (bottom-right)
    if (ta < 0) {  // sees no key at all
      for (int64_t c = lane; c < p.topk; c += 32) sel[c] = -1;
      return;
    }
    const int64_t own = ta / p.block;
    if (lane == 0) sel[0] = int32_t(own);
    count = 1;
    ncand = imin(nb, own);  // complete past blocks: (j + 1) C <= ta
  }
  const int64_t want = imin(p.topk - count, ncand);
  float last_s = kInf;
  int last_j = -1;  // the previous pick; -1: none yet
  for (int64_t i = 0; i < want; ++i) {
    float best_s = -kInf;
    int best_j = -1;
    for (int64_t c = lane; c < ncand; c += 32) {
      const float s = score[c];
      const bool after_last = last_j < 0 || ranks_before(last_s, last_j, s, int(c));
      if (after_last && ranks_before(s, int(c), best_s, best_j)) {
        best_s = s;
        best_j = int(c);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float os = __shfl_xor_sync(0xffffffffu, best_s, o);
      const int oj = __shfl_xor_sync(0xffffffffu, best_j, o);
      if (ranks_before(os, oj, best_s, best_j)) {
        best_s = os;
        best_j = oj;
      }
    }
    if (best_j < 0) break;  // uniform: only unordered (NaN) scores are left
    if (lane == 0) sel[count] = best_j;
    ++count;
    last_s = best_s;
    last_j = best_j;
  }
  for (int64_t c = count + lane; c < p.topk; c += 32) sel[c] = -1;
}

// One warp (the whole CTA) per (b, h) and kGateRows consecutive tokens: the gate scores of every
// key block (lane per block; each kbar value read once feeds kGateRows FMAs, so the loop is bound by
// the FMAs, not by the loads), then each row's picks. Grid (ceil(Nq / kGateRows), H, B); dynamic
// shared memory: the kGateRows query rows in float32 (kGateRows * D * 4 bytes).
constexpr int kGateRows = 8;
template <typename E>
__global__ void __launch_bounds__(32) moba_gate_kernel(const MobaParams p, const float* kbar) {
  ATTNKIT_DYNAMIC_SMEM(float, qrows);  // [kGateRows][D]
  const SelectionInput& in = p.in;
  const int lane = int(threadIdx.x);
  const int64_t t0 = int64_t(blockIdx.x) * kGateRows, h = blockIdx.y, b = blockIdx.z;
  const int64_t rows = imin(kGateRows, in.Nq - t0);
  const int64_t hk = h / (in.H / in.Hkv), nb = ceil_div(in.Nk, p.block);
  for (int64_t r = 0; r < kGateRows; ++r)
    for (int64_t d = lane; d < in.D; d += 32)
      qrows[r * in.D + d] = r < rows ? E::load(in.q, tok(b, t0 + r, h, in.Nq, in.H, in.D) + d) : 0.f;
  __syncwarp();
  const float* kt = kbar + (b * in.Hkv + hk) * in.D * nb;  // [D][nb]
  auto score_row = [&](int64_t r) { return p.scores + ((b * in.Nq + t0 + r) * in.H + h) * nb; };
  for (int64_t j = lane; j < nb; j += 32) {
    float s[kGateRows];
#pragma unroll
    for (int r = 0; r < kGateRows; ++r) s[r] = 0.f;
    for (int64_t d = 0; d < in.D; ++d) {
      const float kv = kt[d * nb + j];
#pragma unroll
      for (int r = 0; r < kGateRows; ++r) s[r] += qrows[r * in.D + d] * kv;
    }
#pragma unroll
    for (int r = 0; r < kGateRows; ++r)
      if (r < rows) score_row(r)[j] = s[r];
  }
  __syncwarp();  // the picks read every lane's scores
  for (int64_t r = 0; r < rows; ++r)
    moba_pick(p, score_row(r), p.selected + ((b * in.Nq + t0 + r) * in.H + h) * p.topk, t0 + r, lane);
}

// The mask lists of one (b, h, query block): the union of its rows' picks at mask-block granularity
// (bk = min(C, 128), so a MoBA block is C / bk mask blocks), token-causal inside when causal. The
// picked MoBA blocks are gathered 32 * kThreads at a time into a shared bitmap (thread w builds
// word w: no atomics) and walked in ascending order. Grid (Qb, H, B).
template <int Threads>
__global__ void __launch_bounds__(Threads) moba_mask_kernel(const MobaParams p, bool write) {
  __shared__ uint32_t picked[kThreads];
  const SelectionInput& in = p.in;
  const MaskOutput& m = p.mask;
  const int r = int(threadIdx.x);
  const int64_t qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t Qb = ceil_div(in.Nq, m.bq), Kb = ceil_div(in.Nk, m.bk), nb = ceil_div(in.Nk, p.block);
  const int64_t q0 = qb * m.bq, rows = imin(m.bq, in.Nq - q0);
  const int64_t per = p.block / m.bk;  // mask blocks per MoBA block
  auto picks = [&](int64_t rr) { return p.selected + ((b * in.Nq + q0 + rr) * in.H + h) * p.topk; };
  ListCursor list(m, (b * in.H + h) * Qb + qb, write);
  for (int64_t j0 = 0; j0 < nb; j0 += 32 * kThreads) {
    uint32_t word = 0;
    for (int64_t rr = 0; rr < rows; ++rr) {
      const int32_t* sel = picks(rr);
      for (int64_t i = 0; i < p.topk && sel[i] >= 0; ++i) {
        const int64_t d = sel[i] - j0 - 32 * r;
        if (d >= 0 && d < 32) word |= 1u << d;
      }
    }
    __syncthreads();  // the previous chunk's walk is done with the bitmap
    picked[r] = word;
    __syncthreads();
    for (int w = 0; w < kThreads; ++w) {
      for (uint32_t bits = picked[w]; bits != 0; bits &= bits - 1) {
        const int64_t j = j0 + 32 * w + (__ffs(int(bits)) - 1);
        bool chosen = false;
        if (r < rows) {
          const int32_t* sel = picks(r);
          for (int64_t i = 0; i < p.topk && sel[i] >= 0 && !chosen; ++i) chosen = sel[i] == j;
        }
        for (int64_t kb = j * per; kb < imin(Kb, (j + 1) * per); ++kb) {
          RowBits mine;
          mine.set_prefix(0);
          if (chosen) mine = chosen_row(q0 + r, kb, m.bk, in.Nq, in.Nk, p.causal);
          list.emit(int32_t(kb), mine, full_row(kb, m.bk, in.Nk), int(rows));
        }
      }
    }
  }
  list.finish();
}

// Launchers, one per kernel, each called by its generated unit only. All are templates: nvcc
// instantiates a kernel named in any inline host function, so a plain inline launcher would put its
// kernel into every unit that includes this header.
template <typename E>
void launch_moba_pool(const MobaParams& p, float* kbar, cudaStream_t stream) {
  auto* kernel = &moba_pool_kernel<E>;
  ATTNKIT_LAUNCH(kernel, dim3(unsigned(ceil_div(p.in.Nk, p.block)), unsigned(p.in.Hkv), unsigned(p.in.B)), dim3(kThreads), 0,
                 stream, p, kbar);
}
template <typename E>
void launch_moba_gate(const MobaParams& p, float* kbar, cudaStream_t stream) {
  auto* kernel = &moba_gate_kernel<E>;
  ATTNKIT_LAUNCH(kernel, dim3(unsigned(ceil_div(p.in.Nq, kGateRows)), unsigned(p.in.H), unsigned(p.in.B)), dim3(32),
                 size_t(kGateRows * p.in.D * 4), stream, p, kbar);
}
// Grid of the per-(b, h, query block) kernels.
inline dim3 block_rows(const SelectionInput& in, int64_t bq) {
  return dim3(unsigned(ceil_div(in.Nq, bq)), unsigned(in.H), unsigned(in.B));
}
template <int Threads = kThreads>
void launch_moba_mask(const MobaParams& p, bool write, cudaStream_t stream) {
  auto* kernel = &moba_mask_kernel<Threads>;
  ATTNKIT_LAUNCH(kernel, block_rows(p.in, p.mask.bq), dim3(Threads), 0, stream, p, write);
}

// ------------------------------------------------------------------ XAttention

// The reshaped geometry: rows t < Nr = ceil(Nq / S) with Q~[t] = concat_i q[tS + S - 1 - i],
// columns u < Mr = ceil(Nk / S) with K~[u] = concat_i k[uS + i] (tokens past the end are zero),
// causal rows see u <= t + (Mr - Nr).
struct Reshaped {
  int64_t S, Nr, Mr, off, rpb;  // rpb: reshaped rows (and columns) per block
  ATTNKIT_DEVICE explicit Reshaped(const XattnParams& p)
      : S(p.stride), Nr(ceil_div(p.in.Nq, p.stride)), Mr(ceil_div(p.in.Nk, p.stride)),
        off(Mr - Nr), rpb(p.block / p.stride) {}
  ATTNKIT_DEVICE int64_t last(int64_t t, bool causal) const { return causal ? imin(Mr - 1, t + off) : Mr - 1; }
};

// acc[g] = Q~[t0 + g] . K~[u] for the kRowGroup rows from t0 (rows >= t1 get 0).
template <typename E>
ATTNKIT_DEVICE void antidiagonal_dots(const XattnParams& p, const Reshaped& x, int64_t b, int64_t h, int64_t hk,
                                      int64_t t0, int64_t t1, int64_t u, float (&acc)[kRowGroup]) {
  const SelectionInput& in = p.in;
#pragma unroll
  for (int g = 0; g < kRowGroup; ++g) acc[g] = 0.f;
  for (int64_t i = 0; i < x.S; ++i) {
    const int64_t ky = u * x.S + i;
    if (ky >= in.Nk) break;
    const int64_t ko = tok(b, ky, hk, in.Nk, in.Hkv, in.D);
    int64_t qo[kRowGroup];
#pragma unroll
    for (int g = 0; g < kRowGroup; ++g) {
      const int64_t qx = (t0 + g) * x.S + x.S - 1 - i;
      qo[g] = t0 + g < t1 && qx < in.Nq ? tok(b, qx, h, in.Nq, in.H, in.D) : -1;
    }
    for (int64_t d = 0; d < in.D; ++d) {
      const float kv = E::load(in.k, ko + d);
#pragma unroll
      for (int g = 0; g < kRowGroup; ++g)
        if (qo[g] >= 0) acc[g] += E::load(in.q, qo[g] + d) * kv;
    }
  }
}

// Running softmax statistics (max, sum of exp(x - max)) and their merge.
struct Stats {
  float m = -kInf, l = 0.f;
  ATTNKIT_DEVICE void add(float x) {
    if (x > m) {
      l = l * expf(m - x) + 1.f;
      m = x;
    } else {
      l += expf(x - m);
    }
  }
  ATTNKIT_DEVICE void merge(float om, float ol) {
    const float mx = fmaxf(m, om);
    if (mx == -kInf) return;
    l = (m == -kInf ? 0.f : l * expf(m - mx)) + (om == -kInf ? 0.f : ol * expf(om - mx));
    m = mx;
  }
};

// Block scores of one (b, h, query block): for each of its reshaped rows, the softmax over the
// visible columns of A[t, u] / (sqrt(D) S), summed per key block. Pass 1 gets each row's max and
// sum (kRowGroup rows at a time, threads over columns, a block reduction); pass 2 recomputes the
// products per key block (thread per key block) and accumulates exp(x - max) / sum. Grid (Qb, H, B).
// minBlocks = 1 lets ptxas use up to 255 registers: with the default it capped this kernel at 128
// and spilled (the compile gate, sm_80); it needs 125-150.
template <typename E>
__global__ void __launch_bounds__(kThreads, 1) xattn_score_kernel(const XattnParams p) {
  __shared__ float row_max[kThreads], row_inv[kThreads];  // rpb <= block <= 128 rows
  __shared__ float red[kWarps][kRowGroup][2];
  const SelectionInput& in = p.in;
  const Reshaped x(p);
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int64_t qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z, hk = h / (in.H / in.Hkv);
  const int64_t Qb = ceil_div(in.Nq, p.block), Kb = ceil_div(in.Nk, p.block);
  const int64_t t0 = qb * x.rpb, t1 = imin(x.Nr, t0 + x.rpb);  // this block's reshaped rows
  const float scale = 1.f / (sqrtf(float(in.D)) * float(x.S));
  const int64_t umax = x.last(t1 - 1, p.causal);  // the widest row's last column (< 0: none)
  float acc[kRowGroup];

  for (int64_t g0 = t0; g0 < t1; g0 += kRowGroup) {
    Stats st[kRowGroup];
    for (int64_t u = tid; u <= umax; u += kThreads) {
      antidiagonal_dots<E>(p, x, b, h, hk, g0, t1, u, acc);
#pragma unroll
      for (int g = 0; g < kRowGroup; ++g)
        if (g0 + g < t1 && u <= x.last(g0 + g, p.causal)) st[g].add(acc[g] * scale);
    }
#pragma unroll
    for (int g = 0; g < kRowGroup; ++g) {
      for (int o = 16; o > 0; o >>= 1) {
        const float om = __shfl_xor_sync(0xffffffffu, st[g].m, o);
        const float ol = __shfl_xor_sync(0xffffffffu, st[g].l, o);
        st[g].merge(om, ol);
      }
      if (lane == 0) {
        red[warp][g][0] = st[g].m;
        red[warp][g][1] = st[g].l;
      }
    }
    __syncthreads();
    if (tid < kRowGroup && g0 + tid < t1) {
      Stats s;
      for (int w = 0; w < kWarps; ++w) s.merge(red[w][tid][0], red[w][tid][1]);
      row_max[g0 + tid - t0] = s.m;
      row_inv[g0 + tid - t0] = s.l > 0.f ? 1.f / s.l : 0.f;
    }
    __syncthreads();
  }

  float* score = p.scores + ((b * in.H + h) * Qb + qb) * Kb;
  for (int64_t kb = tid; kb < Kb; kb += kThreads) {
    float sum = 0.f;
    const int64_t u0 = kb * x.rpb, u1 = imin(x.Mr, imin(umax + 1, u0 + x.rpb));
    for (int64_t g0 = t0; g0 < t1 && u0 < u1; g0 += kRowGroup)
      for (int64_t u = u0; u < u1; ++u) {
        antidiagonal_dots<E>(p, x, b, h, hk, g0, t1, u, acc);
#pragma unroll
        for (int g = 0; g < kRowGroup; ++g)
          if (g0 + g < t1 && u <= x.last(g0 + g, p.causal))
            sum += expf(acc[g] * scale - row_max[g0 + g - t0]) * row_inv[g0 + g - t0];
      }
    score[kb] = sum;
  }
}

ATTNKIT_DEVICE double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) shared[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < kWarps; ++w) total += shared[w];
  return total;
}

// The threshold rule of one (b, h, query block), in float64 as on the CPU: forced = {0, diag} when
// causal; the other blocks in the pick order; a block is taken while the mass of the forced blocks
// and of every block before it in that order is below threshold * the row's total (so the block
// that crosses is taken); causal: blocks past the diagonal dropped. Evaluated per candidate (its
// mass before it, O(Kb) each) instead of by a sort: every thread decides its own blocks.
// Grid (Qb, H, B).
template <int Threads>
__global__ void __launch_bounds__(Threads) xattn_select_kernel(const XattnParams p) {
  static_assert(Threads == kThreads, "block_sum reduces kWarps warps");
  __shared__ double part[kWarps];
  const SelectionInput& in = p.in;
  const int tid = int(threadIdx.x);
  const int64_t qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t Qb = ceil_div(in.Nq, p.block), Kb = ceil_div(in.Nk, p.block);
  const int64_t row = (b * in.H + h) * Qb + qb;
  const float* s = p.scores + row * Kb;
  uint8_t* sel = p.selected + row * Kb;
  const int64_t diag = imin(Kb - 1, imax(0, qb + Kb - Qb));
  double mine = 0;
  for (int64_t kb = tid; kb < Kb; kb += kThreads) mine += s[kb];
  const double total = block_sum(mine, part);
  auto forced = [&](int64_t kb) { return p.causal && (kb == 0 || kb == diag); };
  const double base = p.causal ? double(s[0]) + (diag != 0 ? double(s[diag]) : 0.0) : 0.0;
  const double required = double(p.threshold) * total;
  for (int64_t e = tid; e < Kb; e += kThreads) {
    uint8_t take = 0;
    if (forced(e)) {
      take = 1;
    } else if (!p.causal || e <= diag) {
      const float se = s[e];
      double before = base;
      for (int64_t c = 0; c < Kb; ++c)
        if (!forced(c) && ranks_before(s[c], int(c), se, int(e))) before += s[c];
      take = before < required;
    }
    sel[e] = take;
  }
}

// The mask lists of one (b, h, query block): its selected blocks, token-causal inside when causal.
template <int Threads>
__global__ void __launch_bounds__(Threads) xattn_mask_kernel(const XattnParams p, bool write) {
  const SelectionInput& in = p.in;
  const int r = int(threadIdx.x);
  const int64_t qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t Qb = ceil_div(in.Nq, p.block), Kb = ceil_div(in.Nk, p.block);
  const int64_t row = (b * in.H + h) * Qb + qb;
  const int64_t q0 = qb * p.block, rows = imin(p.block, in.Nq - q0);
  const uint8_t* sel = p.selected + row * Kb;
  ListCursor list(p.mask, row, write);
  for (int64_t kb = 0; kb < Kb; ++kb) {
    if (!sel[kb]) continue;  // uniform: every thread reads the same flag
    RowBits mine;
    mine.set_prefix(0);
    if (r < rows) mine = chosen_row(q0 + r, kb, p.block, in.Nq, in.Nk, p.causal);
    list.emit(int32_t(kb), mine, full_row(kb, p.block, in.Nk), int(rows));
  }
  list.finish();
}

template <typename E>
void launch_xattention_score(const XattnParams& p, cudaStream_t stream) {
  auto* kernel = &xattn_score_kernel<E>;
  ATTNKIT_LAUNCH(kernel, block_rows(p.in, p.block), dim3(kThreads), 0, stream, p);
}
template <int Threads = kThreads>
void launch_xattention_select(const XattnParams& p, cudaStream_t stream) {
  auto* kernel = &xattn_select_kernel<Threads>;
  ATTNKIT_LAUNCH(kernel, block_rows(p.in, p.block), dim3(Threads), 0, stream, p);
}
template <int Threads = kThreads>
void launch_xattention_mask(const XattnParams& p, bool write, cudaStream_t stream) {
  auto* kernel = &xattn_mask_kernel<Threads>;
  ATTNKIT_LAUNCH(kernel, block_rows(p.in, p.block), dim3(Threads), 0, stream, p, write);
}

}  // namespace attnkit::cuda::selection
