// CPU entry points of the fused softmax attention family. Synchronous: they run on the calling
// stream worker and spread over the compute pool. Inputs are assumed validated (TypeScript
// validates; the binding re-checks buffer sizes).
#pragma once
#include "attnkit/attention.h"

namespace attnkit::cpu {

void attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask);
void attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask);
void merge_forward(const MergeParams& p);
void merge_backward(const MergeBwdParams& p);

}  // namespace attnkit::cpu
