// Every fused-attention CUDA kernel instantiation of this build (the dispatch table generated from
// instantiations.json) run under the SIMT emulator on small shapes — odd lengths, tails, causal and
// sliding windows, GQA, Nq != Nk (bottom-right), fully masked rows, Nk = 0 — and compared with the
// float64 reference of reference.h. One case per table entry (`fmha_<dir>_<policy>_<dtype>_d<D>`),
// plus the dispatch errors and bitwise determinism of the backward. Outputs start as NaN, so anything
// a kernel fails to write is an error. Driven by test/cuda-kernels.test.ts, which builds this program
// and the generated translation units with g++ and runs it in every thread order and under ASan,
// adding the shapes of test/simt-families.ts (SIMT_SHAPES). The same source compiles with nvcc as a
// real GPU program (scripts/gpu-check-kernels.sh): what the kernels touch is a simt_test::Buffer, and
// simt_test::sync() follows the launches.
//
// Accuracy criterion (FlashAttention 2's, per tensor): the kernel's max error against float64 is at
// most 2x (3x for gradients) that of a naive low-precision implementation (inputs and the rounded
// probabilities / output of a plain implementation in T), plus a small floor for exact cases.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../../../simt/tests/harness.h"
#include "../dispatch.h"
#include "checks.h"
#include "reference.h"

namespace {

using namespace attnkit;
using namespace attnkit::cuda::fmha;
using fmha_ref::Problem;
using namespace attn_check;

struct Shape {
  int64_t B, Nq, Nk, H, Hkv;
  bool causal;
  int64_t left, right;
  bool dlse;
  const char* what;
};

// Forward: ~90 (query tile, key tile) pairs per instantiation; backward (3.5x the MMAs per pair) ~70.
const Shape kFwdShapes[] = {
    {1, 1, 1, 1, 1, false, -1, -1, false, "one token"},
    {1, 17, 17, 2, 1, true, -1, -1, false, "causal, GQA 2:1"},
    {2, 97, 130, 2, 2, true, -1, -1, false, "causal Nq < Nk (bottom-right), B = 2"},
    {1, 130, 97, 4, 2, true, -1, -1, false, "causal Nq > Nk: 33 rows see nothing, GQA"},
    {1, 130, 130, 1, 1, false, 20, 7, false, "sliding window (20, 7)"},
    {1, 97, 97, 1, 1, true, 16, -1, false, "causal + left window 16"},
    {1, 150, 70, 1, 1, false, 3, 2, false, "window past the keys: 78 empty rows"},
    {1, 256, 256, 1, 1, false, -1, -1, false, "full, 4 x 4 tiles"},
    {1, 200, 256, 2, 1, true, 30, -1, false, "causal + left window 30, Nq < Nk, GQA"},
    {1, 5, 0, 1, 1, false, -1, -1, false, "Nk = 0"},
};
const Shape kBwdShapes[] = {
    {1, 1, 1, 1, 1, false, -1, -1, false, "one token"},
    {1, 17, 17, 2, 1, true, -1, -1, true, "causal, GQA 2:1, dLSE"},
    {1, 97, 130, 2, 2, true, -1, -1, false, "causal Nq < Nk (bottom-right)"},
    {1, 130, 97, 4, 2, true, -1, -1, true, "causal Nq > Nk: empty rows, GQA, dLSE"},
    {1, 130, 130, 1, 1, false, 20, 7, false, "sliding window (20, 7)"},
    {2, 70, 70, 1, 1, false, -1, -1, true, "full, B = 2, dLSE"},
    {1, 150, 70, 1, 1, false, 3, 2, false, "window past the keys: empty rows"},
    {1, 256, 256, 2, 1, true, -1, -1, false, "causal 256, GQA 2:1"},
    {1, 256, 200, 1, 1, false, 40, 40, true, "window (40, 40), Nq > Nk, dLSE"},
    {1, 5, 0, 1, 1, false, -1, -1, false, "Nk = 0"},
};

// The shapes the driver adds (rows of $SIMT_SHAPES with dir=fwd|bwd, from test/simt-families.ts: the
// offset classes of every mask edge modulo the tile size). Their count goes to a note, so that the
// driver can tell they ran.
std::vector<Shape> driver_shapes(const char* dir) {
  static std::deque<std::string> names;
  std::vector<Shape> out;
  for (const simt_test::Row& row : simt_test::rows_from_env()) {
    if (simt_test::get(row, "dir") != dir) continue;
    const auto num = [&](const char* key, const char* dflt) { return std::stoll(simt_test::get(row, key, dflt)); };
    names.push_back(simt_test::get(row, "what", "driver shape"));
    out.push_back({num("B", "1"), num("Nq", "1"), num("Nk", "1"), num("H", "1"), num("Hkv", "1"), num("causal", "0") != 0,
                   num("left", "-1"), num("right", "-1"), num("dlse", "0") != 0, names.back().c_str()});
  }
  return out;
}

Problem problem(const Shape& s, int64_t D) {
  Problem p;
  p.B = s.B;
  p.Nq = s.Nq;
  p.Nk = s.Nk;
  p.H = s.H;
  p.Hkv = s.Hkv;
  p.D = D;
  p.causal = s.causal;
  p.left = s.left;
  p.right = s.right;
  p.scale = 1.0 / std::sqrt(static_cast<double>(D));
  return p;
}

DenseMaskOptions options(const Shape& s) {
  DenseMaskOptions o;
  o.causal = s.causal;
  o.left = s.left;
  o.right = s.right;
  return o;
}

// ---- forward

template <typename T>
void fwd_shape(const FwdEntry<DenseMask>& e, const Shape& s, unsigned seed) {
  const int D = e.head_dim;
  const Problem p = problem(s, D);
  std::mt19937 rng(seed);
  simt_test::Buffer<T> q, k, v;
  std::vector<double> qd, kd, vd;
  fill(q, qd, static_cast<size_t>(p.B * p.Nq * p.H * D), 2.0, rng);
  fill(k, kd, static_cast<size_t>(p.B * p.Nk * p.Hkv * D), 2.0, rng);
  fill(v, vd, static_cast<size_t>(p.B * p.Nk * p.Hkv * D), 1.0, rng);
  simt_test::Buffer<T> out(static_cast<size_t>(p.B * p.Nq * p.H * D), from_f<T>(NAN));
  simt_test::Buffer<float> lse(static_cast<size_t>(p.B * p.Nq * p.H), NAN);

  AttentionFwdParams fp;
  fp.shape = {p.B, p.Nq, p.Nk, p.H, p.Hkv, D, D};
  fp.dtype = e.dtype;
  fp.q = q.data();
  fp.k = k.data();
  fp.v = v.data();
  fp.out = out.data();
  fp.lse = lse.data();
  fp.scale = static_cast<float>(p.scale);
  const FwdEntry<DenseMask>& sel = select_fwd(fp);
  CHECK(&sel == &e);
  e.run(fwd_args(fp), dense_mask(fp.shape, options(s)), nullptr);
  simt_test::sync();

  const fmha_ref::Forward ref = fmha_ref::forward(p, qd, kd, vd);
  // Naive low-precision: a plain implementation in T rounds the probabilities before P.V and the
  // output at the end, and computes the LSE in float32 (max, then a running sum of expf).
  Err eo, no, el, nl;
  std::vector<double> s_row(static_cast<size_t>(p.Nk));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t i = 0; i < p.Nq; ++i)
      for (int64_t h = 0; h < p.H; ++h) {
        const int64_t li = (b * p.Nq + i) * p.H + h, oi = li * D, hk = h / (p.H / p.Hkv);
        const double L = ref.lse[li];
        if (L == -INFINITY) {
          CHECK_MSG(lse[li] == -INFINITY, "a row that sees no key must have LSE -inf");
          for (int d = 0; d < D; ++d) CHECK_MSG(to_f(out[oi + d]) == 0.f, "a row that sees no key must output 0");
          continue;
        }
        el.add(lse[li], L);
        {
          float mx = -INFINITY, sum = 0.f;
          std::vector<float> sf;
          for (int64_t j = 0; j < p.Nk; ++j) {
            if (!fmha_ref::visible(p, i, j)) continue;
            float dot = 0.f;
            for (int d = 0; d < D; ++d)
              dot += static_cast<float>(qd[oi + d]) * static_cast<float>(kd[fmha_ref::at(b, j, hk, p.Nk, p.Hkv, D) + d]);
            sf.push_back(dot * static_cast<float>(p.scale));
            mx = std::max(mx, sf.back());
          }
          for (float x : sf) sum += std::exp(x - mx);
          nl.add(mx + std::log(sum), L);
        }
        std::vector<double> naive(static_cast<size_t>(D), 0.0);
        for (int64_t j = 0; j < p.Nk; ++j) {
          if (!fmha_ref::visible(p, i, j)) continue;
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += qd[oi + d] * kd[fmha_ref::at(b, j, hk, p.Nk, p.Hkv, D) + d];
          const double w = round_t<T>(std::exp(p.scale * dot - L));
          for (int d = 0; d < D; ++d) naive[d] += w * vd[fmha_ref::at(b, j, hk, p.Nk, p.Hkv, D) + d];
        }
        for (int d = 0; d < D; ++d) {
          eo.add(to_f(out[oi + d]), ref.out[oi + d]);
          no.add(round_t<T>(naive[d]), ref.out[oi + d]);
        }
      }
  const std::string where = std::string(e.name) + ", " + s.what;
  judge("out", where, eo, no, 2.0);
  judge("lse", where, el, nl, 2.0);
}

template <typename T>
void fwd_entry(const FwdEntry<DenseMask>& e) {
  unsigned seed = 1;
  for (const Shape& s : kFwdShapes) fwd_shape<T>(e, s, seed++);
  const std::vector<Shape> extra = driver_shapes("fwd");
  for (const Shape& s : extra) fwd_shape<T>(e, s, seed++);
  simt_test::note("driver_shapes", std::to_string(extra.size()));
  simt_test::flush_error_notes();
}

// ---- backward

template <typename T>
struct BwdRun {
  simt_test::Buffer<T> dq, dk, dv;
};

template <typename T>
void bwd_shape(const BwdEntry<DenseMask>& e, const Shape& s, unsigned seed, bool twice = false) {
  const int D = e.head_dim;
  const Problem p = problem(s, D);
  std::mt19937 rng(seed);
  simt_test::Buffer<T> q, k, v, dout;
  std::vector<double> qd, kd, vd, dod, dlsed;
  fill(q, qd, static_cast<size_t>(p.B * p.Nq * p.H * D), 2.0, rng);
  fill(k, kd, static_cast<size_t>(p.B * p.Nk * p.Hkv * D), 2.0, rng);
  fill(v, vd, static_cast<size_t>(p.B * p.Nk * p.Hkv * D), 1.0, rng);
  fill(dout, dod, static_cast<size_t>(p.B * p.Nq * p.H * D), 1.0, rng);
  simt_test::Buffer<float> dlse;
  if (s.dlse) {
    std::uniform_real_distribution<double> u(-0.5, 0.5);
    dlse.resize(static_cast<size_t>(p.B * p.Nq * p.H));
    for (float& x : dlse) x = static_cast<float>(u(rng));
    dlsed.assign(dlse.begin(), dlse.end());
  }
  // The forward's outputs as a caller would hold them: out rounded to T, LSE in float32.
  const fmha_ref::Forward ref = fmha_ref::forward(p, qd, kd, vd);
  simt_test::Buffer<T> out(ref.out.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = from_f<T>(static_cast<float>(ref.out[i]));
  simt_test::Buffer<float> lse;
  lse.assign(ref.lse.begin(), ref.lse.end());

  AttentionBwdParams bp;
  bp.shape = {p.B, p.Nq, p.Nk, p.H, p.Hkv, D, D};
  bp.dtype = e.dtype;
  bp.q = q.data();
  bp.k = k.data();
  bp.v = v.data();
  bp.out = out.data();
  bp.lse = lse.data();
  bp.dout = dout.data();
  bp.dlse = s.dlse ? dlse.data() : nullptr;
  BwdRun<T> run[2];
  for (int r = 0; r < (twice ? 2 : 1); ++r) {
    run[r].dq.assign(q.size(), from_f<T>(NAN));
    run[r].dk.assign(k.size(), from_f<T>(NAN));
    run[r].dv.assign(v.size(), from_f<T>(NAN));
    bp.dq = run[r].dq.data();
    bp.dk = run[r].dk.data();
    bp.dv = run[r].dv.data();
    bp.scale = static_cast<float>(p.scale);
    const BwdEntry<DenseMask>& sel = select_bwd(bp);
    CHECK(&sel == &e);
    simt_test::Buffer<float> ws(static_cast<size_t>(bwd_workspace_floats(p.B, p.H, p.Nq)), NAN);
    run_bwd(e, bwd_args(bp, ws.data()), dense_mask(bp.shape, options(s)), nullptr);
    simt_test::sync();
  }
  if (twice) {
    CHECK_MSG(std::memcmp(run[0].dq.data(), run[1].dq.data(), run[0].dq.size() * sizeof(T)) == 0 &&
                  std::memcmp(run[0].dk.data(), run[1].dk.data(), run[0].dk.size() * sizeof(T)) == 0 &&
                  std::memcmp(run[0].dv.data(), run[1].dv.data(), run[0].dv.size() * sizeof(T)) == 0,
              "two backward runs differ");
  }

  const fmha_ref::Backward g = fmha_ref::backward(p, qd, kd, vd, ref, dod, dlsed);
  // Naive low-precision: the same sums with P and dS rounded to T before their products (what a
  // plain implementation in T does), using the caller's rounded out for delta; outputs rounded to T.
  fmha_ref::Backward n;
  n.dq.assign(q.size(), 0.0);
  n.dk.assign(k.size(), 0.0);
  n.dv.assign(v.size(), 0.0);
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < p.Nq; ++i) {
        const int64_t li = (b * p.Nq + i) * p.H + h, oi = li * D, hk = h / (p.H / p.Hkv);
        const double L = ref.lse[li];
        if (L == -INFINITY) continue;
        double delta = 0;
        for (int d = 0; d < D; ++d) delta += dod[oi + d] * to_f(out[oi + d]);
        if (s.dlse) delta -= dlsed[li];
        for (int64_t j = 0; j < p.Nk; ++j) {
          if (!fmha_ref::visible(p, i, j)) continue;
          const int64_t kj = fmha_ref::at(b, j, hk, p.Nk, p.Hkv, D);
          double dot = 0, dp = 0;
          for (int d = 0; d < D; ++d) {
            dot += qd[oi + d] * kd[kj + d];
            dp += dod[oi + d] * vd[kj + d];
          }
          const double P = std::exp(static_cast<double>(static_cast<float>(p.scale * dot - L)));
          const double Pt = round_t<T>(P), dSt = round_t<T>(P * (dp - delta));
          for (int d = 0; d < D; ++d) {
            n.dv[kj + d] += Pt * dod[oi + d];
            n.dq[oi + d] += p.scale * dSt * kd[kj + d];
            n.dk[kj + d] += p.scale * dSt * qd[oi + d];
          }
        }
      }
  const std::string where = std::string(e.name) + ", " + s.what;
  const auto compare = [&](const char* name, const simt_test::Buffer<T>& got, const std::vector<double>& want,
                           const std::vector<double>& naive) {
    Err ek, en;
    for (size_t i = 0; i < got.size(); ++i) {
      ek.add(to_f(got[i]), want[i]);
      en.add(round_t<T>(naive[i]), want[i]);
    }
    judge(name, where, ek, en, 3.0);
  };
  compare("dq", run[0].dq, g.dq, n.dq);
  compare("dk", run[0].dk, g.dk, n.dk);
  compare("dv", run[0].dv, g.dv, n.dv);
}

template <typename T>
void bwd_entry(const BwdEntry<DenseMask>& e) {
  unsigned seed = 101;
  for (const Shape& s : kBwdShapes) bwd_shape<T>(e, s, seed++);
  const std::vector<Shape> extra = driver_shapes("bwd");
  for (const Shape& s : extra) bwd_shape<T>(e, s, seed++);
  simt_test::note("driver_shapes", std::to_string(extra.size()));
  simt_test::flush_error_notes();
}

// ---- one registered case per table entry

using Tab = Table<DenseMask>;

template <int I>
void fwd_case() {
  const auto& e = Tab::fwd[I];
  if (e.dtype == DType::Float16)
    fwd_entry<__half>(e);
  else
    fwd_entry<__nv_bfloat16>(e);
}

template <int I>
void bwd_case() {
  const auto& e = Tab::bwd[I];
  if (e.dtype == DType::Float16)
    bwd_entry<__half>(e);
  else
    bwd_entry<__nv_bfloat16>(e);
}

template <size_t... I, size_t... J>
bool register_all(std::index_sequence<I...>, std::index_sequence<J...>) {
  static std::deque<std::string> names;
  ((names.push_back(case_name(Tab::fwd[I].name)),
    simt_test::cases().push_back(simt_test::Case{names.back().c_str(), &fwd_case<static_cast<int>(I)>})),
   ...);
  ((names.push_back(case_name(Tab::bwd[J].name)),
    simt_test::cases().push_back(simt_test::Case{names.back().c_str(), &bwd_case<static_cast<int>(J)>})),
   ...);
  return true;
}
const bool registered =
    register_all(std::make_index_sequence<Tab::fwd_count>{}, std::make_index_sequence<Tab::bwd_count>{});

// ---- dispatch and determinism

template <typename F>
void expect_error(F&& f, const char* code, const char* part) {
  try {
    f();
  } catch (const attnkit::Error& e) {
    CHECK_MSG(e.code() == code && std::string(e.what()).find(part) != std::string::npos && e.op() == "attention",
              std::string("unexpected error ") + e.code() + ": " + e.what());
    std::printf("  (expected) %s: %s\n", e.code().c_str(), e.what());
    return;
  }
  simt_test::fail(__FILE__, __LINE__, std::string("expected attnkit::Error ") + code);
}

SIMT_TEST(dispatch_errors) {
  alignas(16) static uint16_t buf[64];
  AttentionFwdParams p;
  p.shape = {1, 1, 1, 1, 1, 64, 64};
  p.dtype = DType::Float16;
  p.q = p.k = p.v = buf;
  p.out = buf;
  CHECK(select_fwd(p).head_dim == 64);
  p.dtype = DType::Float32;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", "dtype float32 is not supported");
  p.dtype = DType::BFloat16;
  p.shape.D = p.shape.Dv = 48;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", "head dim 48 for bfloat16 is not compiled into this build (compiled: 32, 64, 128)");
  p.shape.D = 64;
  p.shape.Dv = 32;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", "value head dim 32 must equal the query/key head dim 64");
  p.shape.Dv = 64;
  p.shape.H = 3;
  p.shape.Hkv = 2;
  expect_error([&] { select_fwd(p); }, "SHAPE", "H > 0 to be a multiple of Hkv");
  p.shape.H = p.shape.Hkv = 1;
  p.v = buf + 1;
  expect_error([&] { select_fwd(p); }, "UNSUPPORTED", "16-byte aligned");
  AttentionBwdParams b;
  b.shape = {1, 1, 1, 1, 1, 128, 128};
  b.dtype = DType::Float16;
  b.q = b.k = b.v = b.out = b.dout = buf;
  b.dq = b.dk = b.dv = buf;
  CHECK(select_bwd(b).head_dim == 128);
  b.dk = buf + 4;
  expect_error([&] { select_bwd(b); }, "UNSUPPORTED", "16-byte aligned");
  b.dk = buf;
  b.dtype = DType::Int32;
  expect_error([&] { select_bwd(b); }, "UNSUPPORTED", "dtype int32 is not supported");
}

// The backward is bitwise reproducible: no atomics, fixed accumulation order (GQA sums heads in
// order inside one CTA).
SIMT_TEST(backward_is_deterministic) {
  for (int i = 0; i < Tab::bwd_count; ++i) {
    const auto& e = Tab::bwd[i];
    if (e.dtype != DType::BFloat16 || e.head_dim != 32) continue;
    bwd_shape<__nv_bfloat16>(e, {1, 130, 97, 4, 2, true, -1, -1, true, "determinism"}, 7, /*twice=*/true);
  }
}

}  // namespace

SIMT_TEST_MAIN
