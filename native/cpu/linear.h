// CPU linear attention (docs/linear.md). The causal forward is chunked (64 tokens): an intra-chunk
// masked matmul with the decay matrix plus the read of an fp32 running state, which then advances
// by one chunk; tasks are (batch, head, value-column tile). The non-causal forward is two GEMMs.
// The backward recomputes states: a forward scan gives dq, a reverse state-gradient scan gives dk,
// dv and the initial-state gradient. Decays and states are always float32.
#pragma once
#include "attnkit/linear.h"

namespace attnkit::cpu {

void linear_forward(const LinearFwdParams& p);
void linear_backward(const LinearBwdParams& p);
void linear_step(const LinearStepParams& p);

}  // namespace attnkit::cpu
