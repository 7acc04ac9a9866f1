// Checks shared by the attention kernel test programs (fmha_test.cc, ../../block_sparse/tests/
// blockSparse_test.cc): element conversions, inputs already representable in the element type, the
// worst error of a tensor and the FlashAttention 2 rule that judges it, case names from table names.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../../cuda_compat.cuh"

namespace attn_check {

inline float to_f(__half x) { return __half2float(x); }
inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
T from_f(float f);
template <>
inline __half from_f<__half>(float f) {
  return __float2half_rn(f);
}
template <>
inline __nv_bfloat16 from_f<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}
template <typename T>
double round_t(double x) {
  return to_f(from_f<T>(static_cast<float>(x)));
}

// Random values already representable in T, as T and as double.
template <typename T>
void fill(simt_test::Buffer<T>& t, std::vector<double>& d, size_t n, double amp, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(-amp, amp);
  t.resize(n);
  d.resize(n);
  for (size_t i = 0; i < n; ++i) {
    t[i] = from_f<T>(static_cast<float>(u(rng)));
    d[i] = to_f(t[i]);
  }
}

// Largest |a - b| and largest |b| of a tensor; NaN anywhere counts as infinite error.
struct Err {
  double err = 0, mag = 0;
  void add(double got, double want) {
    const double e = std::fabs(got - want);
    err = std::isnan(e) ? std::numeric_limits<double>::infinity() : std::max(err, e);
    mag = std::max(mag, std::fabs(want));
  }
};

inline void judge(const std::string& tensor, const std::string& where, const Err& kernel, const Err& naive, double factor) {
  // The floor covers exact cases (a one-token row reproduces v; a gradient that vanishes in exact
  // arithmetic), where the naive error is 0 and float32 sums still leave ~1e-7.
  const double bound = factor * naive.err + 1e-5 * std::max(kernel.mag, 1.0);
  simt_test::record_error(tensor, kernel.err, naive.err);
  char msg[512];
  std::snprintf(msg, sizeof msg, "%s: %s error %.3g exceeds %.3g (naive low-precision error %.3g, max |ref| %.3g)",
                where.c_str(), tensor.c_str(), kernel.err, bound, naive.err, kernel.mag);
  CHECK_MSG(kernel.err <= bound, msg);
}

// "fmha fwd dense f16 d64" -> "fmha_fwd_dense_f16_d64"
inline std::string case_name(const char* entry) {
  std::string s(entry);
  for (char& c : s)
    if (c == ' ') c = '_';
  return s;
}

}  // namespace attn_check
