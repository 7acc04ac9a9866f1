// Binding of block-sparse attention: bsForward / bsBackward. The BlockMask arrives as five int32
// buffers (full offsets/indices, partial offsets/indices, partial bitmaps); they are checked here
// completely (offsets monotone, indices in range and strictly increasing per row, bitmap size),
// because the kernels index with them.
#include "binding.h"

#include "../cpu/block_sparse.h"

namespace attnkit::napi {

MaskIO unwrap_mask(const Napi::Value& v, const char* op) {
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() != 5) fail("ARGUMENT", op, "expected the mask's five buffers");
  MaskIO io{unwrap(a.Get(0u), op, "mask.fullOffsets"), unwrap(a.Get(1u), op, "mask.fullIndices"),
            unwrap(a.Get(2u), op, "mask.partialOffsets"), unwrap(a.Get(3u), op, "mask.partialIndices"),
            unwrap(a.Get(4u), op, "mask.partialBits")};
  for (auto* s : {&io.full_off, &io.full_idx, &io.part_off, &io.part_idx, &io.part_bits})
    if ((*s)->dtype != DType::Int32) fail("DTYPE", op, "mask buffers must be int32");
  return io;
}

namespace {

void check_lists(const int32_t* off, int64_t rows, const cpu::StoragePtr& idx_s, int64_t kb,
                 const char* op, const char* what) {
  const int32_t* idx = static_cast<const int32_t*>(idx_s->data);
  // Lists may have spare capacity past off[rows] (selection ops allocate for the worst case).
  if (off[0] != 0 || off[rows] > idx_s->numel)
    fail("ARGUMENT", op, std::string("mask ") + what + " offsets do not match the index list");
  for (int64_t r = 0; r < rows; ++r) {
    if (off[r + 1] < off[r]) fail("ARGUMENT", op, std::string("mask ") + what + " offsets decrease");
    for (int64_t i = off[r]; i < off[r + 1]; ++i)
      if (idx[i] < 0 || idx[i] >= kb || (i > off[r] && idx[i] <= idx[i - 1]))
        fail("ARGUMENT", op, std::string("mask ") + what + " indices out of range or not increasing");
  }
}

// The mask view over the buffers (validated against the problem), for use on the worker.
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

// Re-validates the lists on the worker (the buffers may have been produced by enqueued work).
void check_view(const BlockMaskView& m, const MaskIO& io, const char* op) {
  const int64_t rows = m.B * m.H * m.qb;
  check_lists(m.full_off, rows, io.full_idx, m.kb, op, "full");
  check_lists(m.part_off, rows, io.part_idx, m.kb, op, "partial");
}

std::vector<cpu::StoragePtr> mask_inputs(const MaskIO& io) {
  return {io.full_off, io.full_idx, io.part_off, io.part_idx, io.part_bits};
}

// bsForward(stream, q, k, v, out, lse, maskBuffers[5], params)
Napi::Value BsForward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "blockSparseAttention";
    cpu::CpuStream& stream = unwrap_stream(info[0], op);
    MaskIO mio = unwrap_mask(info[6], op);
    Napi::Object o = get_obj(info[7]);
    AttentionFwdParams p;
    p.shape = read_shape(o, op);
    p.scale = float(get_num(o, "scale"));
    FwdIO io = unwrap_fwd(info, 1, p.shape, op);
    p.dtype = io.q->dtype;
    const BlockMaskView view = view_of(mio, o, p.shape, op);
    enqueue_fwd(stream, io, p, [view, mio, op](const AttentionFwdParams& x) {
      check_view(view, mio, op);
      cpu::block_sparse_forward(x, view);
    }, mask_inputs(mio));
    return info.Env().Undefined();
  });
}

// bsBackward(stream, q, k, v, out, lse, dout, dlse|null, dq, dk, dv, maskBuffers[5], params)
Napi::Value BsBackward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "blockSparseAttentionBackward";
    cpu::CpuStream& stream = unwrap_stream(info[0], op);
    MaskIO mio = unwrap_mask(info[11], op);
    Napi::Object o = get_obj(info[12]);
    AttentionBwdParams p;
    p.shape = read_shape(o, op);
    p.scale = float(get_num(o, "scale"));
    BwdIO io = unwrap_bwd(info, 1, p.shape, op);
    p.dtype = io.q->dtype;
    const BlockMaskView view = view_of(mio, o, p.shape, op);
    enqueue_bwd(stream, io, p, [view, mio, op](const AttentionBwdParams& x) {
      check_view(view, mio, op);
      cpu::block_sparse_backward(x, view);
    }, mask_inputs(mio));
    return info.Env().Undefined();
  });
}

}  // namespace

void register_block_sparse(Napi::Env env, Napi::Object exports) {
  exports.Set("bsForward", Napi::Function::New(env, BsForward));
  exports.Set("bsBackward", Napi::Function::New(env, BsBackward));
}

}  // namespace attnkit::napi
