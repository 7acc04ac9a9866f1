// Binding of the linear-attention family: linearForward, linearBackward and linearStep, module
// functions whose first argument is the native stream. TypeScript (src/ops/linear.ts) validates;
// this file re-checks what memory safety needs (element counts and dtypes against the shape, the
// decay array's length, the gate's element count) and enqueues the work. The gate's values (finite,
// <= 0) are checked by the kernel when it runs (the data may still be being written).
#include <memory>
#include <vector>

#include "binding.h"

#include "attnkit/linear.h"

namespace attnkit::napi {
namespace {

using runtime::StoragePtr;

StoragePtr unwrap_opt(const Napi::Value& v, const char* op, const char* arg, int device) {
  return v.IsNull() || v.IsUndefined() ? nullptr : unwrap(v, op, arg, device);
}

struct Problem {
  LinearShape shape;
  LinearOptions opt;
  std::shared_ptr<std::vector<double>> decay;
};

// {B, N, H, Hkv, D, Dv, normalize, causal, featureMap, scale, eps, decay: Float64Array[H]}
Problem read_problem(const Napi::Value& v, const char* op) {
  if (!v.IsObject()) fail("ARGUMENT", op, "expected the problem descriptor to be an object");
  Napi::Object o = get_obj(v);
  Problem p;
  LinearShape& s = p.shape;
  s.B = get_int(o, "B");
  s.N = get_int(o, "N");
  s.H = get_int(o, "H");
  s.Hkv = get_int(o, "Hkv");
  s.D = get_int(o, "D");
  s.Dv = get_int(o, "Dv");
  s.normalize = get_bool(o, "normalize");
  if (s.B < 1 || s.N < 0 || s.H < 1 || s.Hkv < 1 || s.H % s.Hkv != 0 || s.D < 1 || s.D > 1024 ||
      s.Dv < 1 || s.Dv > 1024)
    fail("SHAPE", op, "invalid problem shape");
  p.opt.causal = get_bool(o, "causal");
  const int64_t fm = get_int(o, "featureMap");
  if (fm < 0 || fm > 2) fail("ARGUMENT", op, "unknown feature map code");
  p.opt.feature_map = FeatureMap(fm);
  p.opt.scale = float(get_num(o, "scale"));
  p.opt.eps = float(get_num(o, "eps"));
  Napi::Value d = o.Get("decay");
  if (!d.IsTypedArray() || d.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    fail("ARGUMENT", op, "expected 'decay' to be a Float64Array");
  Napi::Float64Array da = d.As<Napi::Float64Array>();
  if (int64_t(da.ElementLength()) != s.H) fail("SHAPE", op, "'decay' must hold one value per head");
  p.decay = std::make_shared<std::vector<double>>(da.Data(), da.Data() + da.ElementLength());
  for (double x : *p.decay)
    if (!(x > 0.0 && x <= 1.0)) fail("ARGUMENT", op, "'decay' values must lie in (0, 1]");
  return p;
}

void check_qkv(const Problem& p, const StoragePtr& q, const StoragePtr& k, const StoragePtr& v,
               const char* op) {
  const LinearShape& s = p.shape;
  expect_numel(q, s.B * s.N * s.H * s.D, q->dtype, op, "q");
  if (q->dtype != DType::Float32 && q->dtype != DType::Float16 && q->dtype != DType::BFloat16)
    fail("DTYPE", op, "'q' must be float32, float16 or bfloat16");
  expect_numel(k, s.B * s.N * s.Hkv * s.D, q->dtype, op, "k");
  expect_numel(v, s.B * s.N * s.Hkv * s.Dv, q->dtype, op, "v");
}

int64_t state_numel(const LinearShape& s) { return s.B * s.H * s.D * s.state_cols(); }

// The optional gate (float32, [B, N, H]; the step: [B, H]) at info[i]: causal only.
StoragePtr read_gate(const Napi::CallbackInfo& info, size_t i, const Problem& pr, const char* op,
                     int dev) {
  StoragePtr g = info.Length() > i ? unwrap_opt(info[i], op, "gate", dev) : nullptr;
  if (!g) return g;
  const LinearShape& s = pr.shape;
  expect_numel(g, s.B * s.N * s.H, DType::Float32, op, "gate");
  if (!pr.opt.causal) fail("UNSUPPORTED", op, "'gate' needs causal attention");
  return g;
}

const float* f32(const StoragePtr& s) { return s ? static_cast<const float*>(s->data) : nullptr; }
float* f32m(const StoragePtr& s) { return s ? static_cast<float*>(s->data) : nullptr; }

// The fields every linear-attention descriptor shares (forward, backward, step): problem, options,
// decays (owned by the descriptor) and the input pointers.
template <typename Params>
void fill_inputs(ops::LinearArgs<Params>& a, const Problem& pr, const StoragePtr& q, const StoragePtr& k,
                 const StoragePtr& v, const StoragePtr& s0) {
  Params& p = a.p;
  a.decay = pr.decay;
  p.shape = pr.shape;
  p.opt = pr.opt;
  p.opt.decay = a.decay->data();
  p.dtype = q->dtype;
  p.q = q->data;
  p.k = k->data;
  p.v = v->data;
  p.state_in = f32(s0);
}

void add_gate(runtime::Task& task, LinearOptions& opt, const StoragePtr& g) {
  if (!g) return;
  task.inputs.push_back(g);
  opt.gate = f32(g);
}

ops::Request request_of(const Problem& pr, const StoragePtr& q) {
  ops::Request r;
  r.dtype = q->dtype;
  r.shape.B = pr.shape.B;
  r.shape.Nq = r.shape.Nk = pr.shape.N;
  r.shape.H = pr.shape.H;
  r.shape.Hkv = pr.shape.Hkv;
  r.shape.D = pr.shape.D;
  r.shape.Dv = pr.shape.Dv;
  r.device = q->device;
  return r;
}

// linearForward(stream, q, k, v, stateIn|null, out, stateOut|null, problem, gate|null)
Napi::Value LinearForward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "linearAttention";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    StoragePtr q = unwrap(info[1], op, "q", dev), k = unwrap(info[2], op, "k", dev),
               v = unwrap(info[3], op, "v", dev);
    StoragePtr s0 = unwrap_opt(info[4], op, "initialState", dev);
    StoragePtr out = unwrap(info[5], op, "out", dev);
    StoragePtr sT = unwrap_opt(info[6], op, "finalState", dev);
    Problem pr = read_problem(info[7], op);
    const LinearShape& s = pr.shape;
    check_qkv(pr, q, k, v, op);
    StoragePtr gate = read_gate(info, 8, pr, op, dev);
    expect_numel(out, s.B * s.N * s.H * s.Dv, q->dtype, op, "out");
    if (s0) expect_numel(s0, state_numel(s), DType::Float32, op, "initialState");
    if (sT) expect_numel(sT, state_numel(s), DType::Float32, op, "finalState");
    runtime::Task task;
    task.inputs = {q, k, v};
    if (s0) task.inputs.push_back(s0);
    task.outputs = {out};
    if (sT) task.outputs.push_back(sT);
    ops::LinearArgs<LinearFwdParams> a;
    fill_inputs(a, pr, q, k, v, s0);
    add_gate(task, a.p.opt, gate);
    a.p.out = out->data;
    a.p.state_out = f32m(sT);
    ops::enqueue(ops::kLinearForward, stream, request_of(pr, q), a, std::move(task));
    return info.Env().Undefined();
  });
}

// linearBackward(stream, q, k, v, stateIn|null, dOut, dFinalState|null, dq, dk, dv,
//                dInitialState|null, problem, gate|null, dGate|null)
Napi::Value LinearBackward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "linearAttentionBackward";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    StoragePtr q = unwrap(info[1], op, "q", dev), k = unwrap(info[2], op, "k", dev),
               v = unwrap(info[3], op, "v", dev);
    StoragePtr s0 = unwrap_opt(info[4], op, "initialState", dev);
    StoragePtr dout = unwrap(info[5], op, "dOut", dev);
    StoragePtr dsT = unwrap_opt(info[6], op, "dFinalState", dev);
    StoragePtr dq = unwrap(info[7], op, "dq", dev), dk = unwrap(info[8], op, "dk", dev),
               dv = unwrap(info[9], op, "dv", dev);
    StoragePtr ds0 = unwrap_opt(info[10], op, "dInitialState", dev);
    Problem pr = read_problem(info[11], op);
    const LinearShape& s = pr.shape;
    check_qkv(pr, q, k, v, op);
    StoragePtr gate = read_gate(info, 12, pr, op, dev);
    StoragePtr dgate = info.Length() > 13 ? unwrap_opt(info[13], op, "dGate", dev) : nullptr;
    if (bool(gate) != bool(dgate)) fail("ARGUMENT", op, "'dGate' is given exactly when 'gate' is");
    if (dgate) expect_numel(dgate, s.B * s.N * s.H, DType::Float32, op, "dGate");
    expect_numel(dout, s.B * s.N * s.H * s.Dv, q->dtype, op, "dOut");
    expect_numel(dq, s.B * s.N * s.H * s.D, q->dtype, op, "dq");
    expect_numel(dk, s.B * s.N * s.Hkv * s.D, q->dtype, op, "dk");
    expect_numel(dv, s.B * s.N * s.Hkv * s.Dv, q->dtype, op, "dv");
    if (s0) expect_numel(s0, state_numel(s), DType::Float32, op, "initialState");
    if (dsT) expect_numel(dsT, state_numel(s), DType::Float32, op, "dFinalState");
    if (ds0) expect_numel(ds0, state_numel(s), DType::Float32, op, "dInitialState");
    runtime::Task task;
    task.inputs = {q, k, v, dout};
    if (s0) task.inputs.push_back(s0);
    if (dsT) task.inputs.push_back(dsT);
    task.outputs = {dq, dk, dv};
    if (ds0) task.outputs.push_back(ds0);
    ops::LinearArgs<LinearBwdParams> a;
    fill_inputs(a, pr, q, k, v, s0);
    add_gate(task, a.p.opt, gate);
    if (dgate) task.outputs.push_back(dgate);
    a.p.dgate = f32m(dgate);
    a.p.dout = dout->data;
    a.p.dstate_out = f32(dsT);
    a.p.dq = dq->data;
    a.p.dk = dk->data;
    a.p.dv = dv->data;
    a.p.dstate_in = f32m(ds0);
    ops::enqueue(ops::kLinearBackward, stream, request_of(pr, q), a, std::move(task));
    return info.Env().Undefined();
  });
}

// linearStep(stream, q, k, v, stateIn|null, out, stateOut, problem, gate|null) with problem.N == 1
Napi::Value LinearStep(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "linearAttentionStep";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    StoragePtr q = unwrap(info[1], op, "q", dev), k = unwrap(info[2], op, "k", dev),
               v = unwrap(info[3], op, "v", dev);
    StoragePtr s0 = unwrap_opt(info[4], op, "state", dev);
    StoragePtr out = unwrap(info[5], op, "out", dev);
    StoragePtr s1 = unwrap(info[6], op, "newState", dev);
    Problem pr = read_problem(info[7], op);
    const LinearShape& s = pr.shape;
    if (s.N != 1) fail("SHAPE", op, "a step takes one token per sequence");
    check_qkv(pr, q, k, v, op);
    StoragePtr gate = read_gate(info, 8, pr, op, dev);
    expect_numel(out, s.B * s.H * s.Dv, q->dtype, op, "out");
    if (s0) expect_numel(s0, state_numel(s), DType::Float32, op, "state");
    expect_numel(s1, state_numel(s), DType::Float32, op, "newState");
    if (s0 == s1) fail("ARGUMENT", op, "the new state must not alias the old one");
    runtime::Task task;
    task.inputs = {q, k, v};
    if (s0) task.inputs.push_back(s0);
    task.outputs = {out, s1};
    ops::LinearArgs<LinearStepParams> a;
    fill_inputs(a, pr, q, k, v, s0);
    add_gate(task, a.p.opt, gate);
    a.p.out = out->data;
    a.p.state_out = f32m(s1);
    ops::enqueue(ops::kLinearStep, stream, request_of(pr, q), a, std::move(task));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_linear(Napi::Env env, Napi::Object exports) {
  exports.Set("linearForward", Napi::Function::New(env, LinearForward, "linearForward"));
  exports.Set("linearBackward", Napi::Function::New(env, LinearBackward, "linearBackward"));
  exports.Set("linearStep", Napi::Function::New(env, LinearStep, "linearStep"));
}

}  // namespace attnkit::napi
