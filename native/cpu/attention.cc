// Dense attention and attention merging on the CPU. The softmax attention itself is the generic
// fused driver (fmha.h) with the dense mask policy (attnkit/mask_dense.h).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attnkit/mask_dense.h"
#include "convert.h"
#include "fmha.h"
#include "thread_pool.h"

namespace attnkit::cpu {

namespace {
const float kNegInf = -std::numeric_limits<float>::infinity();
}

void attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mo) {
  fmha::forward(p, DenseMask::make(p.shape.Nq, p.shape.Nk, mo.causal, mo.left, mo.right),
                "attention");
}

void attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mo) {
  fmha::backward(p, DenseMask::make(p.shape.Nq, p.shape.Nk, mo.causal, mo.left, mo.right),
                 "attentionBackward");
}

// ---------------------------------------------------------------- merge

void merge_forward(const MergeParams& p) {
  constexpr int64_t kRows = 256;
  ThreadPool::instance().parallel_for(ceil_div(p.rows, kRows), [&](int64_t t, int) {
    float acc[1024], o[1024];
    for (int64_t r = t * kRows, re = std::min(p.rows, r + kRows); r < re; ++r) {
      float mx = kNegInf;
      for (int i = 0; i < p.parts; ++i) mx = std::max(mx, p.lses[i][r]);
      std::fill(acc, acc + p.dv, 0.f);
      if (mx == kNegInf) {
        store_f32(acc, p.dtype, r * p.dv, p.dv, p.out);
        p.lse[r] = kNegInf;
        continue;
      }
      double total = 0;
      for (int i = 0; i < p.parts; ++i) total += std::exp(double(p.lses[i][r]) - mx);
      for (int i = 0; i < p.parts; ++i) {
        const float w = float(std::exp(double(p.lses[i][r]) - mx) / total);
        if (w == 0.f) continue;
        load_f32(p.outs[i], p.dtype, r * p.dv, p.dv, o);
        for (int64_t e = 0; e < p.dv; ++e) acc[e] += w * o[e];
      }
      store_f32(acc, p.dtype, r * p.dv, p.dv, p.out);
      p.lse[r] = float(mx + std::log(total));
    }
  });
}

void merge_backward(const MergeBwdParams& p) {
  constexpr int64_t kRows = 256;
  ThreadPool::instance().parallel_for(ceil_div(p.rows, kRows), [&](int64_t t, int) {
    float dout[1024], out[1024], o[1024], g[1024];
    for (int64_t r = t * kRows, re = std::min(p.rows, r + kRows); r < re; ++r) {
      load_f32(p.dout, p.dtype, r * p.dv, p.dv, dout);
      load_f32(p.out, p.dtype, r * p.dv, p.dv, out);
      const float dl = p.dlse ? p.dlse[r] : 0.f;
      for (int i = 0; i < p.parts; ++i) {
        // w_i = exp(lse_i - lse); d out_i = w_i dOut; d lse_i = w_i (dOut . (out_i - out) + dLSE)
        const float li = p.lses[i][r];
        const float w = (li == kNegInf || p.lse[r] == kNegInf) ? 0.f : std::exp(li - p.lse[r]);
        load_f32(p.outs[i], p.dtype, r * p.dv, p.dv, o);
        double dot = 0;
        for (int64_t e = 0; e < p.dv; ++e) {
          g[e] = w * dout[e];
          dot += double(dout[e]) * (o[e] - out[e]);
        }
        store_f32(g, p.dtype, r * p.dv, p.dv, p.douts[i]);
        p.dlses[i][r] = w == 0.f ? 0.f : float(w * (dot + dl));
      }
    }
  });
}

}  // namespace attnkit::cpu
