// Binding of neighborhood attention: naForward, naBackward (enqueue on a stream), naPlan (tile
// statistics for `attnkit sim` and the tile-shape choice) and naMaskProbe (test hook: the policy
// evaluated on every position and tile of a small problem).
#include "binding.h"

#include "../cpu/neighborhood.h"  // the tile planner (neighborhoodPlan)
#include "attnkit/mask_neighborhood.h"

namespace attnkit::napi {
namespace {

NeighborhoodOptions read_na(const Napi::Object& o, const char* op) {
  NeighborhoodOptions n;
  n.rank = int(get_int(o, "rank"));
  if (n.rank < 1 || n.rank > 3) fail("UNSUPPORTED", op, "rank must be 1, 2 or 3");
  auto arr = [&](const char* key, int64_t* dst) {
    Napi::Array a = o.Get(key).As<Napi::Array>();
    if (a.Length() != uint32_t(n.rank)) fail("ARGUMENT", op, std::string("'") + key + "' has the wrong length");
    for (int i = 0; i < n.rank; ++i) dst[i] = int64_t(a.Get(uint32_t(i)).As<Napi::Number>().DoubleValue());
  };
  arr("size", n.size);
  arr("kernel", n.kernel);
  arr("stride", n.stride);
  arr("dilation", n.dilation);
  arr("tile", n.tile);
  Napi::Array c = o.Get("causal").As<Napi::Array>();
  int64_t tile_volume = 1;
  for (int i = 0; i < n.rank; ++i) {
    n.causal[i] = c.Get(uint32_t(i)).ToBoolean().Value();
    // Memory and termination safety only; TypeScript reports these with full messages.
    if (n.size[i] < 1 || n.kernel[i] < 2 || n.stride[i] < 1 || n.stride[i] > n.kernel[i] ||
        n.dilation[i] < 1 || n.kernel[i] * n.dilation[i] > n.size[i] || n.tile[i] < 1)
      fail("ARGUMENT", op, "invalid neighborhood parameters");
    tile_volume *= n.tile[i];
  }
  if (tile_volume != kTile) fail("ARGUMENT", op, "the tile shape must hold 64 tokens");
  return n;
}

int64_t tokens_of(const NeighborhoodOptions& n) {
  int64_t t = 1;
  for (int i = 0; i < n.rank; ++i) t *= n.size[i];
  return t;
}

AttentionShape read_na_shape(const Napi::Object& o, const NeighborhoodOptions& n, const char* op) {
  AttentionShape s;
  s.B = get_int(o, "B");
  s.H = get_int(o, "H");
  s.Hkv = get_int(o, "Hkv");
  s.D = get_int(o, "D");
  s.Dv = get_int(o, "Dv");
  s.Nq = s.Nk = tokens_of(n);
  if (s.B < 1 || s.H < 1 || s.Hkv < 1 || s.H % s.Hkv != 0 || s.D < 1 || s.D > 1024 || s.Dv < 1 ||
      s.Dv > 1024)
    fail("SHAPE", op, "invalid problem shape");
  return s;
}

// naForward(stream, q, k, v, out, lse, params)
Napi::Value NaForward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "neighborhood";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    Napi::Object o = get_obj(info[6]);
    ops::NeighborhoodFwdArgs a;
    a.na = read_na(o, op);
    a.p.shape = read_na_shape(o, a.na, op);
    a.p.scale = float(get_num(o, "scale"));
    FwdIO io = unwrap_fwd(info, 1, a.p.shape, op, stream.device());
    a.p.dtype = io.q->dtype;
    runtime::Task task = fwd_task(io, a.p);
    ops::enqueue(ops::kNeighborhoodForward, stream, request(a.p.shape, a.p.dtype, stream.device()), a, std::move(task));
    return info.Env().Undefined();
  });
}

// naBackward(stream, q, k, v, out, lse, dout, dlse|null, dq, dk, dv, params)
Napi::Value NaBackward(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&] {
    const char* op = "neighborhoodBackward";
    runtime::Stream& stream = unwrap_stream(info[0], op);
    Napi::Object o = get_obj(info[11]);
    ops::NeighborhoodBwdArgs a;
    a.na = read_na(o, op);
    a.p.shape = read_na_shape(o, a.na, op);
    a.p.scale = float(get_num(o, "scale"));
    BwdIO io = unwrap_bwd(info, 1, a.p.shape, op, stream.device());
    a.p.dtype = io.q->dtype;
    runtime::Task task = bwd_task(io, a.p);
    ops::enqueue(ops::kNeighborhoodBackward, stream, request(a.p.shape, a.p.dtype, stream.device()), a, std::move(task));
    return info.Env().Undefined();
  });
}

// naPlan(params) -> {densePairs, fullPairs, partialPairs, visible}
Napi::Value NaPlan(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&]() -> Napi::Value {
    NeighborhoodOptions na = read_na(get_obj(info[0]), "sim");
    NeighborhoodPlan plan = cpu::neighborhood_plan(na);
    Napi::Env env = info.Env();
    Napi::Object r = Napi::Object::New(env);
    r.Set("densePairs", Napi::Number::New(env, double(plan.dense_pairs)));
    r.Set("fullPairs", Napi::Number::New(env, double(plan.full_pairs)));
    r.Set("partialPairs", Napi::Number::New(env, double(plan.partial_pairs)));
    r.Set("visible", Napi::Number::New(env, double(plan.visible)));
    return r;
  });
}

// naMaskProbe(params) -> per group {tokens, classes, rowMasks, kvLists, qLists}
template <int R>
Napi::Array probe(Napi::Env env, const NeighborhoodOptions& na) {
  const auto mask = NeighborhoodMask<R>::make(na.size, na.kernel, na.stride, na.dilation, na.causal, na.tile);
  Napi::Array groups = Napi::Array::New(env);
  for (int64_t g = 0; g < mask.groups(); ++g) {
    const auto gp = mask.group(g);
    const int64_t nq = gp.q_tiles(), nk = gp.k_tiles();
    Napi::Int32Array tokens = Napi::Int32Array::New(env, size_t(nq * kTile));
    Napi::Int32Array classes = Napi::Int32Array::New(env, size_t(nq * nk));
    Napi::BigUint64Array masks = Napi::BigUint64Array::New(env, size_t(nq * kTile * nk));
    Napi::Array kv = Napi::Array::New(env), ql = Napi::Array::New(env);
    // What the kernels use: tile_masks and the tile token maps (row_mask / q_token / k_token, their
    // per-position forms, must agree; checked here so the probe covers both).
    int64_t qtok[kTile], ktok[kTile];
    uint64_t tm[kTile];
    for (int64_t qt = 0; qt < nq; ++qt) {
      gp.q_tile_tokens(qt, qtok);
      gp.k_tile_tokens(qt, ktok);
      for (int64_t j = 0; j < kTile; ++j) {
        const int64_t pos = qt * kTile + j;
        if (qtok[j] != gp.q_token(pos) || ktok[j] != gp.k_token(pos))
          fail("INTERNAL", "naMaskProbe", "tile token maps disagree with the per-position maps");
        tokens[size_t(pos)] = int32_t(qtok[j]);
      }
      for (int64_t kt = 0; kt < nk; ++kt) {
        gp.tile_masks(qt, kt, tm);
        for (int64_t j = 0; j < kTile; ++j) {
          if (tm[j] != gp.row_mask(qt * kTile + j, kt))
            fail("INTERNAL", "naMaskProbe", "tile_masks disagrees with row_mask");
          masks[size_t((qt * kTile + j) * nk + kt)] = tm[j];
        }
      }
    }
    for (int64_t qt = 0; qt < nq; ++qt) {
      Napi::Int32Array l = Napi::Int32Array::New(env, size_t(gp.kv_count(qt)));
      for (int64_t i = 0; i < int64_t(l.ElementLength()); ++i) l[size_t(i)] = int32_t(gp.kv_at(qt, i));
      kv.Set(uint32_t(qt), l);
      for (int64_t kt = 0; kt < nk; ++kt) classes[size_t(qt * nk + kt)] = int32_t(gp.classify(qt, kt));
    }
    for (int64_t kt = 0; kt < nk; ++kt) {
      Napi::Int32Array l = Napi::Int32Array::New(env, size_t(gp.q_count(kt)));
      for (int64_t i = 0; i < int64_t(l.ElementLength()); ++i) l[size_t(i)] = int32_t(gp.q_at(kt, i));
      ql.Set(uint32_t(kt), l);
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("tokens", tokens);
    o.Set("classes", classes);
    o.Set("rowMasks", masks);
    o.Set("kvLists", kv);
    o.Set("qLists", ql);
    o.Set("qTiles", Napi::Number::New(env, double(nq)));
    o.Set("kTiles", Napi::Number::New(env, double(nk)));
    groups.Set(uint32_t(g), o);
  }
  return groups;
}

Napi::Value NaMaskProbe(const Napi::CallbackInfo& info) {
  return boundary(info.Env(), [&]() -> Napi::Value {
    NeighborhoodOptions na = read_na(get_obj(info[0]), "naMaskProbe");
    if (tokens_of(na) > 4096) fail("ARGUMENT", "naMaskProbe", "problem too large for a probe");
    switch (na.rank) {
      case 1: return probe<1>(info.Env(), na);
      case 2: return probe<2>(info.Env(), na);
      default: return probe<3>(info.Env(), na);
    }
  });
}

}  // namespace

void register_neighborhood(Napi::Env env, Napi::Object exports) {
  exports.Set("naForward", Napi::Function::New(env, NaForward));
  exports.Set("naBackward", Napi::Function::New(env, NaBackward));
  exports.Set("naPlan", Napi::Function::New(env, NaPlan));
  exports.Set("naMaskProbe", Napi::Function::New(env, NaMaskProbe));
}

}  // namespace attnkit::napi
