// CPU entry points of block-sparse attention: the fused driver (fmha.h) with BlockSparseMask.
#pragma once
#include "attnkit/attention.h"
#include "attnkit/mask_block_sparse.h"

namespace attnkit::cpu {

void block_sparse_forward(const AttentionFwdParams& p, const BlockMaskView& mask);
void block_sparse_backward(const AttentionBwdParams& p, const BlockMaskView& mask);

}  // namespace attnkit::cpu
