// Register fragment layouts of mma.sync.m16n8k16 (f16/bf16 inputs, f32 accumulators) and
// ldmatrix.m8n8.b16, in the closed forms of ../../docs/gpu-verification.md (PTX ISA, "Matrix Fragments
// for mma.m16n8k16 with floating point type"; they agree lane by lane with CUTLASS's SM80_16x8x16 and
// SM75 LDSM layouts). With g = lane / 4 and t = lane % 4:
//   A 16x16 (row-major), elements a0..a7 in four .b32 registers, low half first:
//     a_i -> (g + 8*((i>>1)&1), 2t + (i&1) + 8*(i>>2))
//   B 16x8 ("col"), b0..b3 in two registers:  b_i -> (k = 2t + (i&1) + 8*(i>>1), n = g)
//   C/D 16x8 f32, c0..c3:                     c_i -> (g + 8*(i>>1), 2t + (i&1))
//   ldmatrix, register j holds matrix j; half h (0 low, 1 high) is
//     M_j[g][2t + h] without .trans, M_j[2t + h][g] with .trans.
#pragma once

namespace simt::fragments {

struct RowCol {
  int row;
  int col;
};

constexpr RowCol mma_a(int lane, int i) {
  return RowCol{(lane >> 2) + 8 * ((i >> 1) & 1), 2 * (lane & 3) + (i & 1) + 8 * (i >> 2)};
}
constexpr RowCol mma_b(int lane, int i) {  // row = k, col = n
  return RowCol{2 * (lane & 3) + (i & 1) + 8 * (i >> 1), lane >> 2};
}
constexpr RowCol mma_c(int lane, int i) {
  return RowCol{(lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)};
}
constexpr RowCol ldmatrix(int lane, int half, bool trans) {
  return trans ? RowCol{2 * (lane & 3) + half, lane >> 2} : RowCol{lane >> 2, 2 * (lane & 3) + half};
}

}  // namespace simt::fragments
