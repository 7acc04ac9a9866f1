// The CUDA runtime behind attnkit's tensors and streams (DESIGN §2, §3, §7), in a header free of
// CUDA types, so that the binding (native/napi/) compiles in every build. The CUDA build implements
// it in native/cuda/device_*.cu; builds without CUDA link native/cuda/runtime_stub.cc, whose
// functions throw (they are never reached: no CUDA stream or storage can be made there).
//
// Model (docs/cuda.md):
//  - A DeviceStream is a cudaStream_t (non-blocking) plus a worker thread that issues its tasks in
//    enqueue order. Before issuing a task the worker makes the stream wait for the task's inputs:
//    an input produced on another CUDA stream by cudaStreamWaitEvent on the event recorded after
//    its producer (no host round trip); an input produced on a CPU stream by waiting, on the
//    worker, for that stream to finish it. A CPU stream that consumes a tensor produced on a CUDA
//    stream (a device-to-host copy) waits on its worker with cudaEventSynchronize (the
//    StreamState::wait_for override). No thread the CUDA runtime owns ever blocks on attnkit work,
//    and the JS thread never waits for the device.
//  - Waits (synchronize, toArray) are tasks too: the worker synchronizes the stream and hands the
//    result to the JS thread through the stream's thread-safe function (native/napi/addon.cc), so
//    errors from the device (a faulted kernel) reject the promise instead of leaving it pending.
//  - Device memory comes from the stream-ordered allocator: cudaMallocAsync on the stream the
//    tensor is made for (on the JS thread, so out-of-memory throws at the call), cudaFreeAsync on
//    that stream once the storage dies (its last task has been issued), after waiting for every
//    other stream that used it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "../runtime/stream.h"
#include "generated/supports.h"
#include "attnkit/attention.h"
#include "attnkit/dtype.h"
#include "attnkit/error.h"
#include "attnkit/selection.h"
#include "attnkit/mask_block_sparse.h"
#include "attnkit/neighborhood.h"

namespace attnkit::cuda {

// A runtime::Stream on cuda:device (native/runtime/stream.h): its worker issues each task's work
// asynchronously on a non-blocking cudaStream_t (handle()).
class DeviceStream : public runtime::Stream {
 public:
  // Creates a stream on cuda:device (throws Error DEVICE/CUDA/UNSUPPORTED with the reason).
  explicit DeviceStream(int device);
  void* handle() const override;  // the cudaStream_t
};

// ---------------------------------------------------------------- memory

// `numel` elements of `dtype` on the stream's device, from cudaMallocAsync on that stream (throws
// Error OOM or CUDA naming `op`). With `zero`, a memset is enqueued on the stream.
runtime::StoragePtr allocate(DType dtype, int64_t numel, DeviceStream& stream, bool zero, const char* op);

// Memory attnkit does not own (fromDevicePointer): `ptr` on cuda:N (N = owner.device()). Checks
// that the pointer is device memory of that device (throws Error ARGUMENT). `keep_alive` is
// released once the storage is gone and the device has finished every task that used it.
runtime::StoragePtr wrap_external(uint64_t ptr, DType dtype, int64_t numel, DeviceStream& owner,
                              std::shared_ptr<void> keep_alive, const char* op);

// Makes `storage` (just wrapped) ready on `stream` only after the work issued so far on the
// foreign stream `raw_stream` (a cudaStream_t of another library; 0 is the legacy default stream).
void wait_foreign_stream(const runtime::StoragePtr& storage, DeviceStream& stream, uint64_t raw_stream,
                         const char* op);

// Live bytes of attnkit storage on cuda:device (allocated and not yet released).
int64_t live_bytes(int device);

struct PoolStats {
  int64_t reserved = 0;  // bytes the device's default memory pool holds
  int64_t used = 0;      // bytes of that in use (allocated and not yet freed in stream order)
};
// Statistics of the default memory pool of cuda:device; false when unavailable.
bool pool_stats(int device, PoolStats* out);

// ---------------------------------------------------------------- work issued by tasks
// These run on a DeviceStream's worker, inside task.run, with `stream` = handle(). They throw
// attnkit::Error (code CUDA, OOM or UNSUPPORTED) naming `op`.

// Copies `src` into `dst` (same dtype and size): host to device, device to host (complete on
// return), device to device, between devices.
void copy(const runtime::StoragePtr& dst, const runtime::StoragePtr& src, void* stream, const char* op);
// Copies `bytes` from device memory to host memory `dst`; complete on return.
void copy_to_host(void* dst, const void* src, size_t bytes, void* stream, const char* op);
// Elementwise dtype conversion on the device (round to nearest even, as the CPU conversion).
void convert(const void* src, DType from, void* dst, DType to, int64_t n, void* stream, const char* op);
// out = a + b elementwise in float32 arithmetic, rounded to `dtype` (the CPU's `add`).
void add(const void* a, const void* b, void* out, DType dtype, int64_t n, void* stream, const char* op);
// Keeps the stream busy on the device for about `ms` milliseconds (a test hook).
void spin(double ms, void* stream);
// Launches a kernel that makes an illegal memory access (a test hook, for child processes: the
// device context is unusable afterwards).
void fault(void* stream);

// "" when this build runs `shape` and `dtype` with one of the op's kernels (its generated table,
// generated/supports.h, from instantiations.json), else the reason, naming what was asked and what is
// supported: the synchronous check at the call, before anything is enqueued.
std::string support(const supported::OpTable& op, const AttentionShape& shape, DType dtype);
// Dense fused attention on the device: the kernels of native/cuda/fmha/ when this build has them.
void run_attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask, void* stream);
void run_attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask, void* stream);

// Attention merge on the device (native/cuda/merge/): 1 to kCudaMergeMaxParts parts, any value head
// dim the binding accepts, the dtypes the merge family lists.
void run_merge_forward(const MergeParams& p, void* stream);
void run_merge_backward(const MergeBwdParams& p, void* stream);
// MoBA / XAttention block selection on the device (native/cuda/selection/): scores, selection and
// the BlockMask lists, all in device memory, in stream order.
void run_moba_select(const MobaParams& p, void* stream);
void run_xattention_select(const XattnParams& p, void* stream);

// Block-sparse attention on the device (native/cuda/block_sparse/): the mask's lists as device
// pointers (`view`), its index lists' capacities, and its device plan buffer (block_sparse/plan.h:
// plan_ints int32 elements), which the first call on the device builds (`build_plan`) in stream order.
struct BlockSparseDevice {
  int64_t full_capacity = 0, partial_capacity = 0;
  int32_t* plan = nullptr;
  int64_t plan_ints = 0;
  bool build_plan = false;
};
void run_block_sparse_forward(const AttentionFwdParams& p, const BlockMaskView& view, const BlockSparseDevice& d,
                              void* stream);
void run_block_sparse_backward(const AttentionBwdParams& p, const BlockMaskView& view, const BlockSparseDevice& d,
                               void* stream);

// Neighborhood attention on the device (native/cuda/neighborhood/): the fused attention kernels with
// the neighborhood policy, for the ranks, dtypes, head dims and tile shapes the family lists.
void run_neighborhood_forward(const AttentionFwdParams& p, const NeighborhoodOptions& o, void* stream);
void run_neighborhood_backward(const AttentionBwdParams& p, const NeighborhoodOptions& o, void* stream);
bool have_attention_kernels();

// ---------------------------------------------------------------- timing events

// A timing event created on the JS thread and recorded by a task (CUDA events for the benchmark).
class TimingEvent {
 public:
  explicit TimingEvent(int device);
  ~TimingEvent();
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;
  void record(void* stream);  // on the worker
  // Milliseconds from `start` to `end`; both must have completed (after a synchronize).
  static double elapsed_ms(const TimingEvent& start, const TimingEvent& end);

 private:
  void* event_ = nullptr;
  int device_ = 0;
};

}  // namespace attnkit::cuda
