// Plain descriptors of the run-time block selection ops (MoBA gating, XAttention scoring). Both
// write a BlockMask in the list form of mask_block_sparse.h into preallocated buffers whose
// capacities the caller computes (the lists' true lengths are in the offsets).
#pragma once
#include <cstdint>

#include "attnkit/dtype.h"

namespace attnkit {

struct MaskOutput {
  int64_t bq = 64, bk = 64;
  int32_t* full_off = nullptr;  // [B * H * Qb + 1]
  int32_t* full_idx = nullptr;
  int64_t full_cap = 0;
  int32_t* part_off = nullptr;
  int32_t* part_idx = nullptr;
  int64_t part_cap = 0;
  uint32_t* part_bits = nullptr;  // part_cap * bq * ceil(bk / 32)
};

struct SelectionInput {
  int64_t B = 0, Nq = 0, Nk = 0, H = 0, Hkv = 0, D = 0;
  DType dtype = DType::Float32;
  const void* q = nullptr;  // [B, Nq, H, D]
  const void* k = nullptr;  // [B, Nk, Hkv, D]
};

struct MobaParams {
  SelectionInput in;
  int64_t block = 64;  // MoBA key block (chunk) size C, a power of two >= 16
  int64_t topk = 1;
  bool causal = true;
  float* scores = nullptr;     // [B, Nq, H, nBlocks] raw gate scores
  int32_t* selected = nullptr; // [B, Nq, H, topk], -1 padded
  MaskOutput mask;             // bq = blockQ, bk = min(C, 128)
};

struct XattnParams {
  SelectionInput in;
  int64_t stride = 8;
  int64_t block = 64;  // blockQ = blockK
  float threshold = 0.9f;
  bool causal = true;
  float* scores = nullptr;      // [B, H, Qb, Kb]
  uint8_t* selected = nullptr;  // [B, H, Qb, Kb]
  MaskOutput mask;
};

}  // namespace attnkit
