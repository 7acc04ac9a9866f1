// The CUDA linear-attention forward (version 0, ../fwd.cuh) under the SIMT emulator against a float64
// reference written from docs/linear.md (the token-by-token recurrence, independent of the chunk
// algebra): lengths 1, 63, 64, 65 and 150 (chunk tails), decay 1 and < 1, gates near 0, ordinary
// and about -30, GQA, the feature maps, normalize, an initial state or none; float32, float16,
// bfloat16. Outputs start as NaN, so an element the kernel fails to write is an error. Run by
// test/linear-cuda.test.ts in every thread order, and under AddressSanitizer.
//
// Accuracy rule: the kernel computes in float32 from the stored inputs, so its error against
// float64 is at most 2x the rounding of the float64 result to the dtype (the final store), plus
// 2e-5 max(|ref|, 1) for the float32 accumulations (the states: that floor only).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../fwd.cuh"

namespace {

using namespace attnkit;
using namespace attnkit::cuda;

struct Case {
  int64_t B, N, H, Hkv, D, Dv;
  double decay;        // every head (head 1 gets decay^2 when H > 1)
  double gate_scale;   // 0: no gate; else g = -scale * u, u uniform in [0.01, 2]
  FeatureMap fm;
  bool normalize, init;
};

const Case kCases[] = {
    {1, 1, 1, 1, 8, 8, 1.0, 0.0, FeatureMap::Identity, false, false},
    {2, 63, 2, 1, 16, 12, 0.99, 0.2, FeatureMap::Elu1, true, true},
    {1, 64, 2, 2, 32, 32, 1.0, 1e-3, FeatureMap::Relu, false, true},
    {1, 65, 2, 1, 33, 20, 0.9, 30.0, FeatureMap::Identity, false, true},
    {1, 150, 1, 1, 16, 16, 1.0, 0.05, FeatureMap::Elu1, true, false},
    {1, 130, 2, 2, 64, 64, 0.95, 0.0, FeatureMap::Identity, false, true},
};

double phi(FeatureMap f, double x) {
  if (f == FeatureMap::Elu1) return x > 0 ? x + 1 : std::exp(x);
  if (f == FeatureMap::Relu) return x > 0 ? x : 0;
  return x;
}

// x rounded to the element type E, the kernels' own conversion (what they read or store)
template <typename E>
double rounded(double x) {
  typename E::Storage s;
  E::store(&s, 0, float(x));
  return E::load(&s, 0);
}

template <typename E>
void run(const Case& c, uint32_t seed) {
  using S = typename E::Storage;
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unif(0.01, 2.0);
  const int64_t Ds = c.Dv + (c.normalize ? 1 : 0), group = c.H / c.Hkv;
  const double scale = 1.0 / std::sqrt(double(c.D));
  auto fill = [&](simt_test::Buffer<S>& buf, std::vector<double>& x64) {
    for (size_t i = 0; i < buf.size(); ++i) {
      E::store(buf.data(), int64_t(i), float(normal(gen)));
      x64[i] = E::load(buf.data(), int64_t(i));
    }
  };
  simt_test::Buffer<S> q(c.B * c.N * c.H * c.D), k(c.B * c.N * c.Hkv * c.D), v(c.B * c.N * c.Hkv * c.Dv);
  std::vector<double> q64(q.size()), k64(k.size()), v64(v.size());
  fill(q, q64);
  fill(k, k64);
  fill(v, v64);
  simt_test::Buffer<float> gate(c.gate_scale > 0 ? c.B * c.N * c.H : 0);
  for (size_t i = 0; i < gate.size(); ++i) gate[i] = float(-c.gate_scale * unif(gen));
  simt_test::Buffer<float> s0(c.init ? c.B * c.H * c.D * Ds : 0);
  for (size_t i = 0; i < s0.size(); ++i)
    s0[i] = float(c.normalize && int64_t(i % Ds) == c.Dv ? std::fabs(normal(gen)) + 0.5 : normal(gen));
  simt_test::Buffer<double> log_decay(c.H);
  for (int64_t h = 0; h < c.H; ++h) log_decay[h] = std::log(h == 1 ? c.decay * c.decay : c.decay);

  simt_test::Buffer<S> out(c.B * c.N * c.H * c.Dv);
  for (size_t i = 0; i < out.size(); ++i) E::store(out.data(), int64_t(i), NAN);
  simt_test::Buffer<float> sT(c.B * c.H * c.D * Ds, NAN);
  linear::FwdArgs a;
  a.shape = LinearShape{c.B, c.N, c.H, c.Hkv, c.D, c.Dv, c.normalize};
  a.feature_map = c.fm;
  a.scale = float(scale);
  a.log_decay = log_decay.data();
  a.gate = gate.size() ? gate.data() : nullptr;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.state_in = s0.size() ? s0.data() : nullptr;
  a.out = out.data();
  a.state_out = sT.data();
  linear::launch_fwd<E>(a, nullptr);
  simt_test::sync();

  // float64 reference: S_t = a_t S_{t-1} + phi(k_t) [v_t, 1]^T, o_t = scale phi(q_t)^T S_t
  std::vector<double> ref(out.size()), refS(sT.size());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h) {
      const int64_t bh = b * c.H + h, hk = h / group;
      std::vector<double> St(c.D * Ds, 0.0);
      if (c.init)
        for (int64_t i = 0; i < c.D * Ds; ++i) St[i] = s0[bh * c.D * Ds + i];
      for (int64_t t = 0; t < c.N; ++t) {
        const double at = std::exp(log_decay[h] + (gate.size() ? double(gate[(b * c.N + t) * c.H + h]) : 0.0));
        for (int64_t d = 0; d < c.D; ++d) {
          const double kd = phi(c.fm, k64[((b * c.N + t) * c.Hkv + hk) * c.D + d]);
          for (int64_t e = 0; e < Ds; ++e) {
            const double ve = e < c.Dv ? v64[((b * c.N + t) * c.Hkv + hk) * c.Dv + e] : 1.0;
            St[d * Ds + e] = at * St[d * Ds + e] + kd * ve;
          }
        }
        std::vector<double> o(Ds, 0.0);
        for (int64_t d = 0; d < c.D; ++d) {
          const double qd = scale * phi(c.fm, q64[((b * c.N + t) * c.H + h) * c.D + d]);
          for (int64_t e = 0; e < Ds; ++e) o[e] += qd * St[d * Ds + e];
        }
        for (int64_t e = 0; e < c.Dv; ++e)
          ref[((b * c.N + t) * c.H + h) * c.Dv + e] = c.normalize ? o[e] / (o[c.Dv] + 1e-6) : o[e];
      }
      for (int64_t i = 0; i < c.D * Ds; ++i) refS[bh * c.D * Ds + i] = St[i];
    }

  auto check = [&](const char* what, auto& got, const std::vector<double>& want, bool to_dtype) {
    double scale_ = 1, err = 0, naive = 0;
    for (double x : want) scale_ = std::max(scale_, std::fabs(x));
    for (size_t i = 0; i < want.size(); ++i) {
      double gi;
      if constexpr (std::is_same_v<std::decay_t<decltype(got[0])>, float>) gi = got[i];
      else gi = E::load(got.data(), int64_t(i));
      const double d = std::fabs(gi - want[i]);
      err = std::isfinite(d) ? std::max(err, d) : INFINITY;
      if (to_dtype) naive = std::max(naive, std::fabs(rounded<E>(want[i]) - want[i]));
    }
    const double bound = 2 * naive + 2e-5 * scale_;
    simt_test::record_error(what, err, naive);
    char msg[200];
    std::snprintf(msg, sizeof msg, "%s: max error %.3g > bound %.3g (naive %.3g)", what, err, bound, naive);
    CHECK_MSG(err <= bound, msg);
  };
  check("out", out, ref, true);
  check("finalState", sT, refS, false);
}

template <typename E>
void run_all() {
  uint32_t seed = 1;
  for (const Case& c : kCases) run<E>(c, seed++);
  simt_test::flush_error_notes();
}

SIMT_TEST(linear_fwd_f32) { run_all<merge::F32>(); }
SIMT_TEST(linear_fwd_f16) { run_all<merge::F16>(); }
SIMT_TEST(linear_fwd_bf16) { run_all<merge::BF16>(); }

}  // namespace

SIMT_TEST_MAIN
