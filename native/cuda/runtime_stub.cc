// Stand-in for the CUDA runtime module (runtime.cu, device_*.cu) in builds without CUDA
// (binding.gyp, or no nvcc found). Nothing here is reachable from JavaScript with valid handles:
// no CUDA stream can be created (the constructor throws), so no CUDA storage or task exists.
#include "device.h"
#include "runtime.h"
#include "attnkit/error.h"

namespace attnkit::cuda {

namespace {
const char* const kNoCuda = "attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)";
[[noreturn]] void no_cuda(const char* op) { throw Error("DEVICE", op, std::string(op) + ": " + kNoCuda); }
}  // namespace

CudaInfo cuda_info() {
  CudaInfo info;
  info.reason = kNoCuda;
  return info;
}

// A stream state is made only so that the base class can be constructed before the throw.
DeviceStream::DeviceStream(int) : runtime::Stream(std::make_shared<runtime::StreamState>()) { no_cuda("Stream"); }
void* DeviceStream::handle() const { return nullptr; }

runtime::StoragePtr allocate(DType, int64_t, DeviceStream&, bool, const char* op) { no_cuda(op); }
runtime::StoragePtr wrap_external(uint64_t, DType, int64_t, DeviceStream&, std::shared_ptr<void>, const char* op) {
  no_cuda(op);
}
void wait_foreign_stream(const runtime::StoragePtr&, DeviceStream&, uint64_t, const char* op) { no_cuda(op); }
int64_t live_bytes(int) { return 0; }
bool pool_stats(int, PoolStats*) { return false; }

void copy(const runtime::StoragePtr&, const runtime::StoragePtr&, void*, const char* op) { no_cuda(op); }
void copy_to_host(void*, const void*, size_t, void*, const char* op) { no_cuda(op); }
void convert(const void*, DType, void*, DType, int64_t, void*, const char* op) { no_cuda(op); }
void add(const void*, const void*, void*, DType, int64_t, void*, const char* op) { no_cuda(op); }
void spin(double, void*) { no_cuda("test"); }
void fault(void*) { no_cuda("test"); }

bool have_attention_kernels() { return false; }
std::string support(const supported::OpTable&, const AttentionShape&, DType) { return kNoCuda; }
void run_attention_forward(const AttentionFwdParams&, const DenseMaskOptions&, void*) { no_cuda("attention"); }
void run_attention_backward(const AttentionBwdParams&, const DenseMaskOptions&, void*) { no_cuda("attentionBackward"); }
void run_merge_forward(const MergeParams&, void*) { no_cuda("mergeAttention"); }
void run_merge_backward(const MergeBwdParams&, void*) { no_cuda("mergeAttentionBackward"); }
void run_moba_select(const MobaParams&, void*) { no_cuda("mobaMask"); }
void run_xattention_select(const XattnParams&, void*) { no_cuda("xattentionMask"); }
void run_block_sparse_forward(const AttentionFwdParams&, const BlockMaskView&, const BlockSparseDevice&, void*) {
  no_cuda("blockSparseAttention");
}
void run_block_sparse_backward(const AttentionBwdParams&, const BlockMaskView&, const BlockSparseDevice&, void*) {
  no_cuda("blockSparseAttentionBackward");
}
void run_neighborhood_forward(const AttentionFwdParams&, const NeighborhoodOptions&, void*) { no_cuda("neighborhood"); }
void run_neighborhood_backward(const AttentionBwdParams&, const NeighborhoodOptions&, void*) {
  no_cuda("neighborhoodBackward");
}

TimingEvent::TimingEvent(int) { no_cuda("recordEvent"); }
TimingEvent::~TimingEvent() = default;
void TimingEvent::record(void*) { no_cuda("recordEvent"); }
double TimingEvent::elapsed_ms(const TimingEvent&, const TimingEvent&) { no_cuda("eventElapsed"); }

}  // namespace attnkit::cuda
