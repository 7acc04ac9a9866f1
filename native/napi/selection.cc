// Binding of the run-time block selection ops: mobaSelect and xattnSelect write their raw scores,
// their selections and a BlockMask's five buffers (allocated by TypeScript with capacities for the
// worst case; the offsets say what is used).
#include "binding.h"


namespace attnkit::napi {
namespace {

SelectionInput read_input(const Napi::Object& o, const runtime::StoragePtr& q, const runtime::StoragePtr& k,
                          const char* op) {
  SelectionInput in;
  in.B = get_int(o, "B");
  in.Nq = get_int(o, "Nq");
  in.Nk = get_int(o, "Nk");
  in.H = get_int(o, "H");
  in.Hkv = get_int(o, "Hkv");
  in.D = get_int(o, "D");
  if (in.B < 1 || in.Nq < 1 || in.Nk < 1 || in.H < 1 || in.Hkv < 1 || in.H % in.Hkv || in.D < 1 ||
      in.D > 1024)
    fail("SHAPE", op, "invalid problem shape");
  in.dtype = q->dtype;
  expect_numel(q, in.B * in.Nq * in.H * in.D, in.dtype, op, "q");
  expect_numel(k, in.B * in.Nk * in.Hkv * in.D, in.dtype, op, "k");
  return in;
}

// The mask buffers as outputs with the given capacities (checked: they are written).
MaskOutput read_output(const MaskIO& io, int64_t rows, int64_t bq, int64_t bk, int64_t cap,
                       const char* op) {
  MaskOutput m;
  m.bq = bq;
  m.bk = bk;
  const int64_t per = bq * ((bk + 31) / 32);
  for (auto* s : {&io.full_off, &io.full_idx, &io.part_off, &io.part_idx, &io.part_bits})
    if ((*s)->dtype != DType::Int32) fail("DTYPE", op, "mask buffers must be int32");
  if (io.full_off->numel != rows + 1 || io.part_off->numel != rows + 1 || io.full_idx->numel < cap ||
      io.part_idx->numel < cap || io.part_bits->numel < cap * per)
    fail("SHAPE", op, "mask buffers are too small");
  m.full_cap = cap;
  m.part_cap = cap;
  return m;
}

void bind_mask(MaskOutput& m, const MaskIO& io) {
  m.full_off = static_cast<int32_t*>(io.full_off->data);
  m.full_idx = static_cast<int32_t*>(io.full_idx->data);
  m.part_off = static_cast<int32_t*>(io.part_off->data);
  m.part_idx = static_cast<int32_t*>(io.part_idx->data);
  m.part_bits = static_cast<uint32_t*>(io.part_bits->data);
}

std::vector<runtime::StoragePtr> mask_outputs(const MaskIO& io) {
  return {io.full_off, io.full_idx, io.part_off, io.part_idx, io.part_bits};
}

// mobaSelect(stream, q, k, scores, selected, maskBuffers[5], {B, Nq, Nk, H, Hkv, D, block, topk,
// causal, blockQ, blockK, capacity})
Napi::Value MobaSelect(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "mobaMask";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    auto q = unwrap(info[1], op, "q", dev), k = unwrap(info[2], op, "k", dev);
    auto scores = unwrap(info[3], op, "scores", dev), selected = unwrap(info[4], op, "selected", dev);
    MaskIO mio = unwrap_mask(info[5], op, dev);
    Napi::Object o = get_obj(info[6]);
    MobaParams p;
    p.in = read_input(o, q, k, op);
    p.block = get_int(o, "block");
    p.topk = get_int(o, "topk");
    p.causal = get_bool(o, "causal");
    const int64_t bq = get_int(o, "blockQ"), bk = get_int(o, "blockK");
    if (p.block < 16 || (p.block & (p.block - 1)) || p.topk < 1 || bk != std::min<int64_t>(p.block, 128) ||
        bq < 16 || bq > 128 || (bq & (bq - 1)))
      fail("ARGUMENT", op, "invalid MoBA parameters");
    const int64_t nb = ceil_div(p.in.Nk, p.block);
    expect_numel(scores, p.in.B * p.in.Nq * p.in.H * nb, DType::Float32, op, "scores");
    expect_numel(selected, p.in.B * p.in.Nq * p.in.H * p.topk, DType::Int32, op, "selected");
    p.mask = read_output(mio, p.in.B * p.in.H * ceil_div(p.in.Nq, bq), bq, bk, get_int(o, "capacity"), op);
    runtime::Task task;
    task.inputs = {q, k};
    task.outputs = mask_outputs(mio);
    task.outputs.insert(task.outputs.end(), {scores, selected});
    p.in.q = q->data;
    p.in.k = k->data;
    p.scores = static_cast<float*>(scores->data);
    p.selected = static_cast<int32_t*>(selected->data);
    bind_mask(p.mask, mio);
    ops::Request r;
    r.dtype = p.in.dtype;
    r.shape.D = r.shape.Dv = p.in.D;
    r.device = dev;
    ops::enqueue(ops::kMobaSelect, stream, r, p, std::move(task));
    return info.Env().Undefined();
  });
}

// xattnSelect(stream, q, k, scores, selected, maskBuffers[5], {B, Nq, Nk, H, Hkv, D, stride, block,
// threshold, causal, capacity})
Napi::Value XattnSelect(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "xattentionMask";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    const int dev = stream.device();
    auto q = unwrap(info[1], op, "q", dev), k = unwrap(info[2], op, "k", dev);
    auto scores = unwrap(info[3], op, "scores", dev), selected = unwrap(info[4], op, "selected", dev);
    MaskIO mio = unwrap_mask(info[5], op, dev);
    Napi::Object o = get_obj(info[6]);
    XattnParams p;
    p.in = read_input(o, q, k, op);
    p.stride = get_int(o, "stride");
    p.block = get_int(o, "block");
    p.threshold = float(get_num(o, "threshold"));
    p.causal = get_bool(o, "causal");
    if (p.block < 16 || p.block > 128 || (p.block & (p.block - 1)) || p.stride < 1 ||
        (p.stride & (p.stride - 1)) || p.block % p.stride || !(p.threshold >= 0.f && p.threshold <= 1.f))
      fail("ARGUMENT", op, "invalid XAttention parameters");
    const int64_t Qb = ceil_div(p.in.Nq, p.block), Kb = ceil_div(p.in.Nk, p.block);
    expect_numel(scores, p.in.B * p.in.H * Qb * Kb, DType::Float32, op, "scores");
    expect_numel(selected, p.in.B * p.in.H * Qb * Kb, DType::UInt8, op, "selected");
    p.mask = read_output(mio, p.in.B * p.in.H * Qb, p.block, p.block, get_int(o, "capacity"), op);
    runtime::Task task;
    task.inputs = {q, k};
    task.outputs = mask_outputs(mio);
    task.outputs.insert(task.outputs.end(), {scores, selected});
    p.in.q = q->data;
    p.in.k = k->data;
    p.scores = static_cast<float*>(scores->data);
    p.selected = static_cast<uint8_t*>(selected->data);
    bind_mask(p.mask, mio);
    ops::Request r;
    r.dtype = p.in.dtype;
    r.shape.D = r.shape.Dv = p.in.D;
    r.device = dev;
    ops::enqueue(ops::kXattentionSelect, stream, r, p, std::move(task));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_selection(Napi::Env env, Napi::Object exports) {
  exports.Set("mobaSelect", Napi::Function::New(env, MobaSelect));
  exports.Set("xattnSelect", Napi::Function::New(env, XattnSelect));
}

}  // namespace attnkit::napi
