// Device construction of a BlockMask's lists (attnkit/mask_block_sparse.h, MaskOutput of
// attnkit/selection.h) from a per-(b, h, query block) decision, in three stream-ordered steps that
// keep the CPU's compacted layout exactly (native/cpu/selection.cc, append_block / write_mask):
//   1. count: one CTA per mask row walks its key blocks in ascending order and stores the number of
//      full and partial blocks at full_off[row + 1] / part_off[row + 1];
//   2. scan: one CTA turns those counts into offsets in place (full_off[0] = part_off[0] = 0);
//   3. write: the same walk again, now writing indices and bitmaps at the row's offsets.
// A row of the walk is a CTA of kThreads threads, thread r owning query row r of the block
// (bq <= 128 = kThreads): each thread builds its row's bits of a key block, and the block is full
// when every real row equals the full row, dropped when every row is empty (block-wide votes), so
// the classification and the order are the CPU's, bit for bit.
#pragma once
#include <cstdint>

#include "../cuda_compat.cuh"
#include "attnkit/common.h"
#include "attnkit/selection.h"

namespace attnkit::cuda::selection {

constexpr int kThreads = 128;      // threads of every selection CTA; >= the largest query block
constexpr int kMaxWords = 4;       // 32-bit words of a bitmap row: key blocks up to 128
constexpr int kScanThreads = 256;  // the offsets scan

// One key block's row bits for this thread's row: bits [0, hi - k0] set (none when hi < k0).
struct RowBits {
  uint32_t w[kMaxWords];
  ATTNKIT_DEVICE void set_prefix(int64_t n) {  // the first n bits (n may be <= 0)
#pragma unroll
    for (int i = 0; i < kMaxWords; ++i) {
      const int64_t b = n - 32 * i;
      w[i] = b <= 0 ? 0u : b >= 32 ? ~0u : (1u << b) - 1u;
    }
  }
};

// Where the walk of one mask row stands: blocks emitted so far and, when writing (the third step),
// the row's offsets.
struct ListCursor {
  const MaskOutput* m;
  int64_t row;
  bool write;
  int32_t nf = 0, np = 0;
  int64_t full_base = 0, part_base = 0;

  ATTNKIT_DEVICE ListCursor(const MaskOutput& out, int64_t r, bool w) : m(&out), row(r), write(w) {
    if (write) {
      full_base = out.full_off[r];
      part_base = out.part_off[r];
    }
  }

  // Key block kb with this thread's row bits (`mine`, rows >= `rows` have none) against the full row
  // (`full`: the block's in-range columns): emitted as full, partial or not at all. Every thread of
  // the CTA calls it with the same kb (it votes).
  ATTNKIT_DEVICE void emit(int32_t kb, const RowBits& mine, const RowBits& full, int rows) {
    const int r = int(threadIdx.x);
    const int words = int((m->bk + 31) / 32);
    bool same = true, some = false;
#pragma unroll
    for (int i = 0; i < kMaxWords; ++i) {
      same = same && (i >= words || mine.w[i] == full.w[i]);
      some = some || mine.w[i] != 0;
    }
    const bool all_full = __syncthreads_and(r >= rows || same) != 0;
    const bool any = __syncthreads_or(r < rows && some) != 0;
    if (!any) return;
    if (all_full) {
      if (write && r == 0 && full_base + nf < m->full_cap) m->full_idx[full_base + nf] = kb;
      ++nf;
      return;
    }
    if (write && part_base + np < m->part_cap) {
      if (r == 0) m->part_idx[part_base + np] = kb;
      if (r < m->bq) {
        uint32_t* dst = m->part_bits + ((part_base + np) * m->bq + r) * words;
#pragma unroll
        for (int i = 0; i < kMaxWords; ++i)
          if (i < words) dst[i] = r < rows ? mine.w[i] : 0u;
      }
    }
    ++np;
  }

  // End of the row: the counting pass leaves its counts where the scan expects them.
  ATTNKIT_DEVICE void finish() {
    if (!write && threadIdx.x == 0) {
      m->full_off[row + 1] = nf;
      m->part_off[row + 1] = np;
    }
  }
};

// The in-range columns of key block kb as a full row.
ATTNKIT_DEVICE RowBits full_row(int64_t kb, int64_t bk, int64_t nk) {
  RowBits f;
  f.set_prefix(imin(nk, (kb + 1) * bk) - kb * bk);
  return f;
}

// Row q's bits of key block kb when the block is chosen for it: every in-range column, or, causal,
// the columns up to the row's aligned position q + (nk - nq) (bottom-right).
ATTNKIT_DEVICE RowBits chosen_row(int64_t q, int64_t kb, int64_t bk, int64_t nq, int64_t nk, bool causal) {
  const int64_t k0 = kb * bk, k1 = imin(nk, k0 + bk);
  const int64_t hi = causal ? imin(k1 - 1, q + (nk - nq)) : k1 - 1;
  RowBits b;
  b.set_prefix(hi - k0 + 1);
  return b;
}

// Counts -> offsets, in place, for both lists: off[0] = 0, off[i] = sum of counts 1..i. One CTA;
// each thread sums a contiguous chunk, the chunk sums are scanned in shared memory, then each
// thread rewrites its chunk. (Kernels are templates so that the header may define them: each is
// instantiated by the one generated unit that launches it.)
template <int Threads>
__global__ void __launch_bounds__(Threads) offsets_scan_kernel(int32_t* full_off, int32_t* part_off, int64_t rows) {
  __shared__ int32_t sums[2][Threads];
  const int t = int(threadIdx.x);
  const int64_t chunk = (rows + Threads - 1) / Threads;
  const int64_t lo = 1 + t * chunk, hi = imin(rows + 1, lo + chunk);
  int32_t f = 0, p = 0;
  for (int64_t i = lo; i < hi; ++i) {
    f += full_off[i];
    p += part_off[i];
  }
  sums[0][t] = f;
  sums[1][t] = p;
  __syncthreads();
  if (t == 0) {  // Threads values: a serial scan is cheaper than a tree at this size
    int32_t af = 0, ap = 0;
    for (int i = 0; i < Threads; ++i) {
      const int32_t sf = sums[0][i], sp = sums[1][i];
      sums[0][i] = af;
      sums[1][i] = ap;
      af += sf;
      ap += sp;
    }
    full_off[0] = 0;
    part_off[0] = 0;
  }
  __syncthreads();
  f = sums[0][t];
  p = sums[1][t];
  for (int64_t i = lo; i < hi; ++i) {
    f += full_off[i];
    p += part_off[i];
    full_off[i] = f;
    part_off[i] = p;
  }
}

template <int Threads = kScanThreads>  // a template: see selection.cuh, "Launchers"
void launch_offsets_scan(const MaskOutput& m, int64_t rows, cudaStream_t stream) {
  auto* kernel = &offsets_scan_kernel<Threads>;
  ATTNKIT_LAUNCH(kernel, dim3(1), dim3(Threads), 0, stream, m.full_off, m.part_off, rows);
}

}  // namespace attnkit::cuda::selection
