// Binding of dense fused attention, attention merging and the elementwise tensor ops (to, add,
// randn). Each reads the call into its op's descriptor and hands it to ops::enqueue.
#include <napi.h>

#include <memory>
#include <vector>

#include "binding.h"

namespace attnkit::napi {
namespace {

using runtime::StoragePtr;

DenseMaskOptions read_mask(const Napi::Object& o) {
  DenseMaskOptions m;
  m.causal = get_bool(o, "causal");
  m.left = get_int(o, "left");
  m.right = get_int(o, "right");
  return m;
}

// attentionForward(stream, q, k, v, out, lse, {B, Nq, Nk, H, Hkv, D, Dv, scale, causal, left, right})
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "attention";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    Napi::Object o = get_obj(info[6]);
    ops::DenseFwdArgs a;
    a.p.shape = read_shape(o, op);
    a.p.scale = float(get_num(o, "scale"));
    a.mask = read_mask(o);
    FwdIO io = unwrap_fwd(info, 1, a.p.shape, op, stream.device());
    a.p.dtype = io.q->dtype;
    runtime::Task task = fwd_task(io, a.p);
    ops::enqueue(ops::kAttentionForward, stream, request(a.p.shape, a.p.dtype, stream.device()), a, std::move(task));
    return info.Env().Undefined();
  });
}

// attentionBackward(stream, q, k, v, out, lse, dout, dlse|null, dq, dk, dv, params)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "attentionBackward";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    Napi::Object o = get_obj(info[11]);
    ops::DenseBwdArgs a;
    a.p.shape = read_shape(o, op);
    a.p.scale = float(get_num(o, "scale"));
    a.mask = read_mask(o);
    BwdIO io = unwrap_bwd(info, 1, a.p.shape, op, stream.device());
    a.p.dtype = io.q->dtype;
    runtime::Task task = bwd_task(io, a.p);
    ops::enqueue(ops::kAttentionBackward, stream, request(a.p.shape, a.p.dtype, stream.device()), a, std::move(task));
    return info.Env().Undefined();
  });
}

template <typename T>
std::shared_ptr<std::vector<T>> pointers(const std::vector<StoragePtr>& s) {
  auto v = std::make_shared<std::vector<T>>();
  for (const StoragePtr& x : s) v->push_back(static_cast<T>(x->data));
  return v;
}

// The merge problem {rows, dv}, checked against the parts.
void read_merge(const Napi::Object& o, int64_t* rows, int64_t* dv, size_t parts, const char* op) {
  *rows = get_int(o, "rows");
  *dv = get_int(o, "dv");
  if (parts == 0 || *dv < 1 || *dv > 1024 || *rows < 0) fail("SHAPE", op, "invalid merge problem");
}

// What a merge asks of a backend: the value head dim and the number of parts.
ops::Request merge_request(int64_t dv, int parts, DType dtype, int device) {
  AttentionShape s{};
  s.Dv = dv;
  ops::Request r = request(s, dtype, device);
  r.parts = parts;
  return r;
}

// mergeForward(stream, outs[], lses[], out, lse, {rows, dv})
Napi::Value MergeForward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "mergeAttention";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    auto outs = unwrap_list(info[1], op, "out", dev), lses = unwrap_list(info[2], op, "lse", dev);
    StoragePtr out = unwrap(info[3], op, "out", dev), lse = unwrap(info[4], op, "lse", dev);
    ops::MergeFwdArgs a;
    read_merge(get_obj(info[5]), &a.p.rows, &a.p.dv, outs.size(), op);
    if (outs.size() != lses.size()) fail("SHAPE", op, "invalid merge problem");
    for (size_t i = 0; i < outs.size(); ++i) {
      expect_numel(outs[i], a.p.rows * a.p.dv, out->dtype, op, "out");
      expect_numel(lses[i], a.p.rows, DType::Float32, op, "lse");
    }
    expect_numel(out, a.p.rows * a.p.dv, out->dtype, op, "out");
    expect_numel(lse, a.p.rows, DType::Float32, op, "lse");
    a.outs = pointers<const void*>(outs);
    a.lses = pointers<const float*>(lses);
    a.p.dtype = out->dtype;
    a.p.parts = int(outs.size());
    a.p.outs = a.outs->data();
    a.p.lses = a.lses->data();
    a.p.out = out->data;
    a.p.lse = static_cast<float*>(lse->data);
    runtime::Task task;
    task.inputs = outs;
    task.inputs.insert(task.inputs.end(), lses.begin(), lses.end());
    task.outputs = {out, lse};
    ops::enqueue(ops::kMergeForward, stream, merge_request(a.p.dv, a.p.parts, a.p.dtype, dev), a, std::move(task));
    return info.Env().Undefined();
  });
}

// mergeBackward(stream, outs[], lses[], out, lse, dout, dlse|null, douts[], dlses[], {rows, dv})
Napi::Value MergeBackward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "mergeAttentionBackward";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    auto outs = unwrap_list(info[1], op, "out", dev), lses = unwrap_list(info[2], op, "lse", dev);
    StoragePtr out = unwrap(info[3], op, "out", dev), lse = unwrap(info[4], op, "lse", dev),
               dout = unwrap(info[5], op, "dOut", dev);
    StoragePtr dlse = info[6].IsNull() || info[6].IsUndefined() ? nullptr : unwrap(info[6], op, "dLse", dev);
    auto douts = unwrap_list(info[7], op, "dOut", dev), dlses = unwrap_list(info[8], op, "dLse", dev);
    const size_t n = outs.size();
    ops::MergeBwdArgs a;
    read_merge(get_obj(info[9]), &a.p.rows, &a.p.dv, n, op);
    if (lses.size() != n || douts.size() != n || dlses.size() != n) fail("SHAPE", op, "invalid merge problem");
    const int64_t rows = a.p.rows, dv = a.p.dv;
    for (size_t i = 0; i < n; ++i) {
      expect_numel(outs[i], rows * dv, out->dtype, op, "out");
      expect_numel(douts[i], rows * dv, out->dtype, op, "dOut");
      expect_numel(lses[i], rows, DType::Float32, op, "lse");
      expect_numel(dlses[i], rows, DType::Float32, op, "dLse");
    }
    expect_numel(dout, rows * dv, out->dtype, op, "dOut");
    expect_numel(lse, rows, DType::Float32, op, "lse");
    if (dlse) expect_numel(dlse, rows, DType::Float32, op, "dLse");
    a.outs = pointers<const void*>(outs);
    a.lses = pointers<const float*>(lses);
    a.douts = pointers<void*>(douts);
    a.dlses = pointers<float*>(dlses);
    a.p.dtype = out->dtype;
    a.p.parts = int(n);
    a.p.outs = a.outs->data();
    a.p.lses = a.lses->data();
    a.p.out = out->data;
    a.p.lse = static_cast<const float*>(lse->data);
    a.p.dout = dout->data;
    a.p.dlse = dlse ? static_cast<const float*>(dlse->data) : nullptr;
    a.p.douts = a.douts->data();
    a.p.dlses = a.dlses->data();
    runtime::Task task;
    task.inputs = outs;
    task.inputs.insert(task.inputs.end(), lses.begin(), lses.end());
    task.inputs.insert(task.inputs.end(), {out, lse, dout});
    if (dlse) task.inputs.push_back(dlse);
    task.outputs = douts;
    task.outputs.insert(task.outputs.end(), dlses.begin(), dlses.end());
    ops::enqueue(ops::kMergeBackward, stream, merge_request(dv, a.p.parts, a.p.dtype, dev), a, std::move(task));
    return info.Env().Undefined();
  });
}

// convert(stream, src, dst): dst = src in dst's dtype. A stream converts its device's tensors, or
// host tensors it produced; a conversion stays on one device.
Napi::Value Convert(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    runtime::Stream& stream = unwrap_stream(info[0], "to");
    StoragePtr src = unwrap(info[1], "to", "tensor", kAnyDevice), dst = unwrap(info[2], "to", "out", kAnyDevice);
    if (src->numel != dst->numel) fail("SHAPE", "to", "element counts differ");
    if (src->device != dst->device || (src->device >= 0 && src->device != stream.device()))
      fail("DEVICE", "to", "a conversion stays on one device, the stream's");
    runtime::Task task;
    task.inputs = {src};
    task.outputs = {dst};
    const ops::ConvertArgs a{src->data, src->dtype, dst->data, dst->dtype, src->numel};
    ops::enqueue(ops::kConvert, stream, ops::Request{src->dtype, {}, src->device}, a, std::move(task));
    return info.Env().Undefined();
  });
}

// add(stream, a, b, out): out = a + b elementwise, in float32 arithmetic (gradient accumulation).
Napi::Value Add(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "add";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    StoragePtr x = unwrap(info[1], op, "a", dev), y = unwrap(info[2], op, "b", dev), out = unwrap(info[3], op, "out", dev);
    expect_numel(y, x->numel, x->dtype, op, "b");
    expect_numel(out, x->numel, x->dtype, op, "out");
    runtime::Task task;
    task.inputs = {x, y};
    task.outputs = {out};
    const ops::AddArgs a{x->data, y->data, out->data, x->dtype, x->numel};
    ops::enqueue(ops::kAdd, stream, ops::Request{x->dtype, {}, dev}, a, std::move(task));
    return info.Env().Undefined();
  });
}

// randn(stream, out, seed): standard normal samples (a deterministic generator).
Napi::Value Randn(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    runtime::Stream& stream = unwrap_stream(info[0], "randn");
    StoragePtr s = unwrap(info[1], "randn", "out", stream.device());
    runtime::Task task;
    task.outputs = {s};
    const ops::RandnArgs a{s->data, s->dtype, s->numel, uint64_t(info[2].As<Napi::Number>().Int64Value())};
    ops::enqueue(ops::kRandn, stream, ops::Request{s->dtype, {}, stream.device()}, a, std::move(task));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_attention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBackward, "attentionBackward"));
  exports.Set("mergeForward", Napi::Function::New(env, MergeForward, "mergeForward"));
  exports.Set("mergeBackward", Napi::Function::New(env, MergeBackward, "mergeBackward"));
  exports.Set("convert", Napi::Function::New(env, Convert, "convert"));
  exports.Set("add", Napi::Function::New(env, Add, "add"));
  exports.Set("randn", Napi::Function::New(env, Randn, "randn"));
}

}  // namespace attnkit::napi
