// The table of SIMD tile primitives the CPU attention kernels are built from. One table per
// instruction set (generic, AVX2+FMA, AVX-512, AVX-512 with BF16 dot products) is compiled from
// kernels_impl.inc; isa.cc picks one at run time. The primitives take raw pointers and sizes only:
// tile loops, masking and threading live in the ISA-independent drivers (attention.cc), so the
// mask policies are compiled once and mean the same thing on every ISA.
#pragma once
#include <cstdint>

namespace attnkit::cpu {

enum class Isa : int32_t { Generic = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3, Amx = 4 };

struct CpuKernels {
  Isa isa;
  const char* name;
  // C[M x N] (+)= A[M x K] * B[K x N]; A row-major (lda), B row-major (ldb), N a multiple of 16.
  void (*gemm_f32)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                   int64_t ldb, float* C, int64_t ldc, bool accumulate);
  // Same with bfloat16 pairs along K: A [M x 2*K2] bf16 (lda in elements), B [K2][N][2] bf16,
  // fp32 accumulation by dot products of pairs. Null where the CPU has no BF16 dot product.
  // 2*K2 must be a multiple of bf16_k_align, and A must have readable (finite or not) rows up to
  // round_up(M, 16): the AMX version loads whole 16-row tiles.
  void (*gemm_bf16)(int64_t M, int64_t N, int64_t K2, const uint16_t* A, int64_t lda,
                    const uint16_t* B, float* C, int64_t ldc, bool accumulate);
  int32_t bf16_k_align;
  // Online-softmax step for `rows` rows of a score tile S[rows x cols] (masked entries = -inf,
  // cols a multiple of 16). Scores are scaled by c = scale * log2(e). Updates the running max m
  // (log2 domain) and the running sum, kept unreduced as 16 partial sums per row (l[16 r + i],
  // zero-initialized; the row sum is their total), rescales O[rows x dv] (dv a multiple of 16) and
  // writes the tile's probabilities to P (float32) or Pb (bfloat16, when non-null), stride ldp.
  void (*softmax_step)(int64_t rows, int64_t cols, const float* S, int64_t lds, float c, float* m,
                       float* l, float* O, int64_t ldo, int64_t dv, float* P, uint16_t* Pb,
                       int64_t ldp);
  // Backward: P = exp2(S * c - lse2[row]) (lse2 = LSE in log2 units; -inf rows give 0).
  void (*bwd_probs)(int64_t rows, int64_t cols, const float* S, int64_t lds, float c,
                    const float* lse2, float* P, int64_t ldp);
  // Backward: dS = P * (dP - delta[row]), in place over dP.
  void (*bwd_dscore)(int64_t rows, int64_t cols, const float* P, int64_t ldp, float* dP,
                     int64_t lddp, const float* delta);
  // Element masking of a 64-column tile: X[r][j] = fill where bit j of masks[r] is clear.
  void (*mask_rows)(int64_t rows, float* X, int64_t ldx, const uint64_t* masks, float fill);
  // bfloat16 packing for the bf16 GEMM (round to nearest even; cols a multiple of 16):
  // Y[r][j] = bf16(X[r][j]) for r < rows.
  void (*rows_to_bf16)(int64_t rows, int64_t cols, const float* X, int64_t ldx, uint16_t* Y,
                       int64_t ldy);
  // Row pairs as the B operand: Z[i][j][2] = (bf16(X[2i][j]), bf16(X[2i+1][j])) for
  // i < pair_rows, with X rows >= rows read as zero.
  void (*pack_row_pairs_bf16)(int64_t rows, int64_t pair_rows, int64_t cols, const float* X,
                              int64_t ldx, uint16_t* Z);
};

const CpuKernels& kernels_generic();
const CpuKernels& kernels_avx2();
const CpuKernels& kernels_avx512();
const CpuKernels& kernels_avx512bf16();
const CpuKernels& kernels_amx();

// Best table the running CPU supports, or the one forced by set_isa()/ATTNKIT_CPU_ISA.
const CpuKernels& active_kernels();
Isa detected_isa();
// Returns false when the CPU cannot run `isa`.
bool set_isa(Isa isa);
const char* isa_name(Isa isa);

}  // namespace attnkit::cpu
