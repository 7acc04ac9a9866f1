// Every op's descriptor (`Args`) and its row in the backend table (ops.cc). The binding
// (native/napi/) fills the descriptor from a call and passes it to ops::enqueue (dispatch.h);
// nothing here knows N-API, and nothing in the binding knows which backend runs what.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "attnkit/attention.h"
#include "attnkit/linear.h"
#include "attnkit/mask_block_sparse.h"
#include "attnkit/neighborhood.h"
#include "attnkit/selection.h"
#include "dispatch.h"

namespace attnkit::ops {

// ------------------------------------------------------------------ tensors and streams

struct ReadArgs {  // toArray: the storage's bytes into `dst`, widened to float32 when asked
  const void* src = nullptr;
  DType dtype = DType::Float32;
  int64_t numel = 0;
  size_t bytes = 0;
  bool widen = false;
  std::vector<uint8_t>* dst = nullptr;  // owned by the pending wait
};
struct ConvertArgs {  // to(dtype): elementwise conversion, round to nearest even
  const void* src = nullptr;
  DType from = DType::Float32;
  void* dst = nullptr;
  DType to = DType::Float32;
  int64_t numel = 0;
};
struct AddArgs {  // out = a + b in float32 arithmetic
  const void* a = nullptr;
  const void* b = nullptr;
  void* out = nullptr;
  DType dtype = DType::Float32;
  int64_t numel = 0;
};
struct RandnArgs {
  void* out = nullptr;
  DType dtype = DType::Float32;
  int64_t numel = 0;
  uint64_t seed = 0;
};
struct SleepArgs {  // test hook: keeps the stream busy
  int64_t ms = 0;
};

extern const Op<ReadArgs> kRead;
extern const Op<ConvertArgs> kConvert;
extern const Op<AddArgs> kAdd;
extern const Op<RandnArgs> kRandn;
extern const Op<SleepArgs> kSleep;

// ------------------------------------------------------------------ softmax attention families

struct DenseFwdArgs {
  AttentionFwdParams p;
  DenseMaskOptions mask;
};
struct DenseBwdArgs {
  AttentionBwdParams p;
  DenseMaskOptions mask;
};
struct NeighborhoodFwdArgs {
  AttentionFwdParams p;
  NeighborhoodOptions na;
};
struct NeighborhoodBwdArgs {
  AttentionBwdParams p;
  NeighborhoodOptions na;
};
// The mask's lists are re-validated when the work runs (they may come from enqueued selection).
struct BlockMaskCheck {
  int64_t full_capacity = 0, partial_capacity = 0;  // elements of the index buffers
};
// A device mask's plan buffer (native/cuda/block_sparse/plan.h), cached with the mask; the first op
// on the device builds it (`build`).
struct BlockSparsePlanBuffer {
  int32_t* data = nullptr;
  int64_t ints = 0;
  bool build = false;
};
// Int32 elements of a CUDA mask's device plan buffer (native/cuda/block_sparse/plan.h), for its
// mask rows (B x H of the mask), tokens, block sizes and index-list capacity (full + partial).
int64_t block_sparse_plan_ints(int64_t mask_rows, int64_t nq, int64_t nk, int64_t bq, int64_t bk, int64_t listed);
struct BlockSparseFwdArgs {
  AttentionFwdParams p;
  BlockMaskView mask;
  BlockMaskCheck check;
  BlockSparsePlanBuffer plan;  // CUDA only
};
struct BlockSparseBwdArgs {
  AttentionBwdParams p;
  BlockMaskView mask;
  BlockMaskCheck check;
  BlockSparsePlanBuffer plan;  // CUDA only
};
// Merge: the parts' pointer arrays live in the descriptor (p.outs = outs->data(), ...).
struct MergeFwdArgs {
  MergeParams p;
  std::shared_ptr<std::vector<const void*>> outs;
  std::shared_ptr<std::vector<const float*>> lses;
};
struct MergeBwdArgs {
  MergeBwdParams p;
  std::shared_ptr<std::vector<const void*>> outs;
  std::shared_ptr<std::vector<const float*>> lses;
  std::shared_ptr<std::vector<void*>> douts;
  std::shared_ptr<std::vector<float*>> dlses;
};

extern const Op<DenseFwdArgs> kAttentionForward;
extern const Op<DenseBwdArgs> kAttentionBackward;
extern const Op<NeighborhoodFwdArgs> kNeighborhoodForward;
extern const Op<NeighborhoodBwdArgs> kNeighborhoodBackward;
extern const Op<BlockSparseFwdArgs> kBlockSparseForward;
extern const Op<BlockSparseBwdArgs> kBlockSparseBackward;
extern const Op<MergeFwdArgs> kMergeForward;
extern const Op<MergeBwdArgs> kMergeBackward;

// ------------------------------------------------------------------ linear attention, selection

// The per-head decays live in the descriptor (p.opt.decay = decay->data()).
template <typename Params>
struct LinearArgs {
  Params p;
  std::shared_ptr<std::vector<double>> decay;
};
extern const Op<LinearArgs<LinearFwdParams>> kLinearForward;
extern const Op<LinearArgs<LinearBwdParams>> kLinearBackward;
extern const Op<LinearArgs<LinearStepParams>> kLinearStep;
extern const Op<MobaParams> kMobaSelect;
extern const Op<XattnParams> kXattentionSelect;

}  // namespace attnkit::ops
