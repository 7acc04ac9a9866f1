// CPU entry points of neighborhood attention: the fused driver (fmha.h) with NeighborhoodMask.
#pragma once
#include "attnkit/attention.h"
#include "attnkit/neighborhood.h"

namespace attnkit::cpu {

void neighborhood_forward(const AttentionFwdParams& p, const NeighborhoodOptions& o);
void neighborhood_backward(const AttentionBwdParams& p, const NeighborhoodOptions& o);
// Tile statistics for the simulator and the tile-shape choice. O(tile pairs visited).
NeighborhoodPlan neighborhood_plan(const NeighborhoodOptions& o);

}  // namespace attnkit::cpu
