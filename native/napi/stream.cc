// NativeStream: a stream of any backend (ops::make_stream), its waits (synchronize, toArray) and
// the way back to the JS thread. Completions return through a thread-safe function, so nothing
// touches JavaScript off the main thread.
#include <napi.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "binding.h"

namespace attnkit::napi {

using runtime::Failure;
using runtime::StoragePtr;

// ------------------------------------------------------------------ completions

struct Completion;
struct Channel;
void call_js(Napi::Env env, Napi::Function, Channel* ctx, Completion* c);
using Tsfn = Napi::TypedThreadSafeFunction<Channel, Completion, call_js>;

static std::atomic<int64_t> g_live_completions{0};
int64_t live_completions() { return g_live_completions.load(); }

// A pending wait: the promise to settle and what to settle it with. Counted (live_completions),
// so the tests can see that none is leaked, whichever way the environment ends.
struct Completion {
  Completion(Napi::Env env, Napi::Object stream_object, bool returns_buffer)
      : stream(Napi::Persistent(stream_object)), returns_buffer(returns_buffer) {
    if (napi_create_promise(env, &deferred, &promise) != napi_ok) throw Napi::Error::New(env);
    ++g_live_completions;
  }
  ~Completion() { --g_live_completions; }
  // Raw, because call_js must know whether settling was refused (node-addon-api's Deferred throws
  // either way). `promise` is valid only in the call that made the completion.
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  Napi::ObjectReference stream;  // keeps the stream (and its channel) alive while the wait is pending
  std::shared_ptr<const Failure> failure;
  std::vector<uint8_t> bytes;
  bool returns_buffer = false;
};

// The sink for a completion whose environment is gone or can no longer run JavaScript: frees
// what it owns without a single N-API call (callable on any thread). The promise never settles,
// as nothing can observe it; the reference is the environment's, which frees it at teardown.
void discard(Completion* c) {
  c->stream.SuppressDestruct();
  delete c;
}

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
  // The environment's "stopping" flag (AddonData): set by its cleanup hook, or by call_js the
  // first time N-API refuses to settle a promise there. Once set, nothing calls into JS.
  std::shared_ptr<std::atomic<bool>> stopping;

  // On a stream's worker. A completion that cannot be posted goes to the sink.
  void post(Completion* c) {
    std::lock_guard<std::mutex> lk(mu);
    if (!open || stopping->load() || tsfn.NonBlockingCall(c) != napi_ok) discard(c);
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

void call_js(Napi::Env env, Napi::Function, Channel* ch, Completion* c) {
  // env is null when the thread-safe function is torn down with this completion still queued.
  if (env == nullptr || ch->stopping->load()) return discard(c);
  std::unique_ptr<Completion> owned(c);
  napi_value value = nullptr;
  bool reject = true;
  try {
    if (--ch->pending == 0) ch->tsfn.Unref(env);
    if (c->failure) {
      value = make_error(env, c->failure->code, c->failure->op, c->failure->message).Value();
    } else if (c->returns_buffer) {
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, c->bytes.size());
      if (!c->bytes.empty()) std::memcpy(ab.Data(), c->bytes.data(), c->bytes.size());
      value = ab;
      reject = false;
    } else {
      value = env.Undefined();
      reject = false;
    }
  } catch (const Napi::Error& e) {
    value = e.Value();  // e.g. the ArrayBuffer could not be allocated: the wait rejects with it
    reject = true;
  }
  // Refused with napi_pending_exception when JavaScript can no longer run here (worker.terminate(),
  // exit; a stopping worker runs queued callbacks before any cleanup hook): then no later
  // completion of this environment tries. Deleting the reference (owned) needs no JavaScript.
  const napi_status st = reject ? napi_reject_deferred(env, c->deferred, value) : napi_resolve_deferred(env, c->deferred, value);
  if (st == napi_pending_exception) ch->stopping->store(true);
}

// ------------------------------------------------------------------ Stream

class StreamWrap : public Napi::ObjectWrap<StreamWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeStream",
                       {InstanceMethod<&StreamWrap::Synchronize>("synchronize"),
                        InstanceMethod<&StreamWrap::Read>("read"),
                        InstanceMethod<&StreamWrap::InjectFailure>("injectFailure"),
                        InstanceMethod<&StreamWrap::Sleep>("sleep")});
  }

  // new NativeStream(device?: number): a CPU stream, or a CUDA stream on cuda:device (device >= 0).
  StreamWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StreamWrap>(info) {
    Napi::Env env = info.Env();
    const int device = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : kCpu;
    // The stream first: if it cannot be made, nothing else has been created.
    boundary(env, [&] { stream_ = ops::make_stream(device < 0 ? kCpu : device); });
    channel_ = std::make_shared<Channel>();
    channel_->stopping = env.GetInstanceData<AddonData>()->stopping;
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

  runtime::Stream& stream() { return *stream_; }

 private:
  std::unique_ptr<Completion> new_completion(Napi::Env env, bool returns_buffer) {
    return std::make_unique<Completion>(env, Value(), returns_buffer);
  }

  // Promise that settles when `task` has run (with its failure, or the stream's recorded error).
  Napi::Value enqueue_wait(Napi::Env env, runtime::Task task, std::unique_ptr<Completion> owned) {
    Napi::Value promise(env, owned->promise);
    if (channel_->pending == 0) channel_->tsfn.Ref(env);
    ++channel_->pending;
    task.is_wait = true;
    auto channel = channel_;
    Completion* c = owned.release();  // from here on, the worker's post or the sink frees it
    task.done = [c, channel](std::shared_ptr<const Failure> f) {
      c->failure = std::move(f);
      channel->post(c);
    };
    stream_->enqueue(std::move(task));
    return promise;
  }

  Napi::Value Synchronize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return enqueue_wait(env, runtime::Task{}, new_completion(env, false));
  }

  // read(storage, asFloat32: boolean) -> Promise<ArrayBuffer>. A stream reads its device's tensors
  // and the host tensors it produced.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return boundary(env, [&]() -> Napi::Value {
      StoragePtr s = unwrap(info[0], "toArray", "tensor", kAnyDevice);
      if (s->device != kCpu && s->device != stream_->device())
        fail("DEVICE", "toArray", "the tensor is not on the stream's device");
      auto run = ops::kernel_for(ops::kRead, ops::Request{s->dtype, {}, s->device});
      std::unique_ptr<Completion> c = new_completion(env, true);
      ops::ReadArgs a;
      a.src = s->data;
      a.dtype = s->dtype;
      a.numel = s->numel;
      a.bytes = s->bytes;
      a.widen = info[1].ToBoolean().Value() && (s->dtype == DType::Float16 || s->dtype == DType::BFloat16);
      a.dst = &c->bytes;
      runtime::Task task;
      task.inputs = {s};
      void* h = stream_->handle();
      task.run = [run, a, h] { run(a, h); };
      return enqueue_wait(env, std::move(task), std::move(c));
    });
  }

  // Test hook: enqueues work that fails with `message` and marks `outputs` failed.
  Napi::Value InjectFailure(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      std::string message = info[0].As<Napi::String>().Utf8Value();
      runtime::Task task;
      if (info.Length() > 1 && info[1].IsArray()) task.outputs = unwrap_list(info[1], "test", "out", stream_->device());
      task.run = [message] { throw Error("INTERNAL", "test", message); };
      stream_->enqueue(std::move(task));
      return info.Env().Undefined();
    });
  }

  // Test hook: occupies the stream for `ms` milliseconds (on CUDA: the device, with a spin kernel).
  Napi::Value Sleep(const Napi::CallbackInfo& info) {
    return boundary(info.Env(), [&] {
      ops::SleepArgs a{info[0].As<Napi::Number>().Int64Value()};
      ops::enqueue(ops::kSleep, *stream_, ops::Request{DType::Float32, {}, stream_->device()}, a, runtime::Task{});
      return info.Env().Undefined();
    });
  }

  std::unique_ptr<runtime::Stream> stream_;
  std::shared_ptr<Channel> channel_;
  std::shared_ptr<Channel>* hook_arg_ = nullptr;
};

Napi::Function stream_class(Napi::Env env) { return StreamWrap::Init(env); }

runtime::Stream& unwrap_stream(const Napi::Value& v, const char* op) {
  AddonData* data = v.Env().GetInstanceData<AddonData>();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(data->stream_ctor.Value()))
    fail("ARGUMENT", op, "expected 'stream' to be a native stream");
  return StreamWrap::Unwrap(v.As<Napi::Object>())->stream();
}

}  // namespace attnkit::napi
