// The end-to-end sample kernel of the verification chain: a tiled GEMM on tensor cores with the
// FlashAttention-2 data path (global -> cp.async -> shared -> ldmatrix -> mma.sync). The same source is
// compiled by nvcc for sm_80/sm_90 (compile gate: registers, spills, `mma.sync` in the PTX) and by
// g++ against the SIMT emulator (gemm_tile_test.cc: result against a CPU product). It is a test
// artefact, not a library kernel.
//
// C[M][N] (f32, row-major) = A[M][K] * B[K][N], A and B row-major __half or __nv_bfloat16.
// Block tile 64x64, k-step 32, 128 threads = 2x2 warps of 32x32 (2 m16 x 4 n8 mma tiles each),
// double-buffered in dynamic shared memory with rows padded by 8 elements (16 bytes). A is loaded
// with ldmatrix.x4 (row lane%16, column (lane/16)*8); B is N-major, so with ldmatrix.x4.trans as V in
// P*V. Tails: any M; N and K multiples of 8 (16-byte rows), out-of-range chunks zero-filled.
#include <cstdint>

#include "../../cuda/ptx.cuh"

namespace attnkit::sample {

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 128;
constexpr int kLdA = kBK + 8;  // 80-byte rows: 16-byte aligned, and consecutive rows shift banks
constexpr int kLdB = kBN + 8;  // 144-byte rows
constexpr int kStageA = kBM * kLdA;
constexpr int kStageB = kBK * kLdB;
constexpr size_t kGemmSmemBytes = 2 * (kStageA + kStageB) * sizeof(uint16_t);

template <typename T>
ATTNKIT_DEVICE void gemm_load_stage(T* sA, T* sB, const T* A, const T* B, int M, int N, int K, int m0, int n0,
                                    int k0) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // A: 64 rows x 4 chunks of 8 elements
    const int c = tid + i * kThreads, row = c / 4, col = (c % 4) * 8;
    const int gm = m0 + row, gk = k0 + col;
    const bool in = gm < M && gk < K;
    ptx::cp_async_16_zfill(sA + row * kLdA + col, in ? A + static_cast<int64_t>(gm) * K + gk : A, in ? 16 : 0);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {  // B: 32 rows x 8 chunks
    const int c = tid + i * kThreads, row = c / 8, col = (c % 8) * 8;
    const int gk = k0 + row, gn = n0 + col;
    const bool in = gk < K && gn < N;
    ptx::cp_async_16_zfill(sB + row * kLdB + col, in ? B + static_cast<int64_t>(gk) * N + gn : B, in ? 16 : 0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gemm_tile(const T* __restrict__ A, const T* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
  ATTNKIT_DYNAMIC_SMEM(T, smem);
  T* const sA = smem;                // [2][kBM][kLdA]
  T* const sB = smem + 2 * kStageA;  // [2][kBK][kLdB]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int wm = warp / 2, wn = warp % 2;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int ktiles = (K + kBK - 1) / kBK;

  float acc[2][4][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.0f;

  gemm_load_stage(sA, sB, A, B, M, N, K, m0, n0, 0);
  ptx::cp_async_commit();
  for (int kt = 0; kt < ktiles; ++kt) {
    if (kt + 1 < ktiles) {
      const int next = (kt + 1) & 1;
      gemm_load_stage(sA + next * kStageA, sB + next * kStageB, A, B, M, N, K, m0, n0, (kt + 1) * kBK);
      ptx::cp_async_commit();
      ptx::cp_async_wait<1>();
    } else {
      ptx::cp_async_wait<0>();
    }
    __syncthreads();  // every thread's copies of stage kt have landed

    const T* a_s = sA + (kt & 1) * kStageA;
    const T* b_s = sB + (kt & 1) * kStageB;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t a[2][4], b[4][2];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
        ptx::ldmatrix_x4(a[mi], a_s + (wm * 32 + mi * 16 + lane % 16) * kLdA + kk + (lane / 16) * 8);
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        uint32_t r[4];
        ptx::ldmatrix_x4_trans(r, b_s + (kk + lane % 16) * kLdB + wn * 32 + nj * 16 + (lane / 16) * 8);
        b[2 * nj][0] = r[0];
        b[2 * nj][1] = r[1];
        b[2 * nj + 1][0] = r[2];
        b[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) ptx::mma_m16n8k16<T>(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
    }
    __syncthreads();  // stage kt is read before the next iteration's copies overwrite it
  }

#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = m0 + wm * 32 + mi * 16 + lane / 4 + 8 * (i / 2);
        const int col = n0 + wn * 32 + ni * 8 + 2 * (lane % 4) + (i % 2);
        if (row < M && col < N) C[static_cast<int64_t>(row) * N + col] = acc[mi][ni][i];
      }
}

template __global__ void gemm_tile<__half>(const __half*, const __half*, float*, int, int, int);
template __global__ void gemm_tile<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, float*, int, int, int);

// The host side, identical for both builds: a stream-ordered launch under nvcc, a synchronous
// emulated launch under g++.
template <typename T>
void gemm_tile_launch(const T* A, const T* B, float* C, int M, int N, int K, cudaStream_t stream) {
  auto* kernel = &gemm_tile<T>;
  const dim3 grid((N + kBN - 1) / kBN, (M + kBM - 1) / kBM);
  ATTNKIT_LAUNCH(kernel, grid, kThreads, kGemmSmemBytes, stream, A, B, C, M, N, K);
}

template void gemm_tile_launch<__half>(const __half*, const __half*, float*, int, int, int, cudaStream_t);
template void gemm_tile_launch<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*, float*, int, int, int,
                                              cudaStream_t);

}  // namespace attnkit::sample
