// Plain descriptor of a neighborhood-attention problem (rank 1-3). Tokens are the flattened
// spatial grid [X, (Y, (Z))], row-major; the attention shape's Nq = Nk = the token count.
#pragma once
#include <cstdint>

namespace attnkit {

struct NeighborhoodOptions {
  int rank = 1;
  int64_t size[3] = {1, 1, 1};      // input extent per axis
  int64_t kernel[3] = {2, 2, 2};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  bool causal[3] = {false, false, false};
  int64_t tile[3] = {64, 1, 1};     // query/key tile extents; their product is kTile (64)
};

// Tile-level statistics of a problem (what `attnkit sim` reports): tile pairs a dense kernel
// visits, pairs the neighborhood kernel visits (Full + Partial) and the visible query-key pairs.
struct NeighborhoodPlan {
  int64_t dense_pairs = 0, full_pairs = 0, partial_pairs = 0;
  int64_t visible = 0;  // exact count of visible (query, key) pairs, per batch and head
};

}  // namespace attnkit
