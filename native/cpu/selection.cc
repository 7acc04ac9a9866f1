// MoBA gating and XAttention antidiagonal scoring on the CPU, each producing a BlockMask.
//
// MoBA (docs/block-sparse.md): key blocks of C tokens; gate score s[t, j] = <q_t, mean(K_block j)>
// in float32 (the mean over the block's real tokens); causal: the query's own block is always
// selected (token-causal inside), only complete past blocks compete for the other topK - 1 slots;
// non-causal: top-K over all blocks; ties go to the lower block index.
// XAttention: antidiagonal sums over stride x stride tiles, a row softmax at the reshaped
// granularity, block scores, then per query block the smallest score-ordered prefix of blocks
// reaching `threshold` of the row's mass, the sink block and the diagonal forced when causal.
#include "selection.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attnkit/common.h"
#include "attnkit/error.h"
#include "buffer.h"
#include "convert.h"
#include "kernels.h"
#include "thread_pool.h"

namespace attnkit::cpu {
namespace {

inline int64_t tok(int64_t b, int64_t n, int64_t h, int64_t N, int64_t heads, int64_t dim) {
  return ((b * N + n) * heads + h) * dim;
}

// One (b, h) row-range of mask lists, built locally and appended to the output afterwards.
struct LocalMask {
  std::vector<int32_t> full_count, part_count;  // per query block
  std::vector<int32_t> full_idx, part_idx;
  std::vector<uint32_t> bits;
};

// Sets bits [lo, hi] (inclusive) of a bitmap row.
void set_range(uint32_t* row, int64_t lo, int64_t hi) {
  for (int64_t w = lo >> 5; w <= (hi >> 5) && lo <= hi; ++w) {
    const int64_t a = imax(lo, w * 32) - w * 32, b = imin(hi, w * 32 + 31) - w * 32;
    row[w] |= (b == 31 ? ~0u : ((1u << (b + 1)) - 1u)) & ~((1u << a) - 1u);
  }
}

// Appends block kb with per-row bitmaps (rows x words) to `m`: full, partial or nothing.
void append_block(LocalMask& m, int64_t qb, int64_t kb, int64_t rows, int64_t bq, int64_t words,
                  const uint32_t* full_row, const std::vector<uint32_t>& rowbits) {
  bool all_full = true, any = false;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < words; ++w) {
      const uint32_t x = rowbits[size_t(r * words + w)];
      all_full = all_full && x == full_row[w];
      any = any || x != 0;
    }
  if (!any) return;
  if (all_full) {
    m.full_idx.push_back(int32_t(kb));
    m.full_count[size_t(qb)]++;
    return;
  }
  m.part_idx.push_back(int32_t(kb));
  m.part_count[size_t(qb)]++;
  const size_t at = m.bits.size();
  m.bits.resize(at + size_t(bq * words), 0u);
  std::copy(rowbits.begin(), rowbits.begin() + rows * words, m.bits.begin() + at);
}

// Concatenates the per-(b, h) local masks into the output buffers, with offsets.
void write_mask(const std::vector<LocalMask>& parts, int64_t qblocks, const MaskOutput& out,
                const char* op) {
  int64_t nf = 0, np = 0;
  const int64_t per = out.bq * ((out.bk + 31) / 32);
  out.full_off[0] = 0;
  out.part_off[0] = 0;
  int64_t row = 0;
  for (const LocalMask& m : parts) {
    if (nf + int64_t(m.full_idx.size()) > out.full_cap || np + int64_t(m.part_idx.size()) > out.part_cap)
      throw Error("INTERNAL", op, std::string(op) + ": mask capacity exceeded");
    std::copy(m.full_idx.begin(), m.full_idx.end(), out.full_idx + nf);
    std::copy(m.part_idx.begin(), m.part_idx.end(), out.part_idx + np);
    std::copy(m.bits.begin(), m.bits.end(), out.part_bits + np * per);
    int64_t f = nf, p = np;
    for (int64_t qb = 0; qb < qblocks; ++qb, ++row) {
      f += m.full_count[size_t(qb)];
      p += m.part_count[size_t(qb)];
      out.full_off[row + 1] = int32_t(f);
      out.part_off[row + 1] = int32_t(p);
    }
    nf = f;
    np = p;
  }
}

// Rows [r0, r0 + n) of the head-h query matrix in float32, D columns, into dst (ld = D).
void load_rows(const SelectionInput& in, const void* src, int64_t b, int64_t h, int64_t heads,
               int64_t N, int64_t r0, int64_t n, float* dst) {
  for (int64_t r = 0; r < n; ++r) {
    if (r0 + r < N) load_f32(src, in.dtype, tok(b, r0 + r, h, N, heads, in.D), in.D, dst + r * in.D);
    else std::fill(dst + r * in.D, dst + (r + 1) * in.D, 0.f);
  }
}

}  // namespace

// ------------------------------------------------------------------ MoBA

void moba_select(const MobaParams& p) {
  static const char* op = "mobaMask";
  const auto& in = p.in;
  const int64_t B = in.B, Nq = in.Nq, Nk = in.Nk, H = in.H, Hkv = in.Hkv, D = in.D;
  const int64_t C = p.block, nb = ceil_div(Nk, C), nb16 = round_up(imax(nb, 1), 16);
  const int64_t group = H / Hkv;
  const int64_t bq = p.mask.bq, bk = p.mask.bk, words = (bk + 31) / 32;
  const int64_t Qb = ceil_div(Nq, bq), Kb = ceil_div(Nk, bk);
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();

  // Kbar^T per (b, kv head): [D][nb16], the mean of each block's real tokens.
  Scratch<float> KbarT(size_t(B * Hkv * D * nb16), op, /*zero=*/true);
  pool.parallel_for(B * Hkv, [&](int64_t t, int) {
    const int64_t b = t / Hkv, hk = t % Hkv;
    float* kt = KbarT.get() + t * D * nb16;
    std::vector<float> row(static_cast<size_t>(D)), acc(static_cast<size_t>(D));
    for (int64_t j = 0; j < nb; ++j) {
      std::fill(acc.begin(), acc.end(), 0.f);
      const int64_t k0 = j * C, k1 = imin(Nk, k0 + C);
      for (int64_t x = k0; x < k1; ++x) {
        load_f32(in.k, in.dtype, tok(b, x, hk, Nk, Hkv, D), D, row.data());
        for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += row[size_t(d)];
      }
      for (int64_t d = 0; d < D; ++d) kt[d * nb16 + j] = acc[size_t(d)] / float(k1 - k0);
    }
  });

  // Gate scores and per-token selection, one task per (b, h, 64-token chunk).
  constexpr int64_t T = 64;
  const int64_t chunks = ceil_div(Nq, T);
  pool.parallel_for(B * H * chunks, [&](int64_t t, int) {
    const int64_t c = t % chunks, bh = t / chunks, b = bh / H, h = bh % H, hk = h / group;
    const int64_t t0 = c * T, n = imin(T, Nq - t0);
    std::vector<float> Q(static_cast<size_t>(T * D)), S(static_cast<size_t>(T * nb16));
    load_rows(in, in.q, b, h, H, Nq, t0, n, Q.data());
    kern.gemm_f32(n, nb16, D, Q.data(), D, KbarT.get() + (b * Hkv + hk) * D * nb16, nb16, S.data(), nb16, false);
    std::vector<int64_t> cand;
    for (int64_t r = 0; r < n; ++r) {
      const int64_t tq = t0 + r, ta = tq + (Nk - Nq);  // aligned position (bottom-right)
      const float* s = S.data() + r * nb16;
      std::copy(s, s + nb, p.scores + ((b * Nq + tq) * H + h) * nb);
      int32_t* sel = p.selected + ((b * Nq + tq) * H + h) * p.topk;
      std::fill(sel, sel + p.topk, -1);
      int64_t count = 0;
      cand.clear();
      if (p.causal) {
        if (ta < 0) continue;  // sees no key at all
        sel[count++] = int32_t(ta / C);  // own block
        for (int64_t j = 0; (j + 1) * C <= ta && j < nb; ++j) cand.push_back(j);  // complete past
      } else {
        for (int64_t j = 0; j < nb; ++j) cand.push_back(j);
      }
      const int64_t want = imin(p.topk - count, int64_t(cand.size()));
      // Highest scores first; ties to the lower block index.
      std::partial_sort(cand.begin(), cand.begin() + want, cand.end(), [&](int64_t x, int64_t y) {
        return s[x] > s[y] || (s[x] == s[y] && x < y);
      });
      for (int64_t i = 0; i < want; ++i) sel[count++] = int32_t(cand[size_t(i)]);
    }
  });

  // The mask: per (b, h, query block), union of the rows' selections at mask-block granularity.
  std::vector<LocalMask> parts(static_cast<size_t>(B * H));
  pool.parallel_for(B * H, [&](int64_t bh, int) {
    const int64_t b = bh / H, h = bh % H;
    LocalMask& m = parts[size_t(bh)];
    m.full_count.assign(size_t(Qb), 0);
    m.part_count.assign(size_t(Qb), 0);
    std::vector<uint32_t> rowbits(static_cast<size_t>(bq * words)), full_row(static_cast<size_t>(words));
    std::vector<int64_t> kbs;
    for (int64_t qb = 0; qb < Qb; ++qb) {
      const int64_t q0 = qb * bq, rows = imin(bq, Nq - q0);
      kbs.clear();
      for (int64_t r = 0; r < rows; ++r) {
        const int32_t* sel = p.selected + ((b * Nq + q0 + r) * H + h) * p.topk;
        for (int64_t i = 0; i < p.topk && sel[i] >= 0; ++i)
          for (int64_t kb = sel[i] * C / bk; kb < imin(Kb, (sel[i] + 1) * C / bk); ++kb) kbs.push_back(kb);
      }
      std::sort(kbs.begin(), kbs.end());
      kbs.erase(std::unique(kbs.begin(), kbs.end()), kbs.end());
      for (int64_t kb : kbs) {
        const int64_t k0 = kb * bk, k1 = imin(Nk, k0 + bk), j = k0 / C;  // MoBA block of kb
        std::fill(full_row.begin(), full_row.end(), 0u);
        set_range(full_row.data(), 0, k1 - k0 - 1);
        std::fill(rowbits.begin(), rowbits.end(), 0u);
        for (int64_t r = 0; r < rows; ++r) {
          const int32_t* sel = p.selected + ((b * Nq + q0 + r) * H + h) * p.topk;
          bool chosen = false;
          for (int64_t i = 0; i < p.topk && sel[i] >= 0 && !chosen; ++i) chosen = sel[i] == j;
          if (!chosen) continue;
          const int64_t hi = p.causal ? imin(k1 - 1, q0 + r + (Nk - Nq)) : k1 - 1;  // token causal
          set_range(rowbits.data() + r * words, 0, hi - k0);
        }
        append_block(m, qb, kb, rows, bq, words, full_row.data(), rowbits);
      }
    }
  });
  write_mask(parts, Qb, p.mask, op);
}

// ------------------------------------------------------------------ XAttention

void xattention_select(const XattnParams& p) {
  static const char* op = "xattentionMask";
  const auto& in = p.in;
  const int64_t B = in.B, Nq = in.Nq, Nk = in.Nk, H = in.H, Hkv = in.Hkv, D = in.D;
  const int64_t S = p.stride, bs = p.block, words = (bs + 31) / 32;
  const int64_t Nr = ceil_div(Nq, S), Mr = ceil_div(Nk, S), Mr16 = round_up(imax(Mr, 1), 16);
  const int64_t Qb = ceil_div(Nq, bs), Kb = ceil_div(Nk, bs);
  const int64_t group = H / Hkv, SD = S * D;
  const int64_t off = Mr - Nr;  // bottom-right alignment at the reshaped granularity
  const float scale = 1.f / (std::sqrt(float(D)) * float(S));
  const CpuKernels& kern = active_kernels();
  ThreadPool& pool = ThreadPool::instance();

  // bfloat16 inputs score on the bf16 GEMM where it runs on AMX (XAttention's own estimator uses
  // bf16 GEMMs too); otherwise float32.
  const bool dot = in.dtype == DType::BFloat16 && kern.isa == Isa::Amx && SD % kern.bf16_k_align == 0;
  // K~^T per (b, kv head): [S*D][Mr16], K~[u] = concat_i k[uS + i] (zero past the end); for the
  // bf16 path as pairs along S*D: [S*D/2][Mr16][2].
  Scratch<float> KT(size_t(dot ? 1 : B * Hkv * SD * Mr16), op, /*zero=*/!dot);
  Scratch<uint16_t> KTb(size_t(dot ? B * Hkv * SD * Mr16 : 1), op, /*zero=*/dot);
  // Transposed in groups of 16 columns u, so that every write is a 16-wide contiguous run (a plain
  // element-wise transpose here was cache-miss bound).
  const int64_t ugroups = ceil_div(Mr, 16);
  pool.parallel_for(B * Hkv * ugroups, [&](int64_t t, int) {
    const int64_t ug = t % ugroups, bhk = t / ugroups, b = bhk / Hkv, hk = bhk % Hkv;
    const int64_t u0 = ug * 16, un = imin(16, Mr - u0);
    std::vector<float> tile(static_cast<size_t>(16 * SD), 0.f);  // [u][c]
    for (int64_t uu = 0; uu < un; ++uu)
      for (int64_t i = 0; i < S; ++i) {
        const int64_t x = (u0 + uu) * S + i;
        if (x < Nk) load_f32(in.k, in.dtype, tok(b, x, hk, Nk, Hkv, D), D, tile.data() + uu * SD + i * D);
      }
    if (dot) {
      uint16_t* ktb = KTb.get() + bhk * SD * Mr16;
      for (int64_t c = 0; c < SD; ++c)
        for (int64_t uu = 0; uu < un; ++uu)
          ktb[((c >> 1) * Mr16 + u0 + uu) * 2 + (c & 1)] = f32_to_bf16(tile[size_t(uu * SD + c)]);  // exact: inputs are bf16
    } else {
      float* kt = KT.get() + bhk * SD * Mr16;
      for (int64_t c = 0; c < SD; ++c)
        for (int64_t uu = 0; uu < un; ++uu) kt[c * Mr16 + u0 + uu] = tile[size_t(uu * SD + c)];
    }
  });

  // Block scores. A task takes ~64 reshaped rows (several query blocks) so that K~ streams through
  // the GEMM once per 64 rows, not once per block; each row's softmax over u is accumulated into
  // its query block's scores.
  std::vector<LocalMask> parts(static_cast<size_t>(B * H));
  const int64_t rows_per_block = bs / S;
  const int64_t blocks_per_task = imax(1, 64 / rows_per_block);
  const int64_t tasks_per_head = ceil_div(Qb, blocks_per_task);
  pool.parallel_for(B * H * tasks_per_head, [&](int64_t t, int) {
    const int64_t c = t % tasks_per_head, bh = t / tasks_per_head, b = bh / H, h = bh % H, hk = h / group;
    const int64_t qb0 = c * blocks_per_task, qb1 = imin(Qb, qb0 + blocks_per_task);
    const int64_t t0 = qb0 * rows_per_block, n = imax(0, imin(qb1 * rows_per_block, Nr) - t0);
    const int64_t nrows = round_up(imax(n, 1), 16);  // the AMX GEMM reads whole 16-row tiles
    std::vector<float> Qt(static_cast<size_t>(dot ? 1 : nrows * SD)), A(static_cast<size_t>(nrows * Mr16));
    std::vector<uint16_t> Qtb(static_cast<size_t>(dot ? nrows * SD : 1), uint16_t(0));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < S; ++i) {  // Q~[t] = concat_i q[tS + S - 1 - i]
        const int64_t x = (t0 + r) * S + S - 1 - i;
        if (dot) {
          if (x < Nq) {
            const uint16_t* qr = static_cast<const uint16_t*>(in.q) + tok(b, x, h, Nq, H, D);
            std::copy(qr, qr + D, Qtb.data() + r * SD + i * D);
          }
          continue;
        }
        float* dst = Qt.data() + r * SD + i * D;
        if (x < Nq) load_f32(in.q, in.dtype, tok(b, x, h, Nq, H, D), D, dst);
        else std::fill(dst, dst + D, 0.f);
      }
    std::fill(p.scores + (bh * Qb + qb0) * Kb, p.scores + (bh * Qb + qb1) * Kb, 0.f);
    // Causal rows never look past column (last row) + off: skip those columns (about half).
    const int64_t ncols = p.causal ? imin(Mr16, round_up(imax(t0 + n + off, 1), 16)) : Mr16;
    if (n > 0 && t0 + n + off > 0) {
      if (dot)
        // (gemm_bf16 derives B's row stride from N, so it runs over all Mr16 columns.)
        kern.gemm_bf16(n, Mr16, SD / 2, Qtb.data(), SD, KTb.get() + (b * Hkv + hk) * SD * Mr16, A.data(), Mr16, false);
      else
        kern.gemm_f32(n, ncols, SD, Qt.data(), SD, KT.get() + (b * Hkv + hk) * SD * Mr16, Mr16, A.data(), Mr16, false);
    }
    for (int64_t r = 0; r < n; ++r) {
      const int64_t tr = t0 + r, last = p.causal ? imin(Mr - 1, tr + off) : Mr - 1;
      if (last < 0) continue;
      float* a = A.data() + r * Mr16;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t u = 0; u <= last; ++u) mx = std::max(mx, a[u] * scale);
      float sum = 0.f;
      for (int64_t u = 0; u <= last; ++u) sum += (a[u] = std::exp(a[u] * scale - mx));
      float* score = p.scores + (bh * Qb + (tr * S) / bs) * Kb;
      const float inv = 1.f / sum;
      for (int64_t u = 0; u <= last; ++u) score[(u * S) / bs] += a[u] * inv;
    }
  });

  // Selection and the mask, per (b, h).
  pool.parallel_for(B * H, [&](int64_t bh, int) {
    LocalMask& m = parts[static_cast<size_t>(bh)];
    m.full_count.assign(size_t(Qb), 0);
    m.part_count.assign(size_t(Qb), 0);
    std::vector<int64_t> order;
    std::vector<uint32_t> rowbits(static_cast<size_t>(bs * words)), full_row(static_cast<size_t>(words));
    for (int64_t qb = 0; qb < Qb; ++qb) {
      const float* score = p.scores + (bh * Qb + qb) * Kb;
      uint8_t* sel = p.selected + (bh * Qb + qb) * Kb;
      std::fill(sel, sel + Kb, uint8_t(0));
      const int64_t diag = imin(Kb - 1, imax(0, qb + (Kb - Qb)));
      double total = 0, have = 0;
      for (int64_t kb = 0; kb < Kb; ++kb) total += score[kb];
      order.clear();
      for (int64_t kb = 0; kb < Kb; ++kb) {
        if (p.causal && (kb == 0 || kb == diag)) {
          sel[kb] = 1;
          have += score[kb];
        } else {
          order.push_back(kb);
        }
      }
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return score[x] > score[y]; });
      const double required = double(p.threshold) * total;
      for (int64_t kb : order) {  // the block that crosses the threshold is included
        if (have >= required) break;
        sel[kb] = 1;
        have += score[kb];
      }
      if (p.causal)
        for (int64_t kb = diag + 1; kb < Kb; ++kb) sel[kb] = 0;
      // Element mask: selected blocks, token-causal (bottom-right) inside when causal.
      const int64_t q0 = qb * bs, rows = imin(bs, Nq - q0);
      for (int64_t kb = 0; kb < Kb; ++kb) {
        if (!sel[kb]) continue;
        const int64_t k0 = kb * bs, k1 = imin(Nk, k0 + bs);
        std::fill(full_row.begin(), full_row.end(), 0u);
        set_range(full_row.data(), 0, k1 - k0 - 1);
        std::fill(rowbits.begin(), rowbits.end(), 0u);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t hi = p.causal ? imin(k1 - 1, q0 + r + (Nk - Nq)) : k1 - 1;
          set_range(rowbits.data() + r * words, 0, hi - k0);
        }
        append_block(m, qb, kb, rows, bs, words, full_row.data(), rowbits);
      }
    }
  });
  write_mask(parts, Qb, p.mask, op);
}

}  // namespace attnkit::cpu
