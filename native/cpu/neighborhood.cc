// Neighborhood attention (NATTEN semantics) on the CPU: the generic fused driver with the
// neighborhood tile policy, instantiated for ranks 1, 2 and 3.
#include "neighborhood.h"

#include "attnkit/mask_neighborhood.h"
#include "fmha.h"

namespace attnkit::cpu {
namespace {

template <int R>
NeighborhoodMask<R> make_mask(const NeighborhoodOptions& o) {
  return NeighborhoodMask<R>::make(o.size, o.kernel, o.stride, o.dilation, o.causal, o.tile);
}

template <typename F>
void with_rank(const NeighborhoodOptions& o, F&& f) {
  switch (o.rank) {
    case 1: f(make_mask<1>(o)); break;
    case 2: f(make_mask<2>(o)); break;
    case 3: f(make_mask<3>(o)); break;
    default: throw Error("UNSUPPORTED", "neighborhood", "neighborhood: rank must be 1, 2 or 3");
  }
}

}  // namespace

void neighborhood_forward(const AttentionFwdParams& p, const NeighborhoodOptions& o) {
  with_rank(o, [&](const auto& mask) { fmha::forward(p, mask, "neighborhood"); });
}

void neighborhood_backward(const AttentionBwdParams& p, const NeighborhoodOptions& o) {
  with_rank(o, [&](const auto& mask) { fmha::backward(p, mask, "neighborhoodBackward"); });
}

NeighborhoodPlan neighborhood_plan(const NeighborhoodOptions& o) {
  NeighborhoodPlan plan;
  with_rank(o, [&](const auto& mask) {
    int64_t tokens = 1;
    for (int a = 0; a < o.rank; ++a) tokens *= o.size[a];
    const int64_t dense_tiles = ceil_div(tokens, kTile);
    plan.dense_pairs = dense_tiles * dense_tiles;
    for (int64_t g = 0; g < mask.groups(); ++g) {
      const auto gp = mask.group(g);
      for (int64_t qt = 0; qt < gp.q_tiles(); ++qt) {
        for (int64_t i = 0, n = gp.kv_count(qt); i < n; ++i) {
          const int64_t kt = gp.kv_at(qt, i);
          const TileClass c = gp.classify(qt, kt);
          if (c == TileClass::Skip) continue;
          (c == TileClass::Full ? plan.full_pairs : plan.partial_pairs)++;
          for (int64_t r = 0; r < kTile; ++r)
            plan.visible += __builtin_popcountll(gp.row_mask(qt * kTile + r, kt));
        }
      }
    }
  });
  return plan;
}

}  // namespace attnkit::cpu
