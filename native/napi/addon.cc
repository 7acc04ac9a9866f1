// The N-API addon: module functions (info, memory, the ISA switch, the support table, test hooks)
// and Init, which registers the two classes (storage.cc, stream.cc) and every op family's
// functions (families.cc). The binding's other files: binding.cc (helpers), attention.cc,
// neighborhood.cc, block_sparse.cc, linear.cc, selection.cc (ops), cuda.cc (the CUDA runtime's
// own functions). Every op goes through ops::enqueue (native/ops/dispatch.h).
#include <napi.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "binding.h"

#include "../cpu/kernels.h"
#include "../cpu/thread_pool.h"
#include "../cuda/device.h"
#include "../cuda/runtime.h"
#include "attnkit/error.h"
#include "attnkit/mask_dense.h"

namespace attnkit::napi {

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
  o.Set("cpu", Napi::Number::New(info.Env(), double(runtime::live_host_bytes())));
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

// supports(op, device, {dtype, B, Nq, Nk, H, Hkv, D, Dv}) -> "" or why the backend of `device`
// (-1: CPU) does not run it: the facade asks before it allocates any output.
Napi::Value Supports(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const std::string op = info[0].As<Napi::String>().Utf8Value();
    ops::Request r;
    r.device = info[1].As<Napi::Number>().Int32Value();
    Napi::Object o = get_obj(info[2]);
    const int64_t dtype = get_int(o, "dtype");
    if (dtype < 0 || dtype > 4) fail("DTYPE", op, "unknown dtype code");
    r.dtype = DType(dtype);
    for (auto [key, dst] : {std::pair{"B", &r.shape.B}, {"Nq", &r.shape.Nq}, {"Nk", &r.shape.Nk}, {"H", &r.shape.H},
                            {"Hkv", &r.shape.Hkv}, {"D", &r.shape.D}, {"Dv", &r.shape.Dv}})
      *dst = o.Has(key) ? get_int(o, key) : 0;
    r.parts = o.Has("parts") ? get_int(o, "parts") : 0;
    return Napi::String::New(info.Env(), ops::support_by_name(op, r));
  });
}

// opTable() -> [{op, cpu: boolean, cuda: boolean}]: which backend has a kernel for each op.
Napi::Value OpTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::vector<ops::OpRow> rows = ops::op_rows();
  Napi::Array a = Napi::Array::New(env, rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("op", rows[i].name);
    o.Set("cpu", rows[i].on[int(ops::Backend::Cpu)]);
    o.Set("cuda", rows[i].on[int(ops::Backend::Cuda)]);
    a.Set(uint32_t(i), o);
  }
  return a;
}

// Test hook: testHooks(arm?: {storage?: n, scratch?: n}) -> {liveCompletions, armed: {storage, scratch}}.
// Arms the next n allocation failures at each site (runtime::arm_alloc_failures; 0 disarms), and
// reports the waits not yet settled or discarded in the whole process (stream.cc).
Napi::Value TestHooks(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  constexpr std::pair<const char*, runtime::AllocSite> sites[] = {{"storage", runtime::AllocSite::Storage},
                                                                  {"scratch", runtime::AllocSite::Scratch}};
  if (info.Length() > 0 && info[0].IsObject()) {
    Napi::Object arm = info[0].As<Napi::Object>();
    for (auto [key, site] : sites)
      if (arm.Has(key)) runtime::arm_alloc_failures(site, get_int(arm, key));
  }
  Napi::Object armed = Napi::Object::New(env);
  for (auto [key, site] : sites) armed.Set(key, double(runtime::armed_alloc_failures(site)));
  Napi::Object o = Napi::Object::New(env);
  o.Set("liveCompletions", double(live_completions()));
  o.Set("armed", armed);
  return o;
}

// An environment cleanup hook: from here on no completion of this environment calls into
// JavaScript (stream.cc). Owns its argument; never removed, so it always runs and frees it.
static void mark_stopping(void* arg) {
  auto* stopping = static_cast<std::shared_ptr<std::atomic<bool>>*>(arg);
  (*stopping)->store(true);
  delete stopping;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // A worker terminated while it loads the addon makes any of these calls throw: nothing is
  // leaked (the data is owned until the environment takes it) and the throw becomes a pending
  // JS exception or, when JS can no longer run, nothing (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS).
  auto data = std::make_unique<AddonData>();
  Napi::Function storage = storage_class(env);
  Napi::Function stream = stream_class(env);
  data->storage_ctor = Napi::Persistent(storage);
  data->stream_ctor = Napi::Persistent(stream);
  napi_add_env_cleanup_hook(env, &mark_stopping, new std::shared_ptr<std::atomic<bool>>(data->stopping));
  env.SetInstanceData(data.release());
  exports.Set("NativeStorage", storage);
  exports.Set("NativeStream", stream);
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("supports", Napi::Function::New(env, Supports));
  exports.Set("opTable", Napi::Function::New(env, OpTable));
  exports.Set("denseMaskProbe", Napi::Function::New(env, DenseMaskProbe));
  exports.Set("testHooks", Napi::Function::New(env, TestHooks));
  register_op_families(env, exports);
  return exports;
}

}  // namespace attnkit::napi

static Napi::Object InitAttnkit(Napi::Env env, Napi::Object exports) {
  return attnkit::napi::Init(env, exports);
}
NODE_API_MODULE(attnkit, InitAttnkit)
