// Binding functions of the CUDA runtime (native/cuda/device.h): copies between devices, raw
// device-pointer interop, timing events for the benchmark, device memory statistics. Compiled in
// every build: without CUDA the runtime's stubs throw, and JavaScript never gets here because no
// CUDA stream can be made (src/stream.ts checks availability first).
//
// fromDevicePointer's keepAlive is a JavaScript object that must outlive every use of the memory by
// the device. The storage holds it through a shared_ptr whose deleter runs once the storage is gone
// and the device has finished the storage's work (a host function on its stream); that deleter only
// posts the reference to the JS thread, through a thread-safe function that, like the streams'
// (addon.cc), is created, released and unreferenced on the JS thread only.
#include <napi.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "../cuda/device.h"
#include "binding.h"

namespace attnkit::napi {

using runtime::StoragePtr;

namespace {

// ---------------------------------------------------------------- keepAlive release

struct KeepAlive {
  Napi::ObjectReference ref;
};
struct Releaser;
void release_on_js(Napi::Env env, Napi::Function, Releaser*, KeepAlive* k) {
  if (env == nullptr) return;  // the environment is being torn down: k is leaked on purpose
  delete k;                    // deletes the reference, on the JS thread
}
using ReleaseTsfn = Napi::TypedThreadSafeFunction<Releaser, KeepAlive, release_on_js>;

struct Releaser {
  std::mutex mu;
  bool open = true;
  ReleaseTsfn tsfn;
  bool post(KeepAlive* k) {
    std::lock_guard<std::mutex> lk(mu);
    if (!open) return false;
    return tsfn.NonBlockingCall(k) == napi_ok;
  }
  void close() {
    std::lock_guard<std::mutex> lk(mu);
    if (!open) return;
    open = false;
    tsfn.Release();
  }
};

// One releaser per environment (worker_threads each have their own), made on first use.
std::mutex g_releasers_mu;
std::map<napi_env, std::shared_ptr<Releaser>> g_releasers;

void close_releaser(void* arg) {
  auto* env = static_cast<napi_env>(arg);
  std::shared_ptr<Releaser> r;
  {
    std::lock_guard<std::mutex> lk(g_releasers_mu);
    auto it = g_releasers.find(env);
    if (it == g_releasers.end()) return;
    r = it->second;
    g_releasers.erase(it);
  }
  r->close();
}

std::shared_ptr<Releaser> releaser(Napi::Env env) {
  std::lock_guard<std::mutex> lk(g_releasers_mu);
  auto& r = g_releasers[env];
  if (!r) {
    r = std::make_shared<Releaser>();
    r->tsfn = ReleaseTsfn::New(env, "attnkit-keepalive", 0, 1, r.get());
    r->tsfn.Unref(env);  // a pending release never keeps the process alive
    napi_add_env_cleanup_hook(env, close_releaser, static_cast<napi_env>(env));
  }
  return r;
}

// ---------------------------------------------------------------- helpers

uint64_t get_u64(const Napi::Value& v, const char* op, const char* arg) {
  if (!v.IsBigInt()) fail("ARGUMENT", op, std::string("expected '") + arg + "' to be a bigint");
  bool lossless = false;
  const uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) fail("ARGUMENT", op, std::string("expected '") + arg + "' to fit in 64 bits");
  return x;
}

cuda::DeviceStream* unwrap_device_stream(const Napi::Value& v, const char* op) {
  runtime::Stream& s = unwrap_stream(v, op);
  return s.device() >= 0 ? static_cast<cuda::DeviceStream*>(&s) : nullptr;
}

cuda::DeviceStream& cuda_stream(const Napi::Value& v, const char* op) {
  cuda::DeviceStream* ds = unwrap_device_stream(v, op);
  if (!ds) fail("DEVICE", op, "expected a CUDA stream, received a CPU stream");
  return *ds;
}

// ---------------------------------------------------------------- functions

// fromDevicePointer(ptr: bigint, dtype: number, numel: number, stream: NativeStream,
//                   foreignStream: bigint | null, keepAlive: object | undefined, op: string)
Napi::Value FromDevicePointer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return boundary(env, [&]() -> Napi::Value {
    const std::string op_name = info[6].IsString() ? info[6].As<Napi::String>().Utf8Value() : "fromDevicePointer";
    const char* op = op_name.c_str();
    const uint64_t ptr = get_u64(info[0], op, "ptr");
    const int dtype = info[1].As<Napi::Number>().Int32Value();
    const double numel = info[2].As<Napi::Number>().DoubleValue();
    if (dtype < 0 || dtype > 4) fail("DTYPE", op, "unknown dtype code");
    if (!(numel >= 0) || numel > 9.0e15) fail("SHAPE", op, "invalid element count");
    if (ptr == 0) fail("ARGUMENT", op, "expected 'ptr' to be a non-null device pointer");
    cuda::DeviceStream& stream = cuda_stream(info[3], op);
    std::shared_ptr<void> keep;
    if (info[5].IsObject() || info[5].IsFunction()) {
      auto* k = new KeepAlive{Napi::Persistent(info[5].As<Napi::Object>())};
      std::shared_ptr<Releaser> r = releaser(env);
      keep = std::shared_ptr<void>(k, [r](void* p) {
        if (!r->post(static_cast<KeepAlive*>(p))) { /* environment gone: leaked on purpose */ }
      });
    }
    StoragePtr s = cuda::wrap_external(ptr, DType(dtype), int64_t(numel), stream, std::move(keep), op);
    if (info[4].IsBigInt()) cuda::wait_foreign_stream(s, stream, get_u64(info[4], op, "stream"), op);
    return wrap_storage(env, std::move(s));
  });
}

// devicePointer(storage) -> bigint
Napi::Value DevicePointer(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&]() -> Napi::Value {
    StoragePtr s = unwrap(info[0], "devicePointer", "tensor", kAnyDevice);
    if (s->device < 0) fail("DEVICE", "devicePointer", "the tensor is on the CPU; devicePointer exists for CUDA tensors only");
    return Napi::BigInt::New(info.Env(), uint64_t(reinterpret_cast<uintptr_t>(s->data)));
  });
}

// cudaCopy(stream, src, dst): dst = src (same dtype and size) on a CUDA stream, between the host
// and the stream's device, within it, or from another device to it.
Napi::Value Copy(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "to";
    cuda::DeviceStream& stream = cuda_stream(info[0], op);
    StoragePtr src = unwrap(info[1], op, "tensor", kAnyDevice);
    StoragePtr dst = unwrap(info[2], op, "out", kAnyDevice);
    if (src->dtype != dst->dtype || src->numel != dst->numel) fail("SHAPE", op, "a copy keeps the dtype and size");
    if (src->device != stream.device() && dst->device != stream.device())
      fail("DEVICE", op, "a copy runs on a stream of its source's or destination's device");
    runtime::Task task;
    task.inputs = {src};
    task.outputs = {dst};
    void* h = stream.handle();
    task.run = [src, dst, h] { cuda::copy(dst, src, h, "to"); };
    stream.enqueue(std::move(task));
    return info.Env().Undefined();
  });
}

// cudaRecordEvent(stream) -> event: a timing event recorded when the stream reaches this point.
Napi::Value RecordEvent(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&]() -> Napi::Value {
    cuda::DeviceStream& stream = cuda_stream(info[0], "recordEvent");
    auto ev = std::make_shared<cuda::TimingEvent>(stream.device());
    runtime::Task task;
    void* h = stream.handle();
    task.run = [ev, h] { ev->record(h); };
    stream.enqueue(std::move(task));
    return Napi::External<std::shared_ptr<cuda::TimingEvent>>::New(
        info.Env(), new std::shared_ptr<cuda::TimingEvent>(ev),
        [](Napi::Env, std::shared_ptr<cuda::TimingEvent>* p) { delete p; });
  });
}

// cudaEventElapsed(start, end) -> milliseconds (both recorded and complete).
Napi::Value EventElapsed(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&]() -> Napi::Value {
    for (int i = 0; i < 2; ++i)
      if (!info[i].IsExternal()) fail("ARGUMENT", "eventElapsed", "expected events from recordEvent");
    auto* a = info[0].As<Napi::External<std::shared_ptr<cuda::TimingEvent>>>().Data();
    auto* b = info[1].As<Napi::External<std::shared_ptr<cuda::TimingEvent>>>().Data();
    return Napi::Number::New(info.Env(), cuda::TimingEvent::elapsed_ms(**a, **b));
  });
}

// cudaMemoryStats(device) -> {allocated, reserved, used} | null
Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int device = info[0].As<Napi::Number>().Int32Value();
  cuda::PoolStats p;
  if (device < 0 || !cuda::pool_stats(device, &p)) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("allocated", double(cuda::live_bytes(device)));
  o.Set("reserved", double(p.reserved));
  o.Set("used", double(p.used));
  return o;
}

// cudaTestFault(stream): enqueues a kernel that makes an illegal memory access (test hook; the
// process's device context is unusable afterwards, so tests call it in a child process).
Napi::Value TestFault(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    cuda::DeviceStream& stream = cuda_stream(info[0], "test");
    runtime::Task task;
    void* h = stream.handle();
    task.run = [h] { cuda::fault(h); };
    stream.enqueue(std::move(task));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_cuda(Napi::Env env, Napi::Object exports) {
  exports.Set("fromDevicePointer", Napi::Function::New(env, FromDevicePointer));
  exports.Set("devicePointer", Napi::Function::New(env, DevicePointer));
  exports.Set("cudaCopy", Napi::Function::New(env, Copy));
  exports.Set("cudaRecordEvent", Napi::Function::New(env, RecordEvent));
  exports.Set("cudaEventElapsed", Napi::Function::New(env, EventElapsed));
  exports.Set("cudaMemoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("cudaTestFault", Napi::Function::New(env, TestFault));
}

}  // namespace attnkit::napi
