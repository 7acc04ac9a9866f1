// Every attention-merge CUDA kernel of this build (the dispatch table generated from
// native/cuda/instantiations.json; merge.cuh) under the SIMT emulator against a
// float64 reference written from the semantics (docs/merge.md): odd row counts and value dims (tails
// of the 32-lane loop and of the 4-row blocks), 1 to kMaxParts parts, parts with lse = -inf on some
// rows, rows where every part is -inf, with and without dLse; float32, float16, bfloat16. Outputs
// start as NaN, so an element a kernel fails to write is an error. One case per table entry and
// direction (`merge_<dir>_<dtype>`, as test/simt-families.ts names them), plus the dispatch errors.
// The same source compiles with nvcc as a real GPU program (scripts/gpu-check-kernels.sh): what the
// kernels touch is a simt_test::Buffer, and simt_test::sync() follows the launches.
//
// Accuracy rule (as for every kernel here): the error against float64 is at most 2x that of a naive
// implementation in the same dtype (the formula in float32, rounded to the dtype at the end), plus a
// small floor.
#include <cmath>
#include <cstdio>
#include <limits>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../dispatch.h"

namespace {

using namespace attnkit;
using namespace attnkit::cuda::merge;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Storage and exact rounding of one element type on the host: the kernels' own conversions.
template <typename E>
struct Host {
  using S = typename E::Storage;
  static S from(double x) {
    S s;
    E::store(&s, 0, float(x));
    return s;
  }
  static double to(S s) { return E::load(&s, 0); }
  static const char* name() { return E::kDType == DType::Float32 ? "f32" : E::kDType == DType::Float16 ? "f16" : "bf16"; }
};

struct Shape {
  int64_t rows, dv;
  int parts;
  bool dlse;
};
const Shape kShapes[] = {
    {1, 1, 1, false},  {5, 7, 2, true},   {37, 33, 3, false}, {129, 64, 2, true},
    {6, 100, 16, true}, {3, 1024, 4, false}, {64, 32, 5, true},
};

// Reference in float64: lse = log sum exp lse_i; out = sum w_i out_i; backward as in merge.cuh.
struct Ref {
  std::vector<double> out, lse, dlse;
  std::vector<std::vector<double>> douts, dlses;
};
Ref reference(const Shape& s, const std::vector<std::vector<double>>& outs, const std::vector<std::vector<double>>& lses,
              const std::vector<double>& dout, const std::vector<double>* dl) {
  Ref r;
  r.out.assign(s.rows * s.dv, 0.0);
  r.lse.assign(s.rows, -kInf);
  r.douts.assign(s.parts, std::vector<double>(s.rows * s.dv, 0.0));
  r.dlses.assign(s.parts, std::vector<double>(s.rows, 0.0));
  for (int64_t i = 0; i < s.rows; ++i) {
    double mx = -kInf;
    for (int p = 0; p < s.parts; ++p) mx = std::max(mx, lses[p][i]);
    if (mx == -kInf) continue;
    double total = 0;
    for (int p = 0; p < s.parts; ++p) total += std::exp(lses[p][i] - mx);
    const double lse = mx + std::log(total);
    r.lse[i] = lse;
    for (int p = 0; p < s.parts; ++p) {
      const double w = std::exp(lses[p][i] - lse);
      for (int64_t e = 0; e < s.dv; ++e) r.out[i * s.dv + e] += w * outs[p][i * s.dv + e];
    }
    for (int p = 0; p < s.parts; ++p) {
      const double w = lses[p][i] == -kInf ? 0.0 : std::exp(lses[p][i] - lse);
      double dot = 0;
      for (int64_t e = 0; e < s.dv; ++e) {
        r.douts[p][i * s.dv + e] = w * dout[i * s.dv + e];
        dot += dout[i * s.dv + e] * (outs[p][i * s.dv + e] - r.out[i * s.dv + e]);
      }
      r.dlses[p][i] = w * (dot + (dl ? (*dl)[i] : 0.0));
    }
  }
  return r;
}

double max_err(const std::vector<double>& got, const std::vector<double>& want) {
  double m = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return kInf;  // unwritten (NaN-filled) or wrong
    if (got[i] == want[i]) continue;      // equal infinities included
    m = std::max(m, std::fabs(got[i] - want[i]));
  }
  return m;
}

// Notes for the driver: no added shapes, and per tensor the worst error and ratio (harness.h).
void flush_notes() {
  simt_test::note("driver_shapes", "0");  // the driver adds no shapes for this family
  simt_test::flush_error_notes();
}

template <typename E>
void run_case(const Shape& s, uint32_t seed, bool backward) {
  const Entry& entry = select(E::kDType, s.parts, backward, "mergeAttention");
  using H = Host<E>;
  using S = typename H::S;
  std::mt19937 gen(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t n = s.rows * s.dv;
  // Inputs rounded to the dtype first: the reference sees exactly what the kernel sees.
  std::vector<simt_test::Buffer<S>> outs(s.parts, simt_test::Buffer<S>(n));
  std::vector<simt_test::Buffer<float>> lses(s.parts, simt_test::Buffer<float>(s.rows));
  std::vector<std::vector<double>> outs64(s.parts, std::vector<double>(n)), lses64(s.parts, std::vector<double>(s.rows));
  for (int p = 0; p < s.parts; ++p) {
    for (int64_t i = 0; i < n; ++i) outs64[p][i] = H::to(outs[p][i] = H::from(normal(gen)));
    for (int64_t i = 0; i < s.rows; ++i) {
      // Row 0 sees nothing in any part; every third row misses part 0; otherwise LSEs spread over ~8.
      float l = float(3.0 * normal(gen));
      if (i == 0 && s.rows > 1) l = -INFINITY;
      if (p == 0 && i % 3 == 1) l = -INFINITY;
      lses64[p][i] = lses[p][i] = l;
    }
  }
  simt_test::Buffer<S> dout(n);
  std::vector<double> dout64(n);
  for (int64_t i = 0; i < n; ++i) dout64[i] = H::to(dout[i] = H::from(normal(gen)));
  simt_test::Buffer<float> dl(s.rows);
  std::vector<double> dl64(s.rows);
  for (int64_t i = 0; i < s.rows; ++i) dl64[i] = dl[i] = float(normal(gen));

  const S nan = H::from(std::nan(""));
  simt_test::Buffer<S> out(n, nan);
  simt_test::Buffer<float> lse(s.rows, NAN);
  FwdArgs f{};
  for (int p = 0; p < s.parts; ++p) {
    f.outs[p] = outs[p].data();
    f.lses[p] = lses[p].data();
  }
  f.parts = s.parts;
  f.rows = s.rows;
  f.dv = s.dv;
  f.out = out.data();
  f.lse = lse.data();
  // the backward's case runs the forward it differentiates with the dtype's forward entry
  (backward ? select(E::kDType, s.parts, false, "mergeAttention") : entry).fwd(f, nullptr);
  simt_test::sync();

  std::vector<simt_test::Buffer<S>> douts(s.parts, simt_test::Buffer<S>(n, nan));
  std::vector<simt_test::Buffer<float>> dlses(s.parts, simt_test::Buffer<float>(s.rows, NAN));
  BwdArgs b{};
  for (int p = 0; p < s.parts; ++p) {
    b.outs[p] = outs[p].data();
    b.lses[p] = lses[p].data();
    b.douts[p] = douts[p].data();
    b.dlses[p] = dlses[p].data();
  }
  b.parts = s.parts;
  b.rows = s.rows;
  b.dv = s.dv;
  b.out = out.data();
  b.lse = lse.data();
  b.dout = dout.data();
  b.dlse = s.dlse ? dl.data() : nullptr;
  if (backward) {
    entry.bwd(b, nullptr);
    simt_test::sync();
  }

  // The backward's reference takes the kernel's own merged output (its input), rounded as stored.
  std::vector<double> out64(n), lse64(s.rows);
  for (int64_t i = 0; i < n; ++i) out64[i] = H::to(out[i]);
  for (int64_t i = 0; i < s.rows; ++i) lse64[i] = lse[i];
  const Ref ref = reference(s, outs64, lses64, dout64, s.dlse ? &dl64 : nullptr);

  // The naive error: the reference's values rounded to the dtype (what a float32 formula stored in
  // the dtype at best achieves), with one float32 rounding of the LSE.
  auto naive_err = [](const std::vector<double>& want, bool to_dtype) {
    double m = 0;
    for (double x : want) {
      if (!std::isfinite(x)) continue;
      const double r = to_dtype ? H::to(H::from(x)) : double(float(x));
      m = std::max(m, std::fabs(r - x));
    }
    return m;
  };
  auto check = [&](const char* what, const std::vector<double>& got, const std::vector<double>& want, bool to_dtype) {
    double scale = 1;
    for (double x : want)
      if (std::isfinite(x)) scale = std::max(scale, std::fabs(x));
    const double err = max_err(got, want), naive = naive_err(want, to_dtype);
    const double bound = 2 * naive + 4e-6 * scale;
    simt_test::record_error(what, err, naive);
    char msg[256];
    std::snprintf(msg, sizeof msg, "%s %s rows=%lld dv=%lld parts=%d: error %.3g > bound %.3g (naive %.3g)", H::name(),
                  what, (long long)s.rows, (long long)s.dv, s.parts, err, bound, naive);
    CHECK_MSG(err <= bound, msg);
  };
  check("out", out64, ref.out, true);
  check("lse", lse64, ref.lse, false);
  // Rows with no key anywhere: exactly 0 / -inf, zero gradients.
  if (s.rows > 1) {
    CHECK_MSG(lse[0] == -INFINITY, "a row no part saw must merge to lse -inf");
    for (int64_t e = 0; e < s.dv; ++e) CHECK_MSG(H::to(out[e]) == 0.0, "a row no part saw must merge to 0");
  }
  // The gradients against the reference evaluated at the kernel's own forward output.
  const Ref at = [&] {
    Ref r = ref;
    for (int64_t i = 0; i < s.rows; ++i) {
      if (lse64[i] == -kInf) continue;
      for (int p = 0; p < s.parts; ++p) {
        const double w = lses64[p][i] == -kInf ? 0.0 : std::exp(lses64[p][i] - lse64[i]);
        double dot = 0;
        for (int64_t e = 0; e < s.dv; ++e) {
          r.douts[p][i * s.dv + e] = w * dout64[i * s.dv + e];
          dot += dout64[i * s.dv + e] * (outs64[p][i * s.dv + e] - out64[i * s.dv + e]);
        }
        r.dlses[p][i] = w * (dot + (s.dlse ? dl64[i] : 0.0));
      }
    }
    return r;
  }();
  if (!backward) return;
  for (int p = 0; p < s.parts; ++p) {
    std::vector<double> g(n), gl(s.rows);
    for (int64_t i = 0; i < n; ++i) g[i] = H::to(douts[p][i]);
    for (int64_t i = 0; i < s.rows; ++i) gl[i] = dlses[p][i];
    check("dout", g, at.douts[p], true);
    check("dlse", gl, at.dlses[p], false);
    if (s.rows > 1) CHECK_MSG(gl[0] == 0.0, "a row no part saw has zero LSE gradients");
  }
}

template <typename E>
void run_all(bool backward) {
  uint32_t seed = 11;
  for (const Shape& s : kShapes) run_case<E>(s, seed++, backward);
  flush_notes();
}

}  // namespace

// One case per table entry and direction this build compiled: merge_<fwd|bwd>_<dtype>.
template <typename E, bool Backward>
void entry_case() {
  run_all<E>(Backward);
}
template <typename E>
void register_dtype(std::deque<std::string>& names) {
  for (const Entry* e = Table::entries; e != Table::entries + Table::count; ++e) {
    if (e->dtype != E::kDType) continue;
    if (e->fwd) {
      names.push_back(std::string("merge_fwd_") + Host<E>::name());
      simt_test::cases().push_back({names.back().c_str(), &entry_case<E, false>});
    }
    if (e->bwd) {
      names.push_back(std::string("merge_bwd_") + Host<E>::name());
      simt_test::cases().push_back({names.back().c_str(), &entry_case<E, true>});
    }
  }
}
const bool registered = [] {
  static std::deque<std::string> names;
  register_dtype<F32>(names);
  register_dtype<F16>(names);
  register_dtype<BF16>(names);
  return true;
}();

SIMT_TEST(merge_dispatch_errors) {
  auto refused = [](DType t, int parts, const char* part) {
    try {
      select(t, parts, false, "mergeAttention");
    } catch (const Error& e) {
      CHECK_MSG(e.code() == "UNSUPPORTED" && std::string(e.what()).find(part) != std::string::npos, e.what());
      return;
    }
    CHECK_MSG(false, "expected UNSUPPORTED");
  };
  refused(DType::Float32, 0, "1 to 16");
  refused(DType::Float32, kMaxParts + 1, "1 to 16");
  refused(DType::Int32, 2, "dtype int32 is not compiled into this build (compiled: float32, float16, bfloat16)");
  CHECK(select(DType::BFloat16, kMaxParts, true, "mergeAttention").dtype == DType::BFloat16);
}

SIMT_TEST_MAIN
