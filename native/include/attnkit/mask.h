// The mask-policy contract shared by every fused softmax kernel (CPU and CUDA).
//
// A policy answers two questions. allows(q, k): may query q see key k? (what the references mean)
// classify(q0, q1, k0, k1): for the tile of queries [q0, q1) x keys [k0, k1), is every element
// visible (Full: the kernel skips element masking), none (Skip: the kernel never visits the tile)
// or some (Partial)? classify must agree exactly with allows; test/policy.test.ts checks that
// exhaustively on small shapes. Policies also give, per query tile, the range of key tiles that may
// hold a visible key, so kernels iterate only over that range.
#pragma once
#include "attnkit/common.h"

namespace attnkit {

enum class TileClass : int32_t { Skip = 0, Full = 1, Partial = 2 };

}  // namespace attnkit
