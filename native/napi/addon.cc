// The N-API binding: the only file that includes napi.h. It unwraps handles, re-checks what memory
// safety needs (buffer sizes against the problem descriptor), enqueues work on streams and is the
// one boundary where attnkit::Error becomes a JavaScript error with `code` and `op` (src/errors.ts
// turns it into an AttnkitError). Nothing here touches JavaScript off the main thread: workers
// hand completions back through a thread-safe function.
#include <napi.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "binding.h"

#include "../cpu/attention.h"
#include "../cpu/convert.h"
#include "../cpu/kernels.h"
#include "../cpu/stream.h"
#include "../cpu/thread_pool.h"
#include "../cuda/runtime.h"
#include "attnkit/error.h"
#include "attnkit/mask_dense.h"

namespace attnkit::napi {

using cpu::Failure;
using cpu::Storage;
using cpu::StoragePtr;

Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& op,
                       const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, "ERR_ATTNKIT_" + code));
  e.Set("op", Napi::String::New(env, op));
  return e;
}

void fail(const std::string& code, const std::string& op, const std::string& msg) {
  throw Error(code, op, op + ": " + msg);
}

struct AddonData {
  Napi::FunctionReference storage_ctor;
  Napi::FunctionReference stream_ctor;
};

// ------------------------------------------------------------------ Storage

class StorageWrap : public Napi::ObjectWrap<StorageWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeStorage",
                       {InstanceMethod<&StorageWrap::Dispose>("dispose"),
                        InstanceMethod<&StorageWrap::Write>("write"),
                        InstanceAccessor<&StorageWrap::Bytes>("bytes")});
  }

  // new NativeStorage(dtype: number, numel: number, zero?: boolean, stream?: NativeStream, op?: string)
  // With a CUDA stream: device memory allocated stream-ordered on it (zeroed by a task on it).
  // Without arguments: an empty handle that wrap_storage fills in.
  StorageWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StorageWrap>(info) {
    if (info.Length() == 0) return;
    boundary(info.Env(), [&] {
      int dtype = info[0].As<Napi::Number>().Int32Value();
      double numel = info[1].As<Napi::Number>().DoubleValue();
      if (dtype < 0 || dtype > 4) fail("DTYPE", "empty", "unknown dtype code");
      if (!(numel >= 0) || numel > 9.0e15) fail("SHAPE", "empty", "invalid element count");
      const bool zero = info.Length() > 2 && info[2].ToBoolean().Value();
      cuda::DeviceStream* ds = info.Length() > 3 && info[3].IsObject() ? unwrap_device_stream(info[3], "empty") : nullptr;
      if (ds) {
        const std::string op = info.Length() > 4 && info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "empty";
        storage_ = cuda::allocate(DType(dtype), int64_t(numel), *ds, zero, op.c_str());
        return 0;
      }
      storage_ = std::make_shared<Storage>(DType(dtype), int64_t(numel));
      if (zero) std::memset(storage_->data, 0, storage_->bytes);
      return 0;
    });
  }

  void set(StoragePtr s) { storage_ = std::move(s); }

  StoragePtr get(const char* op, const char* arg) const {
    if (!storage_) fail("DISPOSED", op, std::string("'") + arg + "' was disposed");
    return storage_;
  }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    storage_.reset();
    return info.Env().Undefined();
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), storage_ ? double(storage_->bytes) : 0.0);
  }
  // write(src: TypedArray, srcDtype: number): synchronous copy/convert into fresh storage.
  // srcDtype is a dtype code, or kFloat64Source for a Float64Array.
  Napi::Value Write(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      StoragePtr s = get("tensor", "storage");
      if (s->device >= 0) fail("UNSUPPORTED", "tensor", "write() takes a CPU storage (copy to CUDA with to())");
      Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
      const int code = info[1].As<Napi::Number>().Int32Value();
      const bool f64 = code == kFloat64Source;
      if (!f64 && (code < 0 || code > 4)) fail("DTYPE", "tensor", "unknown source dtype code");
      const DType from = f64 ? DType::Float32 : DType(code);
      const int64_t esize = f64 ? 8 : dtype_size(from);
      const int64_t n = int64_t(ta.ElementLength());
      if (n != s->numel || int64_t(ta.ByteLength()) != n * esize)
        fail("SHAPE", "tensor", "data length does not match the shape");
      const uint8_t* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      const bool narrow16 = s->dtype == DType::Float16 || s->dtype == DType::BFloat16;
      // Serial on purpose: the compute pool may be busy with a stream's kernel, and the JS thread
      // must never wait for it.
      for (int64_t i = 0; i < n; i += 4096) {
        float buf[4096];
        const int64_t m = std::min<int64_t>(4096, n - i);
        if (f64) {
          cpu::narrow_f64(reinterpret_cast<const double*>(src) + i, m, buf, narrow16);
          cpu::store_f32(buf, s->dtype, i, m, s->data);
        } else if (from == s->dtype) {
          std::memcpy(static_cast<uint8_t*>(s->data) + i * esize, src + i * esize, size_t(m * esize));
        } else {
          cpu::load_f32(src, from, i, m, buf);
          cpu::store_f32(buf, s->dtype, i, m, s->data);
        }
      }
      return info.Env().Undefined();
    });
  }

  static constexpr int kFloat64Source = 100;
  StoragePtr storage_;
};

static std::string device_name(int device) { return device < 0 ? "cpu" : "cuda:" + std::to_string(device); }

StoragePtr unwrap(const Napi::Value& v, const char* op, const char* arg, int device) {
  if (!v.IsObject()) fail("ARGUMENT", op, std::string("expected '") + arg + "' to be a tensor");
  AddonData* data = v.Env().GetInstanceData<AddonData>();
  Napi::Object o = v.As<Napi::Object>();
  if (!o.InstanceOf(data->storage_ctor.Value()))
    fail("ARGUMENT", op, std::string("expected '") + arg + "' to be a tensor");
  StoragePtr s = StorageWrap::Unwrap(o)->get(op, arg);
  if (device != kAnyDevice && s->device != device) {
    if (device == kCpu)
      fail("UNSUPPORTED", op, std::string("'") + arg + "' is on " + device_name(s->device) + ": not implemented on CUDA yet");
    fail("DEVICE", op, std::string("expected '") + arg + "' to be on " + device_name(device) + ", received a tensor on " +
                           device_name(s->device));
  }
  return s;
}

Napi::Object wrap_storage(Napi::Env env, StoragePtr s) {
  Napi::Object o = env.GetInstanceData<AddonData>()->storage_ctor.New({});
  StorageWrap::Unwrap(o)->set(std::move(s));
  return o;
}

// ------------------------------------------------------------------ completions

struct Completion;
struct Channel;
void call_js(Napi::Env env, Napi::Function, Channel* ctx, Completion* c);
using Tsfn = Napi::TypedThreadSafeFunction<Channel, Completion, call_js>;

// The way back from a stream's worker to the JS thread. The thread-safe function is created,
// referenced, unreferenced and released on the JS thread only (when the stream is collected, or by
// an environment cleanup hook at exit); workers post under the mutex and only while it is open, so
// no worker ever touches a released or torn-down function. Referenced only while some wait is
// pending, so an idle stream never keeps the process alive.
struct Channel {
  std::mutex mu;
  bool open = true;
  Tsfn tsfn;
  int pending = 0;  // JS thread only

  bool post(Completion* c) {
    std::lock_guard<std::mutex> lk(mu);
    if (!open) return false;
    return tsfn.NonBlockingCall(c) == napi_ok;
  }
  void close() {
    std::lock_guard<std::mutex> lk(mu);
    if (!open) return;
    open = false;
    tsfn.Release();
  }
  static void cleanup_hook(void* arg) {
    static_cast<std::shared_ptr<Channel>*>(arg)->get()->close();
  }
};

struct Completion {
  Napi::Promise::Deferred deferred;
  Napi::ObjectReference stream;  // keeps the stream (and its channel) alive while the wait is pending
  std::shared_ptr<const Failure> failure;
  std::vector<uint8_t> bytes;
  bool returns_buffer = false;
};

void call_js(Napi::Env env, Napi::Function, Channel* ch, Completion* c) {
  // env is null when the environment is being torn down: the promise can no longer settle, and
  // the references inside c must not be touched, so c is deliberately leaked.
  if (env == nullptr) return;
  std::unique_ptr<Completion> owned(c);
  if (--ch->pending == 0) ch->tsfn.Unref(env);
  if (c->failure) {
    c->deferred.Reject(make_error(env, c->failure->code, c->failure->op, c->failure->message).Value());
  } else if (c->returns_buffer) {
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, c->bytes.size());
    if (!c->bytes.empty()) std::memcpy(ab.Data(), c->bytes.data(), c->bytes.size());
    c->deferred.Resolve(ab);
  } else {
    c->deferred.Resolve(env.Undefined());
  }
  c->stream.Reset();
}

// ------------------------------------------------------------------ Stream

std::vector<StoragePtr> unwrap_list(const Napi::Value& v, const char* op, const char* arg, int device) {
  if (!v.IsArray()) fail("ARGUMENT", op, std::string("expected '") + arg + "' to be an array of tensors");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<StoragePtr> r;
  for (uint32_t i = 0; i < a.Length(); ++i) r.push_back(unwrap(a.Get(i), op, arg, device));
  return r;
}

Napi::Object get_obj(const Napi::Value& v) { return v.As<Napi::Object>(); }
int64_t get_int(const Napi::Object& o, const char* key) {
  return int64_t(o.Get(key).As<Napi::Number>().DoubleValue());
}
double get_num(const Napi::Object& o, const char* key) {
  return o.Get(key).As<Napi::Number>().DoubleValue();
}
bool get_bool(const Napi::Object& o, const char* key) { return o.Get(key).ToBoolean().Value(); }

void expect_numel(const StoragePtr& s, int64_t n, DType t, const char* op, const char* arg) {
  if (s->numel != n) fail("SHAPE", op, std::string("'") + arg + "' has the wrong number of elements");
  if (s->dtype != t) fail("DTYPE", op, std::string("'") + arg + "' has the wrong dtype");
}

FwdIO unwrap_fwd(const Napi::CallbackInfo& info, int i, const AttentionShape& s, const char* op, int d) {
  FwdIO io{unwrap(info[i], op, "q", d), unwrap(info[i + 1], op, "k", d), unwrap(info[i + 2], op, "v", d),
           unwrap(info[i + 3], op, "out", d), unwrap(info[i + 4], op, "lse", d)};
  const DType t = io.q->dtype;
  expect_numel(io.q, s.B * s.Nq * s.H * s.D, t, op, "q");
  expect_numel(io.k, s.B * s.Nk * s.Hkv * s.D, t, op, "k");
  expect_numel(io.v, s.B * s.Nk * s.Hkv * s.Dv, t, op, "v");
  expect_numel(io.out, s.B * s.Nq * s.H * s.Dv, t, op, "out");
  expect_numel(io.lse, s.B * s.Nq * s.H, DType::Float32, op, "lse");
  return io;
}

BwdIO unwrap_bwd(const Napi::CallbackInfo& info, int i, const AttentionShape& s, const char* op, int d) {
  const bool has_dlse = !(info[i + 6].IsNull() || info[i + 6].IsUndefined());
  BwdIO io{unwrap(info[i], op, "q", d),          unwrap(info[i + 1], op, "k", d),
           unwrap(info[i + 2], op, "v", d),      unwrap(info[i + 3], op, "out", d),
           unwrap(info[i + 4], op, "lse", d),    unwrap(info[i + 5], op, "dOut", d),
           has_dlse ? unwrap(info[i + 6], op, "dLse", d) : nullptr,
           unwrap(info[i + 7], op, "dq", d),     unwrap(info[i + 8], op, "dk", d),
           unwrap(info[i + 9], op, "dv", d)};
  const DType t = io.q->dtype;
  expect_numel(io.q, s.B * s.Nq * s.H * s.D, t, op, "q");
  expect_numel(io.k, s.B * s.Nk * s.Hkv * s.D, t, op, "k");
  expect_numel(io.v, s.B * s.Nk * s.Hkv * s.Dv, t, op, "v");
  expect_numel(io.out, s.B * s.Nq * s.H * s.Dv, t, op, "out");
  expect_numel(io.dout, s.B * s.Nq * s.H * s.Dv, t, op, "dOut");
  expect_numel(io.lse, s.B * s.Nq * s.H, DType::Float32, op, "lse");
  if (io.dlse) expect_numel(io.dlse, s.B * s.Nq * s.H, DType::Float32, op, "dLse");
  expect_numel(io.dq, s.B * s.Nq * s.H * s.D, t, op, "dq");
  expect_numel(io.dk, s.B * s.Nk * s.Hkv * s.D, t, op, "dk");
  expect_numel(io.dv, s.B * s.Nk * s.Hkv * s.Dv, t, op, "dv");
  return io;
}

AttentionShape read_shape(const Napi::Object& o, const char* op) {
  AttentionShape s;
  s.B = get_int(o, "B");
  s.Nq = get_int(o, "Nq");
  s.Nk = get_int(o, "Nk");
  s.H = get_int(o, "H");
  s.Hkv = get_int(o, "Hkv");
  s.D = get_int(o, "D");
  s.Dv = get_int(o, "Dv");
  if (s.B < 1 || s.Nq < 0 || s.Nk < 0 || s.H < 1 || s.Hkv < 1 || s.H % s.Hkv != 0 || s.D < 1 ||
      s.D > 1024 || s.Dv < 1 || s.Dv > 1024)
    fail("SHAPE", op, "invalid problem shape");
  return s;
}

DenseMaskOptions read_mask(const Napi::Object& o) {
  DenseMaskOptions m;
  m.causal = get_bool(o, "causal");
  m.left = get_int(o, "left");
  m.right = get_int(o, "right");
  return m;
}

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(
        env, "NativeStream",
        {InstanceMethod<&StreamWrap::Synchronize>("synchronize"),
         InstanceMethod<&StreamWrap::Read>("read"),
         InstanceMethod<&StreamWrap::Randn>("randn"),
         InstanceMethod<&StreamWrap::Convert>("convert"),
         InstanceMethod<&StreamWrap::AttentionForward>("attentionForward"),
         InstanceMethod<&StreamWrap::AttentionBackward>("attentionBackward"),
         InstanceMethod<&StreamWrap::MergeForward>("mergeForward"),
         InstanceMethod<&StreamWrap::MergeBackward>("mergeBackward"),
         InstanceMethod<&StreamWrap::Add>("add"),
         InstanceMethod<&StreamWrap::InjectFailure>("injectFailure"),
         InstanceMethod<&StreamWrap::Sleep>("sleep")});
  }

  // new NativeStream(device?: number): a CPU stream, or a CUDA stream on cuda:device (device >= 0).
  StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
    Napi::Env env = info.Env();
    const int device = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : kCpu;
    // The stream first: if it cannot be made, nothing else has been created.
    if (device >= 0) boundary(env, [&] { cuda_ = std::make_unique<cuda::DeviceStream>(device); });
    else cpu_ = std::make_unique<cpu::CpuStream>();
    device_ = device;
    channel_ = std::make_shared<Channel>();
    channel_->tsfn = Tsfn::New(env, "attnkit-stream", 0, 1, channel_.get());
    channel_->tsfn.Unref(env);
    // Registered after the thread-safe function, so it runs before the function's own teardown.
    hook_arg_ = new std::shared_ptr<Channel>(channel_);
    napi_add_env_cleanup_hook(env, &Channel::cleanup_hook, hook_arg_);
  }

  ~StreamWrap() override {
    napi_remove_env_cleanup_hook(Env(), &Channel::cleanup_hook, hook_arg_);
    channel_->close();
    delete hook_arg_;
  }

 private:
  Completion* new_completion(Napi::Env env, bool returns_buffer) {
    auto* c = new Completion{Napi::Promise::Deferred::New(env), Napi::Persistent(Value()), nullptr,
                             {}, returns_buffer};
    return c;
  }

  // Promise that settles when `task` has run (with its failure, or the stream's recorded error).
  Napi::Value enqueue_wait(Napi::Env env, cpu::Task task, Completion* c) {
    Napi::Value promise = c->deferred.Promise();
    if (channel_->pending++ == 0) channel_->tsfn.Ref(env);
    task.is_wait = true;
    auto channel = channel_;
    task.done = [c, channel](std::shared_ptr<const Failure> f) {
      c->failure = std::move(f);
      channel->post(c);  // if closed, the environment is gone and c is leaked on purpose
    };
    enqueue(std::move(task));
    return promise;
  }

  uint64_t enqueue(cpu::Task task) { return cuda_ ? cuda_->enqueue(std::move(task)) : cpu_->enqueue(std::move(task)); }

  // The op families that have no CUDA implementation yet.
  void cpu_only(const char* op) const {
    if (cuda_) fail("UNSUPPORTED", op, "not implemented on CUDA yet (the stream is on cuda:" + std::to_string(device_) + ")");
  }

  Napi::Value Synchronize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return enqueue_wait(env, cpu::Task{}, new_completion(env, false));
  }

  // read(storage, asFloat32: boolean) -> Promise<ArrayBuffer>
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return boundary(env, [&]() -> Napi::Value {
      // A CUDA stream reads its device's tensors and the host tensors it produced (copies to the CPU).
      StoragePtr s = unwrap(info[0], "toArray", "tensor", cuda_ ? kAnyDevice : kCpu);
      if (s->device >= 0 && s->device != device_) fail("DEVICE", "toArray", "the tensor is not on the stream's device");
      const bool as_f32 = info[1].ToBoolean().Value();
      Completion* c = new_completion(env, true);
      cpu::Task task;
      task.inputs = {s};
      void* h = cuda_ ? cuda_->handle() : nullptr;
      task.run = [s, as_f32, c, h] {
        const bool widen = as_f32 && (s->dtype == DType::Float16 || s->dtype == DType::BFloat16);
        c->bytes.resize(widen ? size_t(s->numel) * 4 : s->bytes);
        const void* src = s->data;
        std::vector<uint8_t> staged;
        if (s->device >= 0) {  // device to host first, then widen on the host
          staged.resize(s->bytes);
          cuda::copy_to_host(widen ? staged.data() : c->bytes.data(), s->data, s->bytes, h, "toArray");
          if (!widen) return;
          src = staged.data();
        }
        if (widen) cpu::convert(src, s->dtype, c->bytes.data(), DType::Float32, s->numel);
        else if (s->bytes) std::memcpy(c->bytes.data(), src, s->bytes);
      };
      return enqueue_wait(env, std::move(task), c);
    });
  }

  Napi::Value Randn(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      cpu_only("randn");
      StoragePtr s = unwrap(info[0], "randn", "out");
      uint64_t seed = uint64_t(info[1].As<Napi::Number>().Int64Value());
      cpu::Task task;
      task.outputs = {s};
      task.run = [s, seed] { cpu::randn_fill(s->data, s->dtype, s->numel, seed); };
      enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  Napi::Value Convert(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      // On a CUDA stream: device tensors of its device, or host tensors it produced.
      StoragePtr src = unwrap(info[0], "to", "tensor", cuda_ ? kAnyDevice : kCpu);
      StoragePtr dst = unwrap(info[1], "to", "out", cuda_ ? kAnyDevice : kCpu);
      if (src->numel != dst->numel) fail("SHAPE", "to", "element counts differ");
      if (src->device != dst->device || (src->device >= 0 && src->device != device_))
        fail("DEVICE", "to", "a conversion stays on one device, the stream's");
      cpu::Task task;
      task.inputs = {src};
      task.outputs = {dst};
      if (src->device >= 0) {
        void* h = cuda_->handle();
        task.run = [src, dst, h] { cuda::convert(src->data, src->dtype, dst->data, dst->dtype, src->numel, h, "to"); };
      } else {
        task.run = [src, dst] { cpu::convert(src->data, src->dtype, dst->data, dst->dtype, src->numel); };
      }
      enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  // attentionForward(q, k, v, out, lse, {B, Nq, Nk, H, Hkv, D, Dv, scale, causal, left, right})
  Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      const char* op = "attention";
      Napi::Object o = get_obj(info[5]);
      AttentionFwdParams p;
      p.shape = read_shape(o, op);
      p.scale = float(get_num(o, "scale"));
      FwdIO io = unwrap_fwd(info, 0, p.shape, op, device_);
      p.dtype = io.q->dtype;
      const DenseMaskOptions mask = read_mask(o);
      if (cuda_) {
        check_cuda_attention(p.shape, p.dtype, false, op, {io.q, io.k, io.v, io.out, io.lse});
        void* h = cuda_->handle();
        enqueue_fwd(*cuda_, io, p, [mask, h](const AttentionFwdParams& x) { cuda::run_attention_forward(x, mask, h); });
        return info.Env().Undefined();
      }
      enqueue_fwd(*cpu_, io, p, [mask](const AttentionFwdParams& x) { cpu::attention_forward(x, mask); });
      return info.Env().Undefined();
    });
  }

  // attentionBackward(q, k, v, out, lse, dout, dlse|null, dq, dk, dv, params)
  Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      const char* op = "attentionBackward";
      Napi::Object o = get_obj(info[10]);
      AttentionBwdParams p;
      p.shape = read_shape(o, op);
      p.scale = float(get_num(o, "scale"));
      BwdIO io = unwrap_bwd(info, 0, p.shape, op, device_);
      p.dtype = io.q->dtype;
      const DenseMaskOptions mask = read_mask(o);
      if (cuda_) {
        check_cuda_attention(p.shape, p.dtype, true, op,
                             {io.q, io.k, io.v, io.out, io.lse, io.dout, io.dlse, io.dq, io.dk, io.dv});
        void* h = cuda_->handle();
        enqueue_bwd(*cuda_, io, p, [mask, h](const AttentionBwdParams& x) { cuda::run_attention_backward(x, mask, h); });
        return info.Env().Undefined();
      }
      enqueue_bwd(*cpu_, io, p, [mask](const AttentionBwdParams& x) { cpu::attention_backward(x, mask); });
      return info.Env().Undefined();
    });
  }

  // mergeForward(outs[], lses[], out, lse, {rows, dv})
  Napi::Value MergeForward(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      const char* op = "mergeAttention";
      cpu_only(op);
      auto outs = unwrap_list(info[0], op, "out"), lses = unwrap_list(info[1], op, "lse");
      StoragePtr out = unwrap(info[2], op, "out"), lse = unwrap(info[3], op, "lse");
      Napi::Object o = get_obj(info[4]);
      const int64_t rows = get_int(o, "rows"), dv = get_int(o, "dv");
      if (outs.empty() || outs.size() != lses.size() || dv < 1 || dv > 1024)
        fail("SHAPE", op, "invalid merge problem");
      for (size_t i = 0; i < outs.size(); ++i) {
        expect_numel(outs[i], rows * dv, out->dtype, op, "out");
        expect_numel(lses[i], rows, DType::Float32, op, "lse");
      }
      expect_numel(out, rows * dv, out->dtype, op, "out");
      expect_numel(lse, rows, DType::Float32, op, "lse");
      cpu::Task task;
      task.inputs = outs;
      task.inputs.insert(task.inputs.end(), lses.begin(), lses.end());
      task.outputs = {out, lse};
      task.run = [outs, lses, out, lse, rows, dv] {
        std::vector<const void*> op_(outs.size());
        std::vector<const float*> lp(outs.size());
        for (size_t i = 0; i < outs.size(); ++i) {
          op_[i] = outs[i]->data;
          lp[i] = static_cast<const float*>(lses[i]->data);
        }
        MergeParams p;
        p.rows = rows;
        p.dv = dv;
        p.dtype = out->dtype;
        p.parts = int(outs.size());
        p.outs = op_.data();
        p.lses = lp.data();
        p.out = out->data;
        p.lse = static_cast<float*>(lse->data);
        cpu::merge_forward(p);
      };
      enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  // mergeBackward(outs[], lses[], out, lse, dout, dlse|null, douts[], dlses[], {rows, dv})
  Napi::Value MergeBackward(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      const char* op = "mergeAttentionBackward";
      cpu_only(op);
      auto outs = unwrap_list(info[0], op, "out"), lses = unwrap_list(info[1], op, "lse");
      StoragePtr out = unwrap(info[2], op, "out"), lse = unwrap(info[3], op, "lse"),
                 dout = unwrap(info[4], op, "dOut");
      StoragePtr dlse = info[5].IsNull() || info[5].IsUndefined() ? nullptr : unwrap(info[5], op, "dLse");
      auto douts = unwrap_list(info[6], op, "dOut"), dlses = unwrap_list(info[7], op, "dLse");
      Napi::Object o = get_obj(info[8]);
      const int64_t rows = get_int(o, "rows"), dv = get_int(o, "dv");
      const size_t n = outs.size();
      if (n == 0 || lses.size() != n || douts.size() != n || dlses.size() != n || dv < 1 || dv > 1024)
        fail("SHAPE", op, "invalid merge problem");
      for (size_t i = 0; i < n; ++i) {
        expect_numel(outs[i], rows * dv, out->dtype, op, "out");
        expect_numel(douts[i], rows * dv, out->dtype, op, "dOut");
        expect_numel(lses[i], rows, DType::Float32, op, "lse");
        expect_numel(dlses[i], rows, DType::Float32, op, "dLse");
      }
      expect_numel(dout, rows * dv, out->dtype, op, "dOut");
      expect_numel(lse, rows, DType::Float32, op, "lse");
      if (dlse) expect_numel(dlse, rows, DType::Float32, op, "dLse");
      cpu::Task task;
      task.inputs = outs;
      task.inputs.insert(task.inputs.end(), lses.begin(), lses.end());
      task.inputs.insert(task.inputs.end(), {out, lse, dout});
      if (dlse) task.inputs.push_back(dlse);
      task.outputs = douts;
      task.outputs.insert(task.outputs.end(), dlses.begin(), dlses.end());
      task.run = [=] {
        std::vector<const void*> op_(n);
        std::vector<const float*> lp(n);
        std::vector<void*> dop(n);
        std::vector<float*> dlp(n);
        for (size_t i = 0; i < n; ++i) {
          op_[i] = outs[i]->data;
          lp[i] = static_cast<const float*>(lses[i]->data);
          dop[i] = douts[i]->data;
          dlp[i] = static_cast<float*>(dlses[i]->data);
        }
        MergeBwdParams p;
        p.rows = rows;
        p.dv = dv;
        p.dtype = out->dtype;
        p.parts = int(n);
        p.outs = op_.data();
        p.lses = lp.data();
        p.out = out->data;
        p.lse = static_cast<const float*>(lse->data);
        p.dout = dout->data;
        p.dlse = dlse ? static_cast<const float*>(dlse->data) : nullptr;
        p.douts = dop.data();
        p.dlses = dlp.data();
        cpu::merge_backward(p);
      };
      enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  // add(a, b, out): out = a + b elementwise, in float32 arithmetic (gradient accumulation).
  Napi::Value Add(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      const char* op = "add";
      cpu_only(op);
      StoragePtr a = unwrap(info[0], op, "a"), b = unwrap(info[1], op, "b"), out = unwrap(info[2], op, "out");
      expect_numel(b, a->numel, a->dtype, op, "b");
      expect_numel(out, a->numel, a->dtype, op, "out");
      cpu::Task task;
      task.inputs = {a, b};
      task.outputs = {out};
      task.run = [a, b, out] { cpu::add(a->data, b->data, out->data, a->dtype, a->numel); };
      enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  // Test hook: enqueues work that fails with `message` and marks `outputs` failed.
  Napi::Value InjectFailure(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      std::string message = info[0].As<Napi::String>().Utf8Value();
      cpu::Task task;
      if (info.Length() > 1 && info[1].IsArray()) task.outputs = unwrap_list(info[1], "test", "out", device_);
      task.run = [message] { throw Error("INTERNAL", "test", message); };
      enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  // Test hook: occupies the stream for `ms` milliseconds (on CUDA: the device, with a spin kernel).
  Napi::Value Sleep(const Napi::CallbackInfo& info) {
    int64_t ms = info[0].As<Napi::Number>().Int64Value();
    cpu::Task task;
    if (cuda_) {
      void* h = cuda_->handle();
      task.run = [ms, h] { cuda::spin(double(ms), h); };
    } else {
      task.run = [ms] { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); };
    }
    enqueue(std::move(task));
    return info.Env().Undefined();
  }

  // The synchronous checks of attention on CUDA: what the kernels support, and the 16-byte
  // alignment they need (memory from fromDevicePointer may have any alignment).
  static void check_cuda_attention(const AttentionShape& shape, DType dtype, bool backward, const char* op,
                                   std::initializer_list<StoragePtr> buffers) {
    const std::string why = cuda::attention_support(shape, dtype, backward);
    if (!why.empty()) fail("UNSUPPORTED", op, why);
    for (const StoragePtr& b : buffers)
      if (b && reinterpret_cast<uintptr_t>(b->data) % 16 != 0)
        fail("UNSUPPORTED", op, "the CUDA kernels need 16-byte aligned tensors (a tensor from fromDevicePointer is not)");
  }

 public:
  // Null for a CPU stream.
  cuda::DeviceStream* device_stream() { return cuda_.get(); }
  cpu::CpuStream* cpu_stream() { return cpu_.get(); }
  int device() const { return device_; }

 private:
  int device_ = kCpu;
  std::unique_ptr<cpu::CpuStream> cpu_;       // a CPU stream, or
  std::unique_ptr<cuda::DeviceStream> cuda_;  // a CUDA stream
  std::shared_ptr<Channel> channel_;
  std::shared_ptr<Channel>* hook_arg_ = nullptr;
};

static StreamWrap* unwrap_stream_wrap(const Napi::Value& v, const char* op) {
  AddonData* data = v.Env().GetInstanceData<AddonData>();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(data->stream_ctor.Value()))
    fail("ARGUMENT", op, "expected 'stream' to be a native stream");
  return StreamWrap::Unwrap(v.As<Napi::Object>());
}

cpu::CpuStream& unwrap_stream(const Napi::Value& v, const char* op) {
  StreamWrap* w = unwrap_stream_wrap(v, op);
  if (!w->cpu_stream())
    fail("UNSUPPORTED", op, "not implemented on CUDA yet (the stream is on cuda:" + std::to_string(w->device()) + ")");
  return *w->cpu_stream();
}

cuda::DeviceStream* unwrap_device_stream(const Napi::Value& v, const char* op) {
  return unwrap_stream_wrap(v, op)->device_stream();
}

// ------------------------------------------------------------------ module functions

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", cpu::isa_name(cpu::active_kernels().isa));
  o.Set("detectedIsa", cpu::isa_name(cpu::detected_isa()));
  o.Set("threads", cpu::ThreadPool::instance().size());
  cuda::CudaInfo ci = cuda::cuda_info();
  Napi::Object c = Napi::Object::New(env);
  c.Set("compiled", ci.compiled);
  c.Set("available", ci.available);
  c.Set("deviceCount", ci.device_count);
  c.Set("reason", ci.reason);
  c.Set("archs", ci.archs);
  c.Set("runtimeVersion", ci.runtime_version);
  c.Set("driverVersion", ci.driver_version);
  c.Set("attentionKernels", cuda::have_attention_kernels());
  Napi::Array devices = Napi::Array::New(env, ci.devices.size());
  for (size_t i = 0; i < ci.devices.size(); ++i) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("name", ci.devices[i].name);
    d.Set("computeCapability", std::to_string(ci.devices[i].major) + "." + std::to_string(ci.devices[i].minor));
    d.Set("memory", double(ci.devices[i].memory));
    d.Set("multiprocessors", ci.devices[i].multiprocessors);
    devices.Set(uint32_t(i), d);
  }
  c.Set("devices", devices);
  o.Set("cuda", c);
  return o;
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  std::string name = info[0].As<Napi::String>().Utf8Value();
  for (int i = 0; i <= int(cpu::Isa::Amx); ++i)
    if (name == cpu::isa_name(cpu::Isa(i))) return Napi::Boolean::New(info.Env(), cpu::set_isa(cpu::Isa(i)));
  return Napi::Boolean::New(info.Env(), false);
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("cpu", Napi::Number::New(info.Env(), double(cpu::live_bytes_cpu())));
  const cuda::CudaInfo ci = cuda::cuda_info();
  for (int d = 0; d < ci.device_count; ++d)
    o.Set("cuda:" + std::to_string(d), Napi::Number::New(info.Env(), double(cuda::live_bytes(d))));
  return o;
}

// Test hook: the dense mask policy evaluated on every element and tile of a small problem, so the
// suite can check exhaustively that classify/key_range/query_range agree with allows.
// denseMaskProbe(Nq, Nk, causal, left, right, tq, tk) -> {allows, classes, keyRanges, queryRanges}
Napi::Value DenseMaskProbe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto num = [&](int i) { return int64_t(info[i].As<Napi::Number>().Int64Value()); };
  const int64_t nq = num(0), nk = num(1), left = num(3), right = num(4), tq = num(5), tk = num(6);
  const bool causal = info[2].ToBoolean().Value();
  if (nq < 1 || nk < 1 || nq * nk > (1 << 22) || tq < 1 || tk < 1)
    throw make_error(env, "ARGUMENT", "denseMaskProbe", "denseMaskProbe: problem too large or empty");
  DenseMask m = DenseMask::make(nq, nk, causal, left, right);
  const int64_t nqt = ceil_div(nq, tq), nkt = ceil_div(nk, tk);
  Napi::Uint8Array allows = Napi::Uint8Array::New(env, size_t(nq * nk));
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t k = 0; k < nk; ++k) allows[size_t(q * nk + k)] = m.allows(q, k) ? 1 : 0;
  Napi::Int32Array classes = Napi::Int32Array::New(env, size_t(nqt * nkt));
  Napi::Int32Array key_ranges = Napi::Int32Array::New(env, size_t(2 * nqt));
  Napi::Int32Array query_ranges = Napi::Int32Array::New(env, size_t(2 * nkt));
  for (int64_t a = 0; a < nqt; ++a) {
    const int64_t q0 = a * tq, q1 = std::min(nq, q0 + tq);
    int64_t lo, hi;
    m.key_range(q0, q1, &lo, &hi);
    key_ranges[size_t(2 * a)] = int32_t(lo);
    key_ranges[size_t(2 * a + 1)] = int32_t(hi);
    for (int64_t b = 0; b < nkt; ++b) {
      const int64_t k0 = b * tk, k1 = std::min(nk, k0 + tk);
      classes[size_t(a * nkt + b)] = int32_t(m.classify(q0, q1, k0, k1));
    }
  }
  for (int64_t b = 0; b < nkt; ++b) {
    int64_t lo, hi;
    m.query_range(b * tk, std::min(nk, (b + 1) * tk), &lo, &hi);
    query_ranges[size_t(2 * b)] = int32_t(lo);
    query_ranges[size_t(2 * b + 1)] = int32_t(hi);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("allows", allows);
  o.Set("classes", classes);
  o.Set("keyRanges", key_ranges);
  o.Set("queryRanges", query_ranges);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  Napi::Function storage = StorageWrap::Init(env);
  Napi::Function stream = StreamWrap::Init(env);
  data->storage_ctor = Napi::Persistent(storage);
  data->stream_ctor = Napi::Persistent(stream);
  env.SetInstanceData(data);
  exports.Set("NativeStorage", storage);
  exports.Set("NativeStream", stream);
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("denseMaskProbe", Napi::Function::New(env, DenseMaskProbe));
  register_op_families(env, exports);
  return exports;
}

}  // namespace attnkit::napi

static Napi::Object InitAttnkit(Napi::Env env, Napi::Object exports) {
  return attnkit::napi::Init(env, exports);
}
NODE_API_MODULE(attnkit, InitAttnkit)
