// NativeStorage: the handle behind a Tensor (src/tensor.ts), and unwrapping it for the ops.
#include <napi.h>

#include <algorithm>
#include <cstring>

#include "binding.h"

#include "../cpu/convert.h"

namespace attnkit::napi {

using runtime::Storage;
using runtime::StoragePtr;

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
      runtime::Stream* stream = info.Length() > 3 && info[3].IsObject() ? &unwrap_stream(info[3], "empty") : nullptr;
      const std::string op = info.Length() > 4 && info[4].IsString() ? info[4].As<Napi::String>().Utf8Value() : "empty";
      storage_ = ops::allocate(DType(dtype), int64_t(numel), stream, zero, op.c_str());
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

Napi::Function storage_class(Napi::Env env) { return StorageWrap::Init(env); }

}  // namespace attnkit::napi
