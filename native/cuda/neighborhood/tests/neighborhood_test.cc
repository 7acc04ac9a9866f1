// Every neighborhood-attention CUDA kernel of this build (the fused attention kernels of ../fmha/ with
// NeighborhoodMask<R>, the tables generated from native/cuda/instantiations.json) under the SIMT
// emulator against a float64 reference written from the semantics of docs/neighborhood.md (the
// per-axis window arithmetic below, not the policy's): 1-D, 2-D and 3-D; odd extents and extents
// that are not multiples of the tile or of the dilation; kernel = extent; stride > 1 and stride =
// kernel; dilation > 1 (several groups in grid z); causal on some axes only; GQA; B = 2; several tile
// shapes per rank; dLSE. Outputs start as NaN, so anything a kernel fails to write is an error. One
// case per table entry (`neighborhood_<dir>_na<R>_<dtype>_d<D>`, as test/simt-families.ts names
// them), plus the dispatch errors and the bitwise determinism of the backward. The same source
// compiles with nvcc as a real GPU program (scripts/gpu-check-kernels.sh).
//
// Accuracy criterion (FlashAttention 2's, as for the dense kernels): per tensor, the kernel's max
// error against float64 is at most 2x (3x for gradients) that of a naive low-precision
// implementation (P and dS rounded to the dtype before their products, outputs rounded, LSE in
// float32), plus 1e-5 max(|ref|, 1).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../../fmha/tests/checks.h"
#include "../dispatch.h"

namespace {

using namespace attnkit;
using namespace attnkit::cuda;
using neighborhood::Tab;

constexpr double kInf = std::numeric_limits<double>::infinity();

// element conversions and inputs representable in T: the attention test programs' shared checks
using attn_check::fill;
using attn_check::from_f;
using attn_check::round_t;
using attn_check::to_f;

struct Case {
  int64_t size[3], kernel[3], stride[3], dilation[3];
  bool causal[3];
  int64_t tile[3];
  int64_t B, H, Hkv;
  bool dlse;
  const char* what;
};

// Per rank: small problems (a few tile pairs each) that together hit every boundary the issue lists.
// The D = 32 entries of both dtypes run all of them; the other head dims (whose kernels differ in the
// swizzle, the dK/dV query step and the register budget, not in the mask code) run the first, which
// has a tail on every axis, a causal axis, a stride > 1 and GQA or dLSE: that keeps the family's
// emulator time (every case in three thread orders and under ASan) near the 90 s CI allows.
const std::vector<Case>& all_cases(int rank) {
  static const std::vector<Case> r1 = {
      {{17}, {5}, {1}, {1}, {false}, {64}, 1, 2, 1, false, "17 tokens k5, GQA 2:1"},
      {{130}, {9}, {3}, {1}, {false}, {64}, 1, 1, 1, true, "130 tokens k9 stride 3: three tiles, a tail of 2"},
      {{75}, {5}, {2}, {2}, {true}, {64}, 2, 1, 1, false, "75 tokens causal k5 s2 dilation 2 (75 % 2 = 1), B = 2"},
      {{20}, {20}, {1}, {1}, {false}, {64}, 1, 1, 1, true, "kernel = extent 20"},
      {{71}, {7}, {7}, {3}, {true}, {64}, 1, 2, 2, false, "71 tokens causal, stride = kernel 7, dilation 3"},
  };
  static const std::vector<Case> r2 = {
      {{13, 17}, {3, 5}, {1, 2}, {1, 1}, {false, true}, {8, 8}, 1, 2, 1, true,
       "13x17 k(3,5) s(1,2), causal on Y only, 8x8 tiles, GQA 2:1"},
      {{9, 10}, {3, 3}, {2, 1}, {2, 3}, {true, false}, {4, 16}, 1, 1, 1, false,
       "9x10 dilation (2,3) (9 % 2, 10 % 3 = 1), causal on X only, 4x16 tiles"},
      {{6, 7}, {6, 7}, {6, 1}, {1, 1}, {false, false}, {2, 32}, 2, 1, 1, true,
       "6x7 kernel = extent, stride = kernel on X, 2x32 tiles, B = 2"},
  };
  static const std::vector<Case> r3 = {
      {{5, 7, 9}, {3, 3, 5}, {1, 2, 1}, {1, 1, 1}, {true, false, false}, {4, 4, 4}, 1, 2, 2, false,
       "5x7x9 k(3,3,5) s(1,2,1), causal in time, 4x4x4 tiles"},
      {{6, 5, 7}, {2, 2, 3}, {1, 1, 2}, {2, 2, 2}, {false, true, false}, {2, 4, 8}, 1, 2, 1, true,
       "6x5x7 dilation 2 everywhere (8 groups), even kernels, causal on Y, 2x4x8 tiles, GQA"},
      {{4, 4, 8}, {4, 2, 4}, {4, 2, 4}, {1, 1, 1}, {false, false, true}, {1, 8, 8}, 1, 1, 1, false,
       "4x4x8 stride = kernel (blocked), kernel = extent on X, causal on Z, 1x8x8 tiles"},
  };
  return rank == 1 ? r1 : rank == 2 ? r2 : r3;
}
std::vector<Case> cases_of(int rank, int head_dim) {
  const std::vector<Case>& all = all_cases(rank);
  return head_dim == 32 ? all : std::vector<Case>(all.begin(), all.begin() + 1);
}

NeighborhoodOptions options(const Case& c, int rank) {
  NeighborhoodOptions o;
  o.rank = rank;
  for (int a = 0; a < rank; ++a) {
    o.size[a] = c.size[a];
    o.kernel[a] = c.kernel[a];
    o.stride[a] = c.stride[a];
    o.dilation[a] = c.dilation[a];
    o.causal[a] = c.causal[a];
    o.tile[a] = c.tile[a];
  }
  return o;
}

// ---- the reference, from docs/neighborhood.md ("Semantics"), per axis then as dense attention.

// Whether key token y is in query token x's window on an axis of length L (in-group indices).
bool axis_visible(int64_t L, int64_t k, int64_t s, int64_t d, bool causal, int64_t x, int64_t y) {
  if (x % d != y % d) return false;  // dilation groups
  const int64_t g = x % d, i = x / d, j = y / d, Lg = (L - g + d - 1) / d;
  int64_t start, end;
  if (causal) {
    const int64_t leader = std::min((i / s) * s + s - 1, Lg - 1);
    start = std::max<int64_t>(leader - k + 1, 0);
    end = i + 1;
  } else {
    const int64_t leader = std::min((i / s) * s + s / 2, Lg - 1);
    start = std::min(std::max<int64_t>(leader - k / 2, 0), Lg - k);
    end = start + k;
  }
  return j >= start && j < end;
}

struct Problem {
  int rank;
  int64_t N, B, H, Hkv, D;
  double scale;
  std::vector<char> vis;  // [N][N]: query token x sees key token y
  int64_t at(int64_t b, int64_t n, int64_t h, int64_t heads) const { return ((b * N + n) * heads + h) * D; }
};

Problem problem(const Case& c, int rank, int64_t D) {
  Problem p{rank, 1, c.B, c.H, c.Hkv, D, 1.0 / std::sqrt(static_cast<double>(D)), {}};
  for (int a = 0; a < rank; ++a) p.N *= c.size[a];
  p.vis.assign(static_cast<size_t>(p.N * p.N), 0);
  for (int64_t x = 0; x < p.N; ++x)
    for (int64_t y = 0; y < p.N; ++y) {
      bool v = true;
      for (int64_t a = rank - 1, rx = x, ry = y; a >= 0; --a) {  // row-major, the last axis fastest
        v = v && axis_visible(c.size[a], c.kernel[a], c.stride[a], c.dilation[a], c.causal[a], rx % c.size[a], ry % c.size[a]);
        rx /= c.size[a];
        ry /= c.size[a];
      }
      p.vis[static_cast<size_t>(x * p.N + y)] = v;
    }
  return p;
}

// Float64 results and the naive low-precision ones, of the forward or the backward.
struct Sums {
  std::vector<double> out, lse, dq, dk, dv;
};

// Forward: exact (T = void: no rounding) or naive in T (P rounded before P.V, LSE in float32).
template <typename T>
Sums forward_ref(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                 const std::vector<double>& v, bool naive) {
  Sums r;
  r.out.assign(static_cast<size_t>(p.B * p.N * p.H * p.D), 0.0);
  r.lse.assign(static_cast<size_t>(p.B * p.N * p.H), -kInf);
  std::vector<double> s(static_cast<size_t>(p.N));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t x = 0; x < p.N; ++x) {
        const int64_t hk = h / (p.H / p.Hkv), qi = p.at(b, x, h, p.H);
        double mx = -kInf;
        for (int64_t y = 0; y < p.N; ++y) {
          if (!p.vis[x * p.N + y]) continue;
          double dot = 0;
          for (int64_t d = 0; d < p.D; ++d) dot += q[qi + d] * k[p.at(b, y, hk, p.Hkv) + d];
          s[y] = naive ? static_cast<double>(static_cast<float>(dot) * static_cast<float>(p.scale)) : p.scale * dot;
          mx = std::max(mx, s[y]);
        }
        double sum = 0;
        for (int64_t y = 0; y < p.N; ++y)
          if (p.vis[x * p.N + y]) sum += naive ? static_cast<double>(std::exp(static_cast<float>(s[y] - mx))) : std::exp(s[y] - mx);
        const double lse = naive ? static_cast<double>(static_cast<float>(mx) + std::log(static_cast<float>(sum))) : mx + std::log(sum);
        r.lse[(b * p.N + x) * p.H + h] = lse;
        for (int64_t y = 0; y < p.N; ++y) {
          if (!p.vis[x * p.N + y]) continue;
          const double w = naive ? round_t<T>(std::exp(s[y] - lse)) : std::exp(s[y] - lse);
          for (int64_t d = 0; d < p.D; ++d) r.out[qi + d] += w * v[p.at(b, y, hk, p.Hkv) + d];
        }
      }
  return r;
}

// Backward given the caller's out (rounded to T) and float32 LSE; naive rounds P and dS to T.
template <typename T>
Sums backward_ref(const Problem& p, const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v, const std::vector<double>& out, const std::vector<double>& lse,
                  const std::vector<double>& dout, const std::vector<double>& dlse, bool naive) {
  Sums g;
  g.dq.assign(q.size(), 0.0);
  g.dk.assign(k.size(), 0.0);
  g.dv.assign(v.size(), 0.0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t x = 0; x < p.N; ++x) {
        const int64_t hk = h / (p.H / p.Hkv), qi = p.at(b, x, h, p.H), li = (b * p.N + x) * p.H + h;
        double delta = 0;
        for (int64_t d = 0; d < p.D; ++d) delta += dout[qi + d] * out[qi + d];
        if (!dlse.empty()) delta -= dlse[li];
        for (int64_t y = 0; y < p.N; ++y) {
          if (!p.vis[x * p.N + y]) continue;
          const int64_t kj = p.at(b, y, hk, p.Hkv);
          double dot = 0, dp = 0;
          for (int64_t d = 0; d < p.D; ++d) {
            dot += q[qi + d] * k[kj + d];
            dp += dout[qi + d] * v[kj + d];
          }
          double P = std::exp(p.scale * dot - lse[li]), dS = P * (dp - delta);
          if (naive) {
            P = round_t<T>(P);
            dS = round_t<T>(dS);
          }
          for (int64_t d = 0; d < p.D; ++d) {
            g.dv[kj + d] += P * dout[qi + d];
            g.dq[qi + d] += p.scale * dS * k[kj + d];
            g.dk[kj + d] += p.scale * dS * q[qi + d];
          }
        }
      }
  return g;
}

// Per tensor: the kernel's max error against float64 within factor x the naive one (+ a floor).
template <typename Got>
void judge(const char* tensor, const std::string& where, const Got& got, const std::vector<double>& want,
           const std::vector<double>& naive, double factor, bool round_naive_to_t, double (*round)(double)) {
  double err = 0, nerr = 0, mag = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got(i)) - want[i]);
    err = std::isnan(e) ? kInf : std::max(err, e);
    nerr = std::max(nerr, std::fabs((round_naive_to_t ? round(naive[i]) : naive[i]) - want[i]));
    mag = std::max(mag, std::fabs(want[i]));
  }
  const double bound = factor * nerr + 1e-5 * std::max(mag, 1.0);
  simt_test::record_error(tensor, err, nerr);
  char msg[512];
  std::snprintf(msg, sizeof msg, "%s: %s error %.3g exceeds %.3g (naive low-precision error %.3g, max |ref| %.3g)",
                where.c_str(), tensor, err, bound, nerr, mag);
  CHECK_MSG(err <= bound, msg);
}

template <typename T>
struct Inputs {
  simt_test::Buffer<T> q, k, v;
  std::vector<double> qd, kd, vd;
  Inputs(const Problem& p, unsigned seed) {
    std::mt19937 rng(seed);
    fill(q, qd, static_cast<size_t>(p.B * p.N * p.H * p.D), 2.0, rng);
    fill(k, kd, static_cast<size_t>(p.B * p.N * p.Hkv * p.D), 2.0, rng);
    fill(v, vd, static_cast<size_t>(p.B * p.N * p.Hkv * p.D), 1.0, rng);
  }
};

template <typename T, int R>
void fwd_case(const fmha::FwdEntry<neighborhood::Mask<R>>& e, const Case& c, unsigned seed) {
  const Problem p = problem(c, R, e.head_dim);
  const NeighborhoodOptions o = options(c, R);
  Inputs<T> in(p, seed);
  simt_test::Buffer<T> out(static_cast<size_t>(p.B * p.N * p.H * p.D), from_f<T>(NAN));
  simt_test::Buffer<float> lse(static_cast<size_t>(p.B * p.N * p.H), NAN);
  AttentionFwdParams fp;
  fp.shape = {p.B, p.N, p.N, p.H, p.Hkv, p.D, p.D};
  fp.dtype = e.dtype;
  fp.q = in.q.data();
  fp.k = in.k.data();
  fp.v = in.v.data();
  fp.out = out.data();
  fp.lse = lse.data();
  fp.scale = static_cast<float>(p.scale);
  CHECK(&neighborhood::select_fwd<R>(fp, o) == &e);
  e.run(fmha::fwd_args(fp), neighborhood::make_mask<R>(o), nullptr);
  simt_test::sync();

  const Sums ref = forward_ref<T>(p, in.qd, in.kd, in.vd, false);
  const Sums naive = forward_ref<T>(p, in.qd, in.kd, in.vd, true);
  const std::string where = std::string(e.name) + ", " + c.what;
  judge("out", where, [&](size_t i) { return to_f(out[i]); }, ref.out, naive.out, 2.0, true, &round_t<T>);
  judge("lse", where, [&](size_t i) { return lse[i]; }, ref.lse, naive.lse, 2.0, false, &round_t<T>);
}

template <typename T>
struct Grads {
  simt_test::Buffer<T> dq, dk, dv;
};

// Runs the backward `runs` times into fresh NaN-filled gradients; returns them.
template <typename T, int R>
std::vector<Grads<T>> bwd_run(const fmha::BwdEntry<neighborhood::Mask<R>>& e, const Case& c, const Problem& p,
                              const Inputs<T>& in, const simt_test::Buffer<T>& out, const simt_test::Buffer<float>& lse,
                              const simt_test::Buffer<T>& dout, const simt_test::Buffer<float>* dlse, int runs) {
  const NeighborhoodOptions o = options(c, R);
  AttentionBwdParams bp;
  bp.shape = {p.B, p.N, p.N, p.H, p.Hkv, p.D, p.D};
  bp.dtype = e.dtype;
  bp.q = in.q.data();
  bp.k = in.k.data();
  bp.v = in.v.data();
  bp.out = out.data();
  bp.lse = lse.data();
  bp.dout = dout.data();
  bp.dlse = dlse ? dlse->data() : nullptr;
  bp.scale = static_cast<float>(p.scale);
  std::vector<Grads<T>> g(static_cast<size_t>(runs));
  for (Grads<T>& r : g) {
    r.dq.assign(in.q.size(), from_f<T>(NAN));
    r.dk.assign(in.k.size(), from_f<T>(NAN));
    r.dv.assign(in.v.size(), from_f<T>(NAN));
    bp.dq = r.dq.data();
    bp.dk = r.dk.data();
    bp.dv = r.dv.data();
    CHECK(&neighborhood::select_bwd<R>(bp, o) == &e);
    simt_test::Buffer<float> ws(static_cast<size_t>(fmha::bwd_workspace_floats(p.B, p.H, p.N)), NAN);
    fmha::run_bwd(e, fmha::bwd_args(bp, ws.data()), neighborhood::make_mask<R>(o), nullptr);
    simt_test::sync();
  }
  return g;
}

template <typename T, int R>
void bwd_case(const fmha::BwdEntry<neighborhood::Mask<R>>& e, const Case& c, unsigned seed, bool twice = false) {
  const Problem p = problem(c, R, e.head_dim);
  Inputs<T> in(p, seed);
  std::mt19937 rng(seed + 1000);
  simt_test::Buffer<T> dout;
  std::vector<double> dod, dlsed;
  fill(dout, dod, in.q.size(), 1.0, rng);
  simt_test::Buffer<float> dlse;
  if (c.dlse) {
    std::uniform_real_distribution<double> u(-0.5, 0.5);
    dlse.resize(static_cast<size_t>(p.B * p.N * p.H));
    for (float& x : dlse) x = static_cast<float>(u(rng));
    dlsed.assign(dlse.begin(), dlse.end());
  }
  // The forward's outputs as a caller holds them: out rounded to T, LSE in float32.
  const Sums f = forward_ref<T>(p, in.qd, in.kd, in.vd, false);
  simt_test::Buffer<T> out(f.out.size());
  std::vector<double> outd(f.out.size()), lsed(f.lse.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = from_f<T>(static_cast<float>(f.out[i]));
    outd[i] = to_f(out[i]);
  }
  simt_test::Buffer<float> lse(f.lse.size());
  for (size_t i = 0; i < lse.size(); ++i) lsed[i] = lse[i] = static_cast<float>(f.lse[i]);

  const auto g = bwd_run<T, R>(e, c, p, in, out, lse, dout, c.dlse ? &dlse : nullptr, twice ? 2 : 1);
  const std::string where = std::string(e.name) + ", " + c.what;
  if (twice) {
    CHECK_MSG(std::memcmp(g[0].dq.data(), g[1].dq.data(), g[0].dq.size() * sizeof(T)) == 0 &&
                  std::memcmp(g[0].dk.data(), g[1].dk.data(), g[0].dk.size() * sizeof(T)) == 0 &&
                  std::memcmp(g[0].dv.data(), g[1].dv.data(), g[0].dv.size() * sizeof(T)) == 0,
              where + ": two backward runs differ");
  }
  const Sums ref = backward_ref<T>(p, in.qd, in.kd, in.vd, f.out, f.lse, dod, dlsed, false);
  const Sums naive = backward_ref<T>(p, in.qd, in.kd, in.vd, outd, lsed, dod, dlsed, true);
  judge("dq", where, [&](size_t i) { return to_f(g[0].dq[i]); }, ref.dq, naive.dq, 3.0, true, &round_t<T>);
  judge("dk", where, [&](size_t i) { return to_f(g[0].dk[i]); }, ref.dk, naive.dk, 3.0, true, &round_t<T>);
  judge("dv", where, [&](size_t i) { return to_f(g[0].dv[i]); }, ref.dv, naive.dv, 3.0, true, &round_t<T>);
}

// ---- one registered case per table entry

template <int R, int I>
void fwd_entry() {
  const auto& e = Tab<R>::fwd[I];
  unsigned seed = 1;
  for (const Case& c : cases_of(R, e.head_dim)) {
    if (e.dtype == DType::Float16) fwd_case<__half, R>(e, c, seed++);
    else fwd_case<__nv_bfloat16, R>(e, c, seed++);
  }
  simt_test::note("driver_shapes", "0");  // the driver adds no shapes: the program's own cover the family
  simt_test::flush_error_notes();
}

template <int R, int I>
void bwd_entry() {
  const auto& e = Tab<R>::bwd[I];
  unsigned seed = 101;
  for (const Case& c : cases_of(R, e.head_dim)) {
    if (e.dtype == DType::Float16) bwd_case<__half, R>(e, c, seed++);
    else bwd_case<__nv_bfloat16, R>(e, c, seed++);
  }
  simt_test::note("driver_shapes", "0");
  simt_test::flush_error_notes();
}

std::string case_name(const char* entry) {
  std::string s(entry);
  for (char& ch : s)
    if (ch == ' ') ch = '_';
  return s;
}

template <int R, size_t... I, size_t... J>
bool register_rank(std::index_sequence<I...>, std::index_sequence<J...>) {
  static std::deque<std::string> names;
  ((names.push_back(case_name(Tab<R>::fwd[I].name)),
    simt_test::cases().push_back(simt_test::Case{names.back().c_str(), &fwd_entry<R, static_cast<int>(I)>})),
   ...);
  ((names.push_back(case_name(Tab<R>::bwd[J].name)),
    simt_test::cases().push_back(simt_test::Case{names.back().c_str(), &bwd_entry<R, static_cast<int>(J)>})),
   ...);
  return true;
}
template <int R>
bool register_rank() {
  return register_rank<R>(std::make_index_sequence<Tab<R>::fwd_count>{}, std::make_index_sequence<Tab<R>::bwd_count>{});
}
const bool registered = register_rank<1>() && register_rank<2>() && register_rank<3>();

// ---- dispatch and determinism

template <typename F>
void expect_error(F&& f, const char* code, const char* part) {
  try {
    f();
  } catch (const attnkit::Error& e) {
    CHECK_MSG(e.code() == code && std::string(e.what()).find(part) != std::string::npos && e.op() == "neighborhood",
              std::string("unexpected error ") + e.code() + ": " + e.what());
    std::printf("  (expected) %s: %s\n", e.code().c_str(), e.what());
    return;
  }
  simt_test::fail(__FILE__, __LINE__, std::string("expected attnkit::Error ") + code);
}

SIMT_TEST(dispatch_errors) {
  alignas(16) static uint16_t buf[64];
  AttentionFwdParams p;
  p.shape = {1, 64, 64, 1, 1, 64, 64};
  p.dtype = DType::Float16;
  p.q = p.k = p.v = buf;
  p.out = buf;
  NeighborhoodOptions o;
  o.rank = 2;
  o.size[0] = o.size[1] = 8;
  o.kernel[0] = o.kernel[1] = 3;
  o.tile[0] = o.tile[1] = 8;
  CHECK(neighborhood::select_fwd<2>(p, o).head_dim == 64);
  o.tile[0] = 4;
  expect_error([&] { neighborhood::select_fwd<2>(p, o); }, "UNSUPPORTED",
               "tile shape 4x8 is not compiled into this build (compiled for rank 2: 1x64, 2x32, 4x16, 8x8");
  o.tile[0] = 8;
  p.dtype = DType::Float32;
  expect_error([&] { neighborhood::select_fwd<2>(p, o); }, "UNSUPPORTED", "dtype float32 is not supported");
  p.dtype = DType::BFloat16;
  p.shape.D = p.shape.Dv = 48;
  expect_error([&] { neighborhood::select_fwd<2>(p, o); }, "UNSUPPORTED",
               "head dim 48 for bfloat16 and rank 2 is not compiled into this build (compiled: 32, 64, 128)");
  p.shape.D = 64;
  p.shape.Dv = 32;
  expect_error([&] { neighborhood::select_fwd<2>(p, o); }, "UNSUPPORTED", "value head dim 32 must equal");
  p.shape.Dv = 64;
  o.dilation[0] = o.dilation[1] = 256;
  p.shape.B = 2;
  expect_error([&] { neighborhood::select_fwd<2>(p, o); }, "UNSUPPORTED", "batch x dilation groups (131072)");
  o.dilation[0] = o.dilation[1] = 1;
  p.v = buf + 1;
  expect_error([&] { neighborhood::select_fwd<2>(p, o); }, "UNSUPPORTED", "16-byte aligned");
}

// The backward is bitwise reproducible (no atomics; GQA heads summed in order inside one CTA), here
// with dilation groups, GQA, a causal axis and dLSE.
SIMT_TEST(backward_is_deterministic) {
  const Case c = {{9, 10}, {3, 3}, {1, 2}, {2, 3}, {false, true}, {8, 8}, 1, 4, 2, true, "determinism"};
  for (int i = 0; i < Tab<2>::bwd_count; ++i) {
    const auto& e = Tab<2>::bwd[i];
    if (e.dtype == DType::BFloat16 && e.head_dim == 32) bwd_case<__nv_bfloat16, 2>(e, c, 7, /*twice=*/true);
  }
}

}  // namespace

SIMT_TEST_MAIN
