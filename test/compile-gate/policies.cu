// The mask policies (native/include/attnkit/mask_*.h) as device code, before any kernel uses them:
// compiled by the compile gate for sm_80 and sm_90 (test/compile-gate.test.ts), which fails on
// local memory and spills as for every kernel. One kernel per policy and tile shape (the 64 x 64
// shape of the CPU kernels and 128 x 64) calls every per-thread method a device kernel uses: each
// thread takes one (query tile, key tile, query position, key position) and writes what the
// methods return, so none is optimized away. tile_masks and the q/k_tile_tokens forms are the CPU's
// whole-tile methods (a table per thread); test/compile-gate/policies_host.cc covers them with the
// rest under AddressSanitizer and UBSan.
#include <cstdint>

#include "attnkit/mask_block_sparse.h"
#include "attnkit/mask_dense.h"
#include "attnkit/mask_neighborhood.h"

namespace {

using attnkit::TileClass;

// What one thread of a kernel asks a group view (see attnkit/mask.h).
template <int QTile, int KTile, typename Group>
__device__ __forceinline__ void exercise(const Group& gp, int64_t* out, uint64_t* masks) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nq = gp.q_tiles(), nk = gp.k_tiles();
  const int64_t qt = t % nq, kt = (t / nq) % nk;
  const int64_t qp = qt * QTile + threadIdx.x % QTile, kp = kt * KTile + threadIdx.y % KTile;
  int64_t acc = gp.q_rows(qt) + gp.q_token(qp) + gp.k_token(kp) + (gp.allows(qp, kp) ? 1 : 0);
  acc += int64_t(gp.classify(qt, kt));
  for (int64_t i = 0, n = gp.kv_count(qt); i < n; ++i) acc += gp.kv_at(qt, i);
  for (int64_t i = 0, n = gp.q_count(kt); i < n; ++i) acc += gp.q_at(kt, i);
  out[t] = acc;
  masks[t] = gp.row_mask(qp, kt);
}

template <int QTile, int KTile>
__global__ void dense_policy(attnkit::DenseMaskT<QTile, KTile> mask, int64_t* out, uint64_t* masks) {
  exercise<QTile, KTile>(mask.group(0, blockIdx.y, blockIdx.z), out, masks);
  if (threadIdx.x == 0) out[0] += mask.groups() + mask.max_q_tiles() + mask.max_k_tiles();
}

template <int QTile, int KTile>
__global__ void block_sparse_policy(attnkit::BlockSparseMaskT<QTile, KTile> mask, int64_t* out, uint64_t* masks) {
  exercise<QTile, KTile>(mask.group(0, blockIdx.y, blockIdx.z), out, masks);
  if (threadIdx.x == 0) out[0] += mask.groups() + mask.max_q_tiles() + mask.max_k_tiles();
}

template <int R, int QTile, int KTile>
__global__ void neighborhood_policy(attnkit::NeighborhoodMaskT<R, QTile, KTile> mask, int64_t* out, uint64_t* masks) {
  exercise<QTile, KTile>(mask.group(blockIdx.y % mask.groups(), blockIdx.y, blockIdx.z), out, masks);
  if (threadIdx.x == 0) out[0] += mask.groups() + mask.max_q_tiles() + mask.max_k_tiles();
}

}  // namespace

// The instantiations the gate compiles, taken by address so that each kernel is emitted.
extern void* const policy_kernels[];
void* const policy_kernels[] = {
    reinterpret_cast<void*>(&dense_policy<64, 64>),
    reinterpret_cast<void*>(&dense_policy<128, 64>),
    reinterpret_cast<void*>(&block_sparse_policy<64, 64>),
    reinterpret_cast<void*>(&block_sparse_policy<128, 64>),
    reinterpret_cast<void*>(&neighborhood_policy<1, 64, 64>),
    reinterpret_cast<void*>(&neighborhood_policy<2, 64, 64>),
    reinterpret_cast<void*>(&neighborhood_policy<3, 64, 64>),
    reinterpret_cast<void*>(&neighborhood_policy<1, 128, 64>),
    reinterpret_cast<void*>(&neighborhood_policy<2, 128, 64>),
    reinterpret_cast<void*>(&neighborhood_policy<3, 128, 64>),
};
