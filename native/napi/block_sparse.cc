// Binding of block-sparse attention: bsForward / bsBackward, and bsPlanInts (the size of a CUDA
// mask's device plan). The BlockMask arrives as five int32 buffers (full offsets/indices, partial
// offsets/indices, partial bitmaps): their sizes are checked here, their lists when the work runs on
// the CPU (ops.cc); on CUDA the lists come from a validated host mask (uploaded by BlockMask.to) or
// a selection kernel, and the plan kernel clamps what it reads to the buffers.
#include "binding.h"


namespace attnkit::napi {

MaskIO unwrap_mask(const Napi::Value& v, const char* op, int device) {
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() != 5) fail("ARGUMENT", op, "expected the mask's five buffers");
  MaskIO io{unwrap(a.Get(0u), op, "mask.fullOffsets", device), unwrap(a.Get(1u), op, "mask.fullIndices", device),
            unwrap(a.Get(2u), op, "mask.partialOffsets", device), unwrap(a.Get(3u), op, "mask.partialIndices", device),
            unwrap(a.Get(4u), op, "mask.partialBits", device)};
  for (auto* s : {&io.full_off, &io.full_idx, &io.part_off, &io.part_idx, &io.part_bits})
    if ((*s)->dtype != DType::Int32) fail("DTYPE", op, "mask buffers must be int32");
  return io;
}

namespace {

BlockMaskView view_of(const MaskIO& io, const Napi::Object& o, const AttentionShape& s, const char* op) {
  BlockMaskView m;
  m.B = get_int(o, "maskB");
  m.H = get_int(o, "maskH");
  m.bq = get_int(o, "blockQ");
  m.bk = get_int(o, "blockK");
  m.nq = s.Nq;
  m.nk = s.Nk;
  auto pow2 = [](int64_t x) { return x >= 16 && x <= 128 && (x & (x - 1)) == 0; };
  if (!pow2(m.bq) || !pow2(m.bk) || (m.B != 1 && m.B != s.B) || (m.H != 1 && m.H != s.H))
    fail("ARGUMENT", op, "invalid block mask geometry");
  m.qb = ceil_div(m.nq, m.bq);
  m.kb = ceil_div(m.nk, m.bk);
  const int64_t rows = m.B * m.H * m.qb;
  if (io.full_off->numel != rows + 1 || io.part_off->numel != rows + 1)
    fail("SHAPE", op, "mask offsets do not match its geometry");
  if (io.part_bits->numel < io.part_idx->numel * m.bq * m.words())
    fail("SHAPE", op, "mask bitmaps do not match its partial blocks");
  m.full_off = static_cast<const int32_t*>(io.full_off->data);
  m.full_idx = static_cast<const int32_t*>(io.full_idx->data);
  m.part_off = static_cast<const int32_t*>(io.part_off->data);
  m.part_idx = static_cast<const int32_t*>(io.part_idx->data);
  m.part_bits = static_cast<const uint32_t*>(io.part_bits->data);
  return m;
}

// The mask's lists are re-validated when the work runs (ops.cc): they may come from enqueued work.
ops::BlockMaskCheck check_of(const MaskIO& io) { return {io.full_idx->numel, io.part_idx->numel}; }

std::vector<runtime::StoragePtr> mask_inputs(const MaskIO& io) {
  return {io.full_off, io.full_idx, io.part_off, io.part_idx, io.part_bits};
}

// A CUDA mask's device plan, params.plan (an int32 buffer cached with the mask, sized by
// plan_layout for its geometry and list capacities): built by this task when params.buildPlan (an
// output: later ops on any stream wait for it), read otherwise. Nothing on the CPU.
void bind_plan(ops::BlockSparsePlanBuffer& pb, runtime::Task& task, const Napi::Object& o, const BlockMaskView& m,
               const ops::BlockMaskCheck& c, int device, const char* op) {
  if (device < 0) return;
  if (!o.Has("plan")) fail("ARGUMENT", op, "a mask on CUDA needs its device plan");
  runtime::StoragePtr s = unwrap(o.Get("plan"), op, "mask plan", device);
  expect_numel(s, ops::block_sparse_plan_ints(m.B * m.H, m.nq, m.nk, m.bq, m.bk, c.full_capacity + c.partial_capacity),
               DType::Int32, op, "mask plan");
  pb.data = static_cast<int32_t*>(s->data);
  pb.ints = s->numel;
  pb.build = get_bool(o, "buildPlan");
  (pb.build ? task.outputs : task.inputs).push_back(s);
}

// bsPlanInts({maskB, maskH, Nq, Nk, blockQ, blockK, listed}): the plan buffer's int32 elements.
Napi::Value BsPlanInts(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    Napi::Object o = get_obj(info[0]);
    const int64_t ints = ops::block_sparse_plan_ints(get_int(o, "maskB") * get_int(o, "maskH"), get_int(o, "Nq"),
                                                     get_int(o, "Nk"), get_int(o, "blockQ"), get_int(o, "blockK"),
                                                     get_int(o, "listed"));
    return Napi::Number::New(info.Env(), double(ints));
  });
}

// bsForward(stream, q, k, v, out, lse, maskBuffers[5], params)
Napi::Value BsForward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "blockSparseAttention";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    MaskIO mio = unwrap_mask(info[6], op, stream.device());
    Napi::Object o = get_obj(info[7]);
    ops::BlockSparseFwdArgs a;
    a.p.shape = read_shape(o, op);
    a.p.scale = float(get_num(o, "scale"));
    FwdIO io = unwrap_fwd(info, 1, a.p.shape, op, stream.device());
    a.p.dtype = io.q->dtype;
    a.mask = view_of(mio, o, a.p.shape, op);
    a.check = check_of(mio);
    runtime::Task task = fwd_task(io, a.p, mask_inputs(mio));
    bind_plan(a.plan, task, o, a.mask, a.check, stream.device(), op);
    ops::enqueue(ops::kBlockSparseForward, stream, request(a.p.shape, a.p.dtype, stream.device()), a, std::move(task));
    return info.Env().Undefined();
  });
}

// bsBackward(stream, q, k, v, out, lse, dout, dlse|null, dq, dk, dv, maskBuffers[5], params)
Napi::Value BsBackward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "blockSparseAttentionBackward";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    MaskIO mio = unwrap_mask(info[11], op, stream.device());
    Napi::Object o = get_obj(info[12]);
    ops::BlockSparseBwdArgs a;
    a.p.shape = read_shape(o, op);
    a.p.scale = float(get_num(o, "scale"));
    BwdIO io = unwrap_bwd(info, 1, a.p.shape, op, stream.device());
    a.p.dtype = io.q->dtype;
    a.mask = view_of(mio, o, a.p.shape, op);
    a.check = check_of(mio);
    runtime::Task task = bwd_task(io, a.p, mask_inputs(mio));
    bind_plan(a.plan, task, o, a.mask, a.check, stream.device(), op);
    ops::enqueue(ops::kBlockSparseBackward, stream, request(a.p.shape, a.p.dtype, stream.device()), a, std::move(task));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_block_sparse(Napi::Env env, Napi::Object exports) {
  exports.Set("bsForward", Napi::Function::New(env, BsForward));
  exports.Set("bsBackward", Napi::Function::New(env, BsBackward));
  exports.Set("bsPlanInts", Napi::Function::New(env, BsPlanInts));
}

}  // namespace attnkit::napi
