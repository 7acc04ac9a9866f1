// The neighborhood family's runtime -> compile-time switch: the generated tables (generated/dispatch.h,
// from native/cuda/instantiations.json) of the fused attention kernels (../fmha/) instantiated with the
// neighborhood policy NeighborhoodMask<R> per rank, the tile shapes the policy may be built with, and
// the checks that turn a request into one of those entries or an attnkit::Error naming what this
// build has. Host code; compiles under nvcc (launch.cu) and g++ (the emulator tests run every entry).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "../fmha/dispatch.h"
#include "attnkit/mask_neighborhood.h"
#include "attnkit/neighborhood.h"

namespace attnkit::cuda::neighborhood {

struct TileShape {
  int rank;
  int64_t t[3];  // tokens per axis (1 past the rank)
};

}  // namespace attnkit::cuda::neighborhood

#include "generated/dispatch.h"

namespace attnkit::cuda::neighborhood {

template <int R>
using Mask = NeighborhoodMask<R>;
template <int R>
using Tab = fmha::Table<Mask<R>>;

inline std::string shape_text(const int64_t* t, int rank) {
  std::string s;
  for (int a = 0; a < rank; ++a) s += (a ? "x" : "") + std::to_string(t[a]);
  return s;
}

// Throws UNSUPPORTED unless the tile shape is one the table lists for the rank.
inline void check_tile(const NeighborhoodOptions& o, const char* op) {
  std::string compiled;
  for (const TileShape& ts : kTileShapes) {
    if (ts.rank != o.rank) continue;
    bool same = true;
    for (int a = 0; a < o.rank; ++a) same = same && ts.t[a] == o.tile[a];
    if (same) return;
    compiled += (compiled.empty() ? "" : ", ") + shape_text(ts.t, ts.rank);
  }
  throw Error("UNSUPPORTED", op,
              std::string(op) + " on CUDA: tile shape " + shape_text(o.tile, o.rank) +
                  " is not compiled into this build (compiled for rank " + std::to_string(o.rank) + ": " +
                  (compiled.empty() ? "none" : compiled) + ")");
}

// The request's entry of `entries` (dtype, head dims, heads, grid, tile shape), or Error.
template <typename Entry>
const Entry& select(const Entry* entries, int count, const AttentionShape& s, DType dtype, const NeighborhoodOptions& o,
                    const char* op) {
  if (dtype != DType::Float16 && dtype != DType::BFloat16)
    throw Error("UNSUPPORTED", op,
                std::string(op) + " on CUDA: dtype " + dtype_name(dtype) + " is not supported (float16 or bfloat16)");
  if (s.Dv != s.D)
    throw Error("UNSUPPORTED", op,
                std::string(op) + " on CUDA: the value head dim " + std::to_string(s.Dv) +
                    " must equal the query/key head dim " + std::to_string(s.D));
  const Entry* found = nullptr;
  for (int i = 0; i < count; ++i)
    if (entries[i].dtype == dtype && entries[i].head_dim == s.D) found = &entries[i];
  if (!found)
    throw Error("UNSUPPORTED", op,
                std::string(op) + " on CUDA: head dim " + std::to_string(s.D) + " for " + dtype_name(dtype) +
                    " and rank " + std::to_string(o.rank) + " is not compiled into this build (compiled: " +
                    fmha::head_dims(entries, count, dtype) + ")");
  if (s.B < 0 || s.H <= 0 || s.Hkv <= 0 || s.H % s.Hkv != 0)
    throw Error("SHAPE", op,
                std::string(op) + " on CUDA: expected H > 0 to be a multiple of Hkv > 0, received H = " +
                    std::to_string(s.H) + ", Hkv = " + std::to_string(s.Hkv));
  check_tile(o, op);
  int64_t groups = 1;
  for (int a = 0; a < o.rank; ++a) groups *= o.dilation[a];
  // Grid: x = query (key) tiles of the largest group, y = heads, z = batch x dilation groups.
  if (s.B * groups > 65535 || s.H > 65535 || (s.Nq + 63) / 64 > 0x7fffffff)
    throw Error("UNSUPPORTED", op,
                std::string(op) + " on CUDA: heads and batch x dilation groups (" + std::to_string(s.B * groups) +
                    ") must be < 65536");
  return *found;
}

inline void check_aligned(std::initializer_list<const void*> ptrs, const char* what, const char* op) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
      throw Error("UNSUPPORTED", op, std::string(op) + " on CUDA: " + what + " must be 16-byte aligned");
}

template <int R>
Mask<R> make_mask(const NeighborhoodOptions& o) {
  return Mask<R>::make(o.size, o.kernel, o.stride, o.dilation, o.causal, o.tile);
}

template <int R>
const fmha::FwdEntry<Mask<R>>& select_fwd(const AttentionFwdParams& p, const NeighborhoodOptions& o) {
  const auto& e = select(Tab<R>::fwd, Tab<R>::fwd_count, p.shape, p.dtype, o, "neighborhood");
  check_aligned({p.q, p.k, p.v, p.out}, "q, k, v and out", "neighborhood");
  return e;
}

template <int R>
const fmha::BwdEntry<Mask<R>>& select_bwd(const AttentionBwdParams& p, const NeighborhoodOptions& o) {
  const auto& e = select(Tab<R>::bwd, Tab<R>::bwd_count, p.shape, p.dtype, o, "neighborhoodBackward");
  check_aligned({p.q, p.k, p.v, p.out, p.dout, p.dq, p.dk, p.dv}, "q, k, v, out, dout, dq, dk and dv",
                "neighborhoodBackward");
  return e;
}

// f(std::integral_constant<int, R>) for the problem's rank.
template <typename F>
void with_rank(int rank, const char* op, F&& f) {
  switch (rank) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    default: throw Error("UNSUPPORTED", op, std::string(op) + ": rank must be 1, 2 or 3");
  }
}

}  // namespace attnkit::cuda::neighborhood
