// gemm_tile.cu under the emulator: cp.async -> ldmatrix -> mma.sync GEMM tiles against a double
// product of the same (rounded) inputs, f16 and bf16, with tails in M, N and K; and the emulator's
// throughput in warp-MMAs per second (a note for the driver).
#include <chrono>
#include <random>
#include <vector>

#include "gemm_tile.cu"
#include "harness.h"

namespace {

using attnkit::sample::gemm_tile_launch;

template <typename T>
T from_f(float f);
template <>
__half from_f<__half>(float f) {
  return __float2half_rn(f);
}
template <>
__nv_bfloat16 from_f<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}
float to_f(__half h) { return __half2float(h); }
float to_f(__nv_bfloat16 h) { return __bfloat162float(h); }

template <typename T>
void check_gemm(int M, int N, int K, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<T> A(static_cast<size_t>(M) * K), B(static_cast<size_t>(K) * N);
  for (T& x : A) x = from_f<T>(u(rng));
  for (T& x : B) x = from_f<T>(u(rng));
  std::vector<float> C(static_cast<size_t>(M) * N, -12345.0f);
  gemm_tile_launch<T>(A.data(), B.data(), C.data(), M, N, K, nullptr);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double want = 0, scale = 0;
      for (int k = 0; k < K; ++k) {
        const double p = static_cast<double>(to_f(A[static_cast<size_t>(m) * K + k])) * to_f(B[static_cast<size_t>(k) * N + n]);
        want += p;
        scale += std::fabs(p);
      }
      const double got = C[static_cast<size_t>(m) * N + n];
      // f32 accumulation across k-steps of 16: a few f32 roundings of partial sums.
      CHECK_MSG(std::fabs(got - want) <= 1e-5 * (1.0 + scale),
                "C[" + std::to_string(m) + "][" + std::to_string(n) + "] = " + std::to_string(got) + ", want " +
                    std::to_string(want));
    }
}

SIMT_TEST(gemm_tile_f16) {
  check_gemm<__half>(100, 72, 88, 1);
  check_gemm<__half>(64, 64, 32, 2);
  check_gemm<__half>(1, 8, 8, 3);
}

SIMT_TEST(gemm_tile_bf16) {
  check_gemm<__nv_bfloat16>(100, 72, 88, 4);
  check_gemm<__nv_bfloat16>(130, 136, 40, 5);
}

// Emulator speed on the sample kernel, launch only (the CPU reference is not timed).
SIMT_TEST(gemm_tile_throughput) {
  const int M = 128, N = 128, K = 256;
  std::vector<__half> A(M * K, from_f<__half>(0.5f)), B(K * N, from_f<__half>(0.25f));
  std::vector<float> C(M * N);
  const auto t0 = std::chrono::steady_clock::now();
  gemm_tile_launch<__half>(A.data(), B.data(), C.data(), M, N, K, nullptr);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (float c : C) CHECK(c == 0.125f * K);
  const long long mmas = (N / 64) * (M / 64) * (K / 32) * 4 * 2 * 8;
  simt_test::note("warp_mmas", std::to_string(mmas));
  simt_test::note("warp_mmas_per_second", std::to_string(static_cast<long long>(mmas / s)));
}

}  // namespace

SIMT_TEST_MAIN
