// The binding's shared helpers (binding.h): the error boundary, plain-object readers, and the
// buffers and tasks of the fused softmax attention ops.
#include <napi.h>

#include "binding.h"

namespace attnkit::napi {

using runtime::StoragePtr;

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

ops::Request request(const AttentionShape& s, DType dtype, int device) {
  ops::Request r;
  r.dtype = dtype;
  r.shape = s;
  r.device = device;
  return r;
}

runtime::Task fwd_task(const FwdIO& io, AttentionFwdParams& p, const std::vector<StoragePtr>& extra) {
  p.q = io.q->data;
  p.k = io.k->data;
  p.v = io.v->data;
  p.out = io.out->data;
  p.lse = static_cast<float*>(io.lse->data);
  runtime::Task task;
  task.inputs = {io.q, io.k, io.v};
  task.inputs.insert(task.inputs.end(), extra.begin(), extra.end());
  task.outputs = {io.out, io.lse};
  return task;
}

runtime::Task bwd_task(const BwdIO& io, AttentionBwdParams& p, const std::vector<StoragePtr>& extra) {
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
  runtime::Task task;
  task.inputs = {io.q, io.k, io.v, io.out, io.lse, io.dout};
  if (io.dlse) task.inputs.push_back(io.dlse);
  task.inputs.insert(task.inputs.end(), extra.begin(), extra.end());
  task.outputs = {io.dq, io.dk, io.dv};
  return task;
}

}  // namespace attnkit::napi
