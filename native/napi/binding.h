// Helpers shared by the binding's files (native/napi/ only): the error boundary, handle unwrapping
// and plain-object readers. Each op family registers its functions from its own file through
// register_op_families (families.cc), so adding a family never touches the stream machinery.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../cpu/stream.h"
#include "../cuda/device.h"
#include "attnkit/attention.h"
#include "attnkit/error.h"

namespace attnkit::napi {

// A JavaScript Error with `code` = "ERR_ATTNKIT_" + code and `op`.
Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& op,
                       const std::string& message);

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

// The device a storage must be on: kCpu, a CUDA ordinal, or kAnyDevice. A CUDA storage where the
// CPU is expected fails with UNSUPPORTED ("not implemented on CUDA yet"): CPU kernels never see a
// device pointer.
constexpr int kCpu = -1;
constexpr int kAnyDevice = -2;
cpu::StoragePtr unwrap(const Napi::Value& v, const char* op, const char* arg, int device = kCpu);
std::vector<cpu::StoragePtr> unwrap_list(const Napi::Value& v, const char* op, const char* arg, int device = kCpu);
// A CPU stream (a CUDA stream fails with UNSUPPORTED: the op families run on the CPU only so far).
cpu::CpuStream& unwrap_stream(const Napi::Value& v, const char* op);
// The CUDA stream behind a NativeStream, or null for a CPU stream (cuda.cc).
cuda::DeviceStream* unwrap_device_stream(const Napi::Value& v, const char* op);
// A new NativeStorage object holding `s` (cuda.cc: fromDevicePointer).
Napi::Object wrap_storage(Napi::Env env, cpu::StoragePtr s);

Napi::Object get_obj(const Napi::Value& v);
int64_t get_int(const Napi::Object& o, const char* key);
double get_num(const Napi::Object& o, const char* key);
bool get_bool(const Napi::Object& o, const char* key);
// Re-check of what memory safety needs: element count and dtype of a buffer.
void expect_numel(const cpu::StoragePtr& s, int64_t n, DType t, const char* op, const char* arg);

// The buffers of a fused softmax attention forward: q, k, v, out, lse at info[first...], checked
// against the shape (sizes and dtypes: what memory safety needs).
struct FwdIO {
  cpu::StoragePtr q, k, v, out, lse;
};
FwdIO unwrap_fwd(const Napi::CallbackInfo& info, int first, const AttentionShape& s, const char* op,
                 int device = kCpu);

// Backward: q, k, v, out, lse, dOut, dLse (or null), dq, dk, dv at info[first...].
struct BwdIO {
  cpu::StoragePtr q, k, v, out, lse, dout, dlse, dq, dk, dv;
};
BwdIO unwrap_bwd(const Napi::CallbackInfo& info, int first, const AttentionShape& s, const char* op,
                 int device = kCpu);

// Enqueue a forward/backward kernel(params) on `stream` with the buffers' pointers filled in.
// Problem shape {B, Nq, Nk, H, Hkv, D, Dv} of a fused-attention call.
AttentionShape read_shape(const Napi::Object& o, const char* op);

// `extra` inputs (e.g. a block mask's buffers) are waited for and kept alive like q, k, v.
// `Stream` is cpu::CpuStream or cuda::DeviceStream.
template <typename Stream, typename Kernel>
void enqueue_fwd(Stream& stream, const FwdIO& io, AttentionFwdParams p, Kernel kernel,
                 const std::vector<cpu::StoragePtr>& extra = {}) {
  cpu::Task task;
  task.inputs = {io.q, io.k, io.v};
  task.inputs.insert(task.inputs.end(), extra.begin(), extra.end());
  task.outputs = {io.out, io.lse};
  task.run = [p, io, kernel]() mutable {
    p.q = io.q->data;
    p.k = io.k->data;
    p.v = io.v->data;
    p.out = io.out->data;
    p.lse = static_cast<float*>(io.lse->data);
    kernel(p);
  };
  stream.enqueue(std::move(task));
}

template <typename Stream, typename Kernel>
void enqueue_bwd(Stream& stream, const BwdIO& io, AttentionBwdParams p, Kernel kernel,
                 const std::vector<cpu::StoragePtr>& extra = {}) {
  cpu::Task task;
  task.inputs = {io.q, io.k, io.v, io.out, io.lse, io.dout};
  if (io.dlse) task.inputs.push_back(io.dlse);
  task.inputs.insert(task.inputs.end(), extra.begin(), extra.end());
  task.outputs = {io.dq, io.dk, io.dv};
  task.run = [p, io, kernel]() mutable {
    p.q = io.q->data;
    p.k = io.k->data;
    p.v = io.v->data;
    p.out = io.out->data;
    p.lse = static_cast<const float*>(io.lse->data);
    p.dout = io.dout->data;
    p.dlse = io.dlse ? static_cast<const float*>(io.dlse->data) : nullptr;
    p.dq = io.dq->data;
    p.dk = io.dk->data;
    p.dv = io.dv->data;
    kernel(p);
  };
  stream.enqueue(std::move(task));
}

// A BlockMask's five int32 buffers (full offsets/indices, partial offsets/indices, bitmaps), from
// a JS array of storages (block_sparse.cc).
struct MaskIO {
  cpu::StoragePtr full_off, full_idx, part_off, part_idx, part_bits;
};
MaskIO unwrap_mask(const Napi::Value& v, const char* op);

// Defined in families.cc: calls each op family's register function.
void register_op_families(Napi::Env env, Napi::Object exports);
void register_cuda(Napi::Env env, Napi::Object exports);  // cuda.cc

}  // namespace attnkit::napi
