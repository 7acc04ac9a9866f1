// BlockSparseDeviceMask: the block-sparse tile policy BlockSparseMaskT<64, 64>
// (attnkit/mask_block_sparse.h: the same view and plan) with a device group of its own: the fields
// by value, 32-bit index arithmetic, and row_mask as one scan of each sorted list (a binary search
// for the key tile's first block, then its at most four blocks) instead of two binary searches per
// overlapping block. Same answers (tests/blockSparse_test.cc checks every method against the base
// policy on every mask it builds); no local memory and fewer registers: with the base group the fmha
// forward at D = 64 (128-register cap) and the dK/dV kernel at D = 64 and 128 spilled. Indices must
// fit int32 (dispatch.h refuses longer sequences).
#pragma once
#include "attnkit/mask_block_sparse.h"

namespace attnkit::cuda::block_sparse {

// First position in idx[lo, hi) whose value is >= k.
ATTNKIT_HD int32_t lower_bound32(const int32_t* idx, int32_t lo, int32_t hi, int32_t k) {
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (idx[mid] < k) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// One mask row's view, by value: the kernels copy it out of the kernel parameters field by field
// (a pointer into the parameters, as BlockSparseGroupT keeps, made ptxas put them in local memory).
struct BlockSparseDeviceGroup {
  const int32_t *full_off, *full_idx, *part_off, *part_idx;
  const uint32_t* part_bits;
  const int32_t *kv_off, *kv_tile, *q_off, *q_tile;
  const uint8_t* kv_cls;
  int32_t nq, nk, bq, bk, qb, nqt, nkt, bh;

  ATTNKIT_HD int64_t q_tiles() const { return nqt; }
  ATTNKIT_HD int64_t k_tiles() const { return nkt; }
  ATTNKIT_HD int64_t q_token(int64_t p) const { return p < nq ? p : -1; }
  ATTNKIT_HD int64_t k_token(int64_t p) const { return p < nk ? p : -1; }
  ATTNKIT_HD int64_t kv_count(int64_t qt) const { return kv_off[bh * nqt + qt + 1] - kv_off[bh * nqt + qt]; }
  ATTNKIT_HD int64_t kv_at(int64_t qt, int64_t i) const { return kv_tile[kv_off[bh * nqt + qt] + i]; }
  ATTNKIT_HD int64_t q_count(int64_t kt) const { return q_off[bh * nkt + kt + 1] - q_off[bh * nkt + kt]; }
  ATTNKIT_HD int64_t q_at(int64_t kt, int64_t i) const { return q_tile[q_off[bh * nkt + kt] + i]; }

  ATTNKIT_HD TileClass classify(int64_t qt, int64_t kt) const {
    const int32_t r = bh * nqt + static_cast<int32_t>(qt);
    const int32_t lo = kv_off[r], hi = kv_off[r + 1];
    const int32_t i = lower_bound32(kv_tile, lo, hi, static_cast<int32_t>(kt));
    return i < hi && kv_tile[i] == kt ? TileClass(kv_cls[i]) : TileClass::Skip;
  }

  // Bit j: query q sees key 64 kt + j. A block in both lists counts as full (as status() has it).
  ATTNKIT_HD uint64_t row_mask(int64_t q64, int64_t kt) const {
    const int32_t q = static_cast<int32_t>(q64), k0 = static_cast<int32_t>(kt) * 64;
    if (q64 >= nq || k0 >= nk) return 0;
    const int32_t k1 = nk < k0 + 64 ? nk : k0 + 64, kb0 = k0 / bk, kb1 = (k1 - 1) / bk;
    const int32_t r = bh * qb + q / bq;
    uint64_t mask = 0;
#pragma unroll 1
    for (int pass = 0; pass < 2; ++pass) {
      const int32_t* off = pass == 0 ? full_off : part_off;
      const int32_t* idx = pass == 0 ? full_idx : part_idx;
      const int32_t end = off[r + 1];
      for (int32_t i = lower_bound32(idx, off[r], end, kb0); i < end && idx[i] <= kb1; ++i) {
        // Block b covers [c0, c1) of the tile. Blocks and tiles are aligned powers of two, so the
        // block's first column in the tile is 0 or (bk = 128) 64: whole bitmap words, no shift.
        const int32_t b = idx[i], c0 = b * bk > k0 ? b * bk : k0, c1 = (b + 1) * bk < k1 ? (b + 1) * bk : k1, n = c1 - c0;
        uint64_t bits = n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
        if (pass == 1) {
          const uint32_t* w = part_bits + (int64_t(i) * bq + q % bq) * ((bk + 31) / 32) + (c0 - b * bk) / 32;
          bits &= uint64_t(w[0]) | (n > 32 ? uint64_t(w[1]) << 32 : 0);
        }
        mask |= bits << (c0 - k0);
      }
    }
    return mask;
  }
};

struct BlockSparseDeviceMask : BlockSparseMaskT<64, 64> {
  ATTNKIT_HD BlockSparseDeviceGroup group(int64_t, int64_t b, int64_t h) const {
    return {view.full_off, view.full_idx, view.part_off, view.part_idx, view.part_bits,
            plan.kv_off, plan.kv_tile, plan.q_off, plan.q_tile, plan.kv_cls,
            static_cast<int32_t>(view.nq), static_cast<int32_t>(view.nk), static_cast<int32_t>(view.bq),
            static_cast<int32_t>(view.bk), static_cast<int32_t>(view.qb), static_cast<int32_t>(plan.nqt),
            static_cast<int32_t>(plan.nkt), static_cast<int32_t>((b % view.B) * view.H + (h % view.H))};
  }
};

}  // namespace attnkit::cuda::block_sparse
