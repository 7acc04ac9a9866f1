// Helpers shared by the binding's files (native/napi/ only): the error boundary, handle unwrapping
// and plain-object readers. Each op family registers its functions from its own file through
// register_op_families (families.cc). Every op binds the same way: fn(stream, tensors..., params)
// reads the call into the op's descriptor and hands it to ops::enqueue (native/ops/dispatch.h),
// which picks the backend; nothing here branches on it.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../ops/ops.h"
#include "../runtime/stream.h"
#include "attnkit/attention.h"
#include "attnkit/error.h"

namespace attnkit::cuda {
class DeviceStream;
}

namespace attnkit::napi {

// A JavaScript Error with `code` = "ERR_ATTNKIT_" + code and `op`.
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& op,
                       const std::string& message);

// Per-environment data: the two classes, for instanceof checks when unwrapping, and whether the
// environment is stopping (exit, worker.terminate()): once set, completions go to a sink instead
// of calling into JavaScript (stream.cc).
struct AddonData {
  Napi::FunctionReference storage_ctor;
  Napi::FunctionReference stream_ctor;
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
};
// Waits whose promise has not yet settled or been discarded, in every environment (a test hook).
int64_t live_completions();
Napi::Function storage_class(Napi::Env env);  // storage.cc: NativeStorage
Napi::Function stream_class(Napi::Env env);   // stream.cc: NativeStream

// Runs fn, converting attnkit::Error into a JavaScript error with code and op.
template <typename F>
auto boundary(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw make_error(env, e.code(), e.op(), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, "OOM", "", "out of memory");
  }
}

// Throws attnkit::Error(code, op, "op: msg").
[[noreturn]] void fail(const std::string& code, const std::string& op, const std::string& msg);

// The device a storage must be on: kCpu, a CUDA ordinal (an op's tensors are on its stream's
// device), or kAnyDevice.
constexpr int kCpu = -1;
constexpr int kAnyDevice = -2;
runtime::StoragePtr unwrap(const Napi::Value& v, const char* op, const char* arg, int device = kCpu);
std::vector<runtime::StoragePtr> unwrap_list(const Napi::Value& v, const char* op, const char* arg, int device = kCpu);
// The stream of any backend behind a NativeStream.
runtime::Stream& unwrap_stream(const Napi::Value& v, const char* op);
// The CUDA stream behind a NativeStream, or null for a CPU stream (for the CUDA runtime's own
// functions in cuda.cc: copies, events, device pointers).
cuda::DeviceStream* unwrap_device_stream(const Napi::Value& v, const char* op);
// A new NativeStorage object holding `s` (cuda.cc: fromDevicePointer).
Napi::Object wrap_storage(Napi::Env env, runtime::StoragePtr s);

Napi::Object get_obj(const Napi::Value& v);
int64_t get_int(const Napi::Object& o, const char* key);
double get_num(const Napi::Object& o, const char* key);
bool get_bool(const Napi::Object& o, const char* key);
// Re-check of what memory safety needs: element count and dtype of a buffer.
void expect_numel(const runtime::StoragePtr& s, int64_t n, DType t, const char* op, const char* arg);

// The buffers of a fused softmax attention forward: q, k, v, out, lse at info[first...], checked
// against the shape (sizes and dtypes: what memory safety needs).
struct FwdIO {
  runtime::StoragePtr q, k, v, out, lse;
};
FwdIO unwrap_fwd(const Napi::CallbackInfo& info, int first, const AttentionShape& s, const char* op,
                 int device = kCpu);

// Backward: q, k, v, out, lse, dOut, dLse (or null), dq, dk, dv at info[first...].
struct BwdIO {
  runtime::StoragePtr q, k, v, out, lse, dout, dlse, dq, dk, dv;
};
BwdIO unwrap_bwd(const Napi::CallbackInfo& info, int first, const AttentionShape& s, const char* op,
                 int device = kCpu);

// Problem shape {B, Nq, Nk, H, Hkv, D, Dv} of a fused-attention call.
AttentionShape read_shape(const Napi::Object& o, const char* op);

// What a call asks of the backend table: dtype, sizes and the inputs' device.
ops::Request request(const AttentionShape& s, DType dtype, int device);

// Fills the buffers' pointers into `p` and returns the task that reads and writes them; `extra`
// inputs (e.g. a block mask's buffers) are waited for and kept alive like q, k, v.
runtime::Task fwd_task(const FwdIO& io, AttentionFwdParams& p, const std::vector<runtime::StoragePtr>& extra = {});
runtime::Task bwd_task(const BwdIO& io, AttentionBwdParams& p, const std::vector<runtime::StoragePtr>& extra = {});

// A BlockMask's five int32 buffers (full offsets/indices, partial offsets/indices, bitmaps), from
// a JS array of storages (block_sparse.cc).
struct MaskIO {
  runtime::StoragePtr full_off, full_idx, part_off, part_idx, part_bits;
};
MaskIO unwrap_mask(const Napi::Value& v, const char* op, int device = kCpu);

// Defined in families.cc: calls each op family's register function.
void register_op_families(Napi::Env env, Napi::Object exports);
void register_cuda(Napi::Env env, Napi::Object exports);       // cuda.cc
void register_attention(Napi::Env env, Napi::Object exports);  // attention.cc: dense, merge, elementwise

}  // namespace attnkit::napi
