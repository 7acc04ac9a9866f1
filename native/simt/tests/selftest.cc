// Self-tests of the SIMT emulator: the CUDA built-ins, barriers, warp collectives and cp.async behave
// as on a GPU, and every check fires on the bug it exists for (missing barrier, divergent barriers, a
// thread leaving others at a barrier, partial-warp collectives, disagreeing collectives, deadlock,
// a missing cp.async wait, copies left in flight, shared-memory races between warps). Run by
// test/simt.test.ts in every thread order.
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "../../cuda/ptx.cuh"
#include "harness.h"

using simt_test::at;
using simt_test::is_poison;
namespace ptx = attnkit::ptx;

namespace {

constexpr unsigned kFull = 0xffffffffu;
std::atomic<int> line_a{0}, line_b{0}, line_c{0};  // call sites captured by kernels (same line as the call)

// ---- built-ins -------------------------------------------------------------------------------------

__global__ void builtins_kernel(uint32_t* out) {
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  uint32_t* o = out + 4 * (bid * nthreads + tid);
  o[0] = threadIdx.x | threadIdx.y << 8 | threadIdx.z << 16;
  o[1] = blockIdx.x | blockIdx.y << 8 | blockIdx.z << 16;
  o[2] = blockDim.x | blockDim.y << 8 | blockDim.z << 16;
  o[3] = gridDim.x | gridDim.y << 8 | gridDim.z << 16 | static_cast<unsigned>(warpSize) << 24;
}

SIMT_TEST(builtins) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);  // 24 threads: one partial warp
  std::vector<uint32_t> out(4 * 12 * 24, 0);
  auto* k = &builtins_kernel;
  ATTNKIT_LAUNCH(k, grid, block, 0, 0, out.data());
  for (unsigned bz = 0; bz < 2; ++bz)
    for (unsigned by = 0; by < 2; ++by)
      for (unsigned bx = 0; bx < 3; ++bx)
        for (unsigned tz = 0; tz < 2; ++tz)
          for (unsigned ty = 0; ty < 3; ++ty)
            for (unsigned tx = 0; tx < 4; ++tx) {
              const unsigned bid = bx + 3 * (by + 2 * bz), tid = tx + 4 * (ty + 3 * tz);
              const uint32_t* o = &out[4 * (bid * 24 + tid)];
              CHECK(o[0] == (tx | ty << 8 | tz << 16));
              CHECK(o[1] == (bx | by << 8 | bz << 16));
              CHECK(o[2] == (4u | 3u << 8 | 2u << 16));
              CHECK(o[3] == (3u | 2u << 8 | 2u << 16 | 32u << 24));
            }
}

// Kernel parameters are converted to the parameter types and copied per thread.
__global__ void params_kernel(int n, double scale, int* out) {
  n += static_cast<int>(threadIdx.x);  // each thread owns its copy of n
  out[threadIdx.x] = static_cast<int>(n * scale);
}

SIMT_TEST(kernel_parameters) {
  std::vector<int> out(64);
  auto* k = &params_kernel;
  const short n = 10;
  ATTNKIT_LAUNCH(k, 1, 64, 0, 0, n, 2, out.data());
  for (int i = 0; i < 64; ++i) CHECK(out[i] == 2 * (10 + i));
}

// ---- barriers ----------------------------------------------------------------------------------------

template <bool kWithBarrier>
__global__ void reduce_kernel(const float* in, float* out) {
  __shared__ float s[128];
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * 128 + t];
  if (kWithBarrier) __syncthreads();
  for (int stride = 64; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

std::vector<float> reduce_input(int blocks) {
  std::vector<float> in(static_cast<size_t>(blocks) * 128);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>((i * 7) % 13);  // exact sums
  return in;
}

float reduce_expected(const std::vector<float>& in, int b) {
  float s = 0;
  for (int i = 0; i < 128; ++i) s += in[static_cast<size_t>(b) * 128 + i];
  return s;
}

SIMT_TEST(reduction_with_barriers) {
  const int blocks = 8;
  const std::vector<float> in = reduce_input(blocks);
  std::vector<float> out(blocks);
  auto* k = &reduce_kernel<true>;
  ATTNKIT_LAUNCH(k, blocks, 128, 0, 0, in.data(), out.data());
  for (int b = 0; b < blocks; ++b) CHECK(out[b] == reduce_expected(in, b));
}

// The same reduction without the barrier between the stores and the first reads: the result depends
// on the thread order. test/simt.test.ts checks that the thread orders get it wrong.
SIMT_TEST(race_missing_barrier) {
  const int blocks = 4;
  const std::vector<float> in = reduce_input(blocks);
  std::vector<float> out(blocks);
  auto* k = &reduce_kernel<false>;
  ATTNKIT_LAUNCH(k, blocks, 128, 0, 0, in.data(), out.data());
  bool right = true;
  for (int b = 0; b < blocks; ++b) right = right && out[b] == reduce_expected(in, b);
  simt_test::note("race_missing_barrier", right ? "right" : "wrong");
}

// A two-stage ring as the attention kernels use it: every round refills the stage, waits at a
// barrier, then each thread reads a value another warp stored and passes two warp collectives (as a
// warp's last mma.sync follows its last read of a tile) before the next refill. Without the trailing
// barrier a warp that runs ahead refills the stage while another warp still has to read it. In
// forward or reversed lockstep the warps stay within one collective of each other, so the early
// refill lands after every read and the result is right: only SIMT_ORDER=ahead shows this race
// (test/simt.test.ts checks both facts).
template <bool kTrailingBarrier>
__global__ void ring_kernel(const float* in, float* out, int rounds) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  for (int r = 0; r < rounds; ++r) {
    s[t] = in[r * 64 + t];
    __syncthreads();
    const float v = s[(t + 32) % 64];
    __syncwarp();
    __syncwarp();
    out[r * 64 + t] = v;
    if (kTrailingBarrier) __syncthreads();  // the stage is read before the next round refills it
  }
}

bool ring_right(bool trailing_barrier) {
  const int rounds = 4;
  std::vector<float> in(64 * rounds), out(64 * rounds, 0.f);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i);
  auto* k = trailing_barrier ? &ring_kernel<true> : &ring_kernel<false>;
  ATTNKIT_LAUNCH(k, 1, 64, 0, 0, in.data(), out.data(), rounds);
  bool right = true;
  for (int r = 0; r < rounds; ++r)
    for (int t = 0; t < 64; ++t) right = right && out[r * 64 + t] == in[r * 64 + (t + 32) % 64];
  return right;
}

SIMT_TEST(ring_with_trailing_barrier) { CHECK(ring_right(true)); }

SIMT_TEST(ring_without_trailing_barrier) {
  simt_test::note("ring_without_trailing_barrier", ring_right(false) ? "right" : "wrong");
}

// ---- shared-memory hazards between warps (cp.async writes, ldmatrix reads) ----------------------------

// Two warps and one 8x8 f16 stage (8 rows of 16 bytes). Round 0: warp 0 loads the stage with cp.async;
// both warps read it with ldmatrix. Round 1: warp 1 refills it and both read again. kMode drops one
// barrier: 1 the one between the round-0 reads and the refill (write after read), 2 the one between
// the round-0 copy and its reads (read after write), 3 the round-1 one after the refill while warp 0
// also writes (write after write).
template <int kMode>
__global__ void stage_kernel(const uint16_t* in, uint32_t* out) {
  ATTNKIT_DYNAMIC_SMEM(uint16_t, s);
  const int t = threadIdx.x, lane = t % 32;
  if (t < 8) { line_c = __LINE__; ptx::cp_async_16(s + t * 8, in + t * 8); }
  ptx::cp_async_wait_all();
  if (kMode != 2) __syncthreads();
  uint32_t r[1];
  line_a = __LINE__; ptx::ldmatrix_x1(r, s + (lane % 8) * 8);
  out[t] = r[0];
  if (kMode != 1) __syncthreads();
  if (t >= 32 && t < 40) { line_b = __LINE__; ptx::cp_async_16(s + (t - 32) * 8, in + 64 + (t - 32) * 8); }
  if (kMode == 3 && t < 8) ptx::cp_async_16(s + t * 8, in + 64 + t * 8);
  ptx::cp_async_wait_all();
  __syncthreads();
  ptx::ldmatrix_x1(r, s + (lane % 8) * 8);
  out[64 + t] = r[0];
}

std::vector<uint16_t> stage_input() {
  std::vector<uint16_t> in(128);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint16_t>(0x3c00 + i);
  return in;
}

SIMT_TEST(hazard_free_with_barriers) {
  const std::vector<uint16_t> in = stage_input();
  std::vector<uint32_t> out(128);
  auto* k = &stage_kernel<0>;
  ATTNKIT_LAUNCH(k, 1, 64, 128, 0, in.data(), out.data());
  // ldmatrix x1: lane l holds row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1
  for (int round = 0; round < 2; ++round)
    for (int t = 0; t < 64; ++t) {
      const int l = t % 32, e = (l / 4) * 8 + 2 * (l % 4) + 64 * round;
      CHECK(out[static_cast<size_t>(64 * round + t)] == (uint32_t(in[e]) | uint32_t(in[e + 1]) << 16));
    }
}

// A race is reported from the side that comes second in the schedule: the write after the other
// warp's read (forward order), or the read after the other warp's write (reverse order, where warp 1
// refills first). Either way the report names both call sites; the note says which (test/simt.test.ts).
void expect_race(int mode) {
  const std::vector<uint16_t> in = stage_input();
  std::vector<uint32_t> out(128);
  auto* k = mode == 1 ? &stage_kernel<1> : &stage_kernel<2>;
  const std::string msg =
      EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 64, 128, 0, in.data(), out.data()), "kernel 'k', block (0,0,0)",
                   "shared-memory race (", "dynamic shared memory bytes [", "ldmatrix.m8n8.x1",
                   at(__FILE__, line_a), "cp.async at " + at(__FILE__, mode == 1 ? line_b : line_c),
                   "no __syncthreads in between");
  const bool war = msg.find("(write after read)") != std::string::npos;
  CHECK(war || msg.find("(read after write)") != std::string::npos);
  simt_test::note(mode == 1 ? "hazard_write_after_read" : "hazard_read_after_write", war ? "war" : "raw");
}

SIMT_TEST(hazard_write_after_read) { expect_race(1); }
SIMT_TEST(hazard_read_after_write) { expect_race(2); }

SIMT_TEST(hazard_write_after_write) {
  const std::vector<uint16_t> in = stage_input();
  std::vector<uint32_t> out(128);
  auto* k = &stage_kernel<3>;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 64, 128, 0, in.data(), out.data()), "shared-memory race (write after write)",
               "dynamic shared memory bytes [", "which warp ", "no __syncthreads in between");
}

__global__ void divergent_kernel(float* out) {
  if (threadIdx.x < 64) {
    line_a = __LINE__; __syncthreads();
  } else {
    line_b = __LINE__; __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

SIMT_TEST(divergent_barrier) {
  std::vector<float> out(128);
  auto* k = &divergent_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 128, 0, 0, out.data()), "divergent barrier",
               "threads 0-63 at __syncthreads (" + at(__FILE__, line_a) + ")",
               "threads 64-127 at __syncthreads (" + at(__FILE__, line_b) + ")", "kernel 'k', block (0,0,0)");
}

__global__ void exit_at_barrier_kernel(float* out) {
  if (threadIdx.x == 5) return;
  line_a = __LINE__; __syncthreads();
  out[threadIdx.x] = 1.0f;
}

SIMT_TEST(exit_while_others_wait_at_barrier) {
  std::vector<float> out(128);
  auto* k = &exit_at_barrier_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 128, 0, 0, out.data()), "thread", "returned from the kernel",
               "__syncthreads (" + at(__FILE__, line_a) + ")", "every thread of the block must reach the barrier");
}

__global__ void barrier_variants_kernel(int* out) {
  const int t = threadIdx.x;
  out[4 * t + 0] = __syncthreads_count(t % 3 == 0);
  out[4 * t + 1] = __syncthreads_and(t < 1000);
  out[4 * t + 2] = __syncthreads_and(t != 17);
  out[4 * t + 3] = __syncthreads_or(t == 99);
}

SIMT_TEST(barrier_count_and_or) {
  std::vector<int> out(4 * 100);
  auto* k = &barrier_variants_kernel;
  ATTNKIT_LAUNCH(k, 1, 100, 0, 0, out.data());
  for (int t = 0; t < 100; ++t) {
    CHECK(out[4 * t + 0] == 34);
    CHECK(out[4 * t + 1] != 0);
    CHECK(out[4 * t + 2] == 0);
    CHECK(out[4 * t + 3] != 0);
  }
}

// Lanes 0-15 of warp 0 wait at __syncthreads, lanes 16-31 at __syncwarp for them: stuck.
__global__ void deadlock_kernel(float* out) {
  if (threadIdx.x >= 16 && threadIdx.x < 32) {
    line_a = __LINE__; __syncwarp();
  }
  line_b = __LINE__; __syncthreads();
  out[threadIdx.x] = 1.0f;
}

SIMT_TEST(deadlock_report) {
  std::vector<float> out(64);
  auto* k = &deadlock_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 64, 0, 0, out.data()), "deadlock",
               "wait at __syncthreads (" + at(__FILE__, line_b) + ")",
               "threads 16-31 (warp 0, lanes 16-31) wait in __syncwarp (" + at(__FILE__, line_a) + ")",
               "for lanes 0-15 of mask 0xffffffff");
}

// ---- shared memory poisoning -----------------------------------------------------------------------

__global__ void static_smem_read_kernel(float* out) {
  __shared__ float s[64];
  static __shared__ float s2[64];
  out[blockIdx.x * 128 + threadIdx.x] = s[threadIdx.x];       // read before any write: poison
  out[blockIdx.x * 128 + 64 + threadIdx.x] = s2[threadIdx.x];
  __syncthreads();
  s[threadIdx.x] = 1.0f;  // the next block on this OS thread must not see these
  s2[threadIdx.x] = 2.0f;
}

SIMT_TEST(static_shared_memory_is_poisoned_per_block) {
  const int blocks = 6;
  std::vector<float> out(blocks * 128, 0.0f);
  auto* k = &static_smem_read_kernel;
  ATTNKIT_LAUNCH(k, blocks, 64, 0, 0, out.data());
  for (float f : out) CHECK(is_poison(f));
}

__global__ void dynamic_smem_kernel(const float* in, float* out, int n) {
  ATTNKIT_DYNAMIC_SMEM(float, s);
  const int t = threadIdx.x;
  out[2 * n * blockIdx.x + t] = s[t];  // before any write: poison
  __syncthreads();
  s[t] = in[t];
  __syncthreads();
  out[2 * n * blockIdx.x + n + t] = s[n - 1 - t];
}

SIMT_TEST(dynamic_shared_memory) {
  const int n = 96, blocks = 3;
  std::vector<float> in(n), out(2 * n * blocks);
  for (int i = 0; i < n; ++i) in[i] = static_cast<float>(i);
  auto* k = &dynamic_smem_kernel;
  ATTNKIT_LAUNCH(k, blocks, n, n * sizeof(float), 0, in.data(), out.data(), n);
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      CHECK(is_poison(out[2 * n * b + t]));
      CHECK(out[2 * n * b + n + t] == static_cast<float>(n - 1 - t));
    }
}

// ---- warp collectives ------------------------------------------------------------------------------

// A host model of the CUDA programming guide's shuffle semantics (independent of the emulator's PTX
// formula): the source lane, or the lane itself when the source falls outside its segment.
int shfl_source(int mode, int lane, int arg, int width) {
  const int base = lane / width * width;
  switch (mode) {
    case 0: return base + ((arg % width) + width) % width;
    case 1: return lane - base >= arg ? lane - arg : lane;
    case 2: return lane - base + arg < width ? lane + arg : lane;
    default: {
      const int src = lane ^ arg;
      return src >= base + width ? lane : src;
    }
  }
}

template <typename T>
__global__ void shfl_kernel(const T* in, T* out, int mode, int arg, int width) {
  const int l = threadIdx.x;
  T v = in[l];
  T r;
  switch (mode) {
    case 0: r = __shfl_sync(kFull, v, arg, width); break;
    case 1: r = __shfl_up_sync(kFull, v, static_cast<unsigned>(arg), width); break;
    case 2: r = __shfl_down_sync(kFull, v, static_cast<unsigned>(arg), width); break;
    default: r = __shfl_xor_sync(kFull, v, arg, width); break;
  }
  out[l] = r;
}

template <typename T>
void check_shuffles(T (*make)(int)) {
  std::vector<T> in(32), out(32);
  for (int l = 0; l < 32; ++l) in[l] = make(l);
  auto* k = &shfl_kernel<T>;
  for (int width : {1, 2, 4, 8, 16, 32})
    for (int mode = 0; mode < 4; ++mode)
      for (int arg : {0, 1, 2, 3, 5, 8, 13, 16, 31}) {
        ATTNKIT_LAUNCH(k, 1, 32, 0, 0, in.data(), out.data(), mode, arg, width);
        for (int l = 0; l < 32; ++l) {
          const int src = shfl_source(mode, l, arg, width);
          CHECK_MSG(std::memcmp(&out[l], &in[src], sizeof(T)) == 0,
                    "mode " + std::to_string(mode) + " arg " + std::to_string(arg) + " width " +
                        std::to_string(width) + " lane " + std::to_string(l));
        }
      }
}

SIMT_TEST(shuffles) {
  check_shuffles<int>([](int l) { return l * 3 - 7; });
  check_shuffles<float>([](int l) { return 0.5f * l; });
  check_shuffles<double>([](int l) { return 1e10 + l; });
  check_shuffles<unsigned long long>([](int l) { return 0x100000000ull * l + 1; });
  check_shuffles<__half>([](int l) { return __float2half(static_cast<float>(l)); });
  check_shuffles<__nv_bfloat162>([](int l) { return __floats2bfloat162_rn(static_cast<float>(l), -1.0f * l); });
}

// Butterfly reduction over a partial mask: legal when only the named lanes take part.
__global__ void partial_mask_kernel(int* out) {
  const int lane = threadIdx.x % 32;
  int v = lane;
  if (lane < 16) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0x0000ffffu, v, o);
  } else {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffff0000u, v, o);
  }
  out[threadIdx.x] = v;
}

SIMT_TEST(partial_mask_collectives) {
  std::vector<int> out(64);
  auto* k = &partial_mask_kernel;
  ATTNKIT_LAUNCH(k, 1, 64, 0, 0, out.data());
  for (int t = 0; t < 64; ++t) CHECK(out[t] == ((t % 32) < 16 ? 120 : 376));
}

__global__ void votes_kernel(unsigned* out) {
  const int l = threadIdx.x;
  out[8 * l + 0] = __ballot_sync(kFull, l % 3 == 0);
  out[8 * l + 1] = __any_sync(kFull, l == 31);
  out[8 * l + 2] = __all_sync(kFull, l < 31);
  out[8 * l + 3] = __all_sync(kFull, l >= 0);
  out[8 * l + 4] = __reduce_add_sync(kFull, static_cast<unsigned>(l));
  out[8 * l + 5] = static_cast<unsigned>(__reduce_min_sync(kFull, 5 - l));
  out[8 * l + 6] = __reduce_or_sync(kFull, 1u << l);
  if (l < 8) {
    out[8 * l + 7] = __ballot_sync(0xffu, l & 1);
  } else {
    __syncwarp(0xffffff00u);
    out[8 * l + 7] = 7;
  }
}

SIMT_TEST(votes_and_reductions) {
  std::vector<unsigned> out(8 * 32);
  auto* k = &votes_kernel;
  ATTNKIT_LAUNCH(k, 1, 32, 0, 0, out.data());
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    CHECK(out[8 * l + 0] == ballot);
    CHECK(out[8 * l + 1] == 1);
    CHECK(out[8 * l + 2] == 0);
    CHECK(out[8 * l + 3] == 1);
    CHECK(out[8 * l + 4] == 496);
    CHECK(static_cast<int>(out[8 * l + 5]) == 5 - 31);
    CHECK(out[8 * l + 6] == kFull);
    CHECK(out[8 * l + 7] == (l < 8 ? 0xaau : 7u));
  }
}

// Lanes 0-15 shuffle with the full mask; lanes 16-31 never join.
__global__ void partial_warp_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x % 32 < 16) {
    line_a = __LINE__; v = __shfl_xor_sync(kFull, v, 1);
  }
  out[threadIdx.x] = v;
}

SIMT_TEST(partial_warp_collective) {
  std::vector<float> out(32);
  auto* k = &partial_warp_kernel;
  const std::string msg = EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 0, 0, out.data()),
                                       "__shfl_xor_sync", at(__FILE__, line_a), "returned from the kernel");
  // Forward order: lane 16 leaves while lanes 0-15 wait; reversed: lane 15 names lanes that left.
  CHECK(msg.find("lanes 0-15 of warp 0 wait for it") != std::string::npos ||
        msg.find("names lanes 16-31 that have returned") != std::string::npos);
}

// Even and odd lanes reach shuffles on different lines.
__global__ void disagree_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x % 2 == 0) {
    line_a = __LINE__; v = __shfl_xor_sync(kFull, v, 1);
  } else {
    line_b = __LINE__; v = __shfl_xor_sync(kFull, v, 1);
  }
  out[threadIdx.x] = v;
}

SIMT_TEST(collective_call_site_mismatch) {
  std::vector<float> out(32);
  auto* k = &disagree_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 0, 0, out.data()), "lanes of warp 0 disagree", at(__FILE__, line_a),
               at(__FILE__, line_b), "same call site");
}

__global__ void lane_not_in_mask_kernel(float* out) {
  float v = 1.0f;
  line_a = __LINE__; v = __shfl_sync(0x0000ffffu, v, 0);
  out[threadIdx.x] = v;
}

SIMT_TEST(calling_lane_not_in_mask) {
  std::vector<float> out(32);
  auto* k = &lane_not_in_mask_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 0, 0, out.data()), "__shfl_sync at " + at(__FILE__, line_a),
               "does not name the calling lane");
}

// 40 threads: warp 1 has lanes 0-7 only, and a full mask names lanes that do not exist.
__global__ void missing_lanes_kernel(float* out) {
  float v = 1.0f;
  line_a = __LINE__; v = __shfl_down_sync(kFull, v, 1);
  out[threadIdx.x] = v;
}

SIMT_TEST(mask_names_missing_lanes) {
  std::vector<float> out(40);
  auto* k = &missing_lanes_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 40, 0, 0, out.data()), at(__FILE__, line_a), "warp 1",
               "names lanes 8-31 that do not exist");
}

// ---- cp.async --------------------------------------------------------------------------------------

// Reads the destination before cp_async_wait: the bug the poison exposes. (Each thread reads its own
// copy; reading another thread's would also need a barrier after the wait.)
template <bool kWait>
__global__ void cp_async_kernel(const float* src, float* out) {
  ATTNKIT_DYNAMIC_SMEM(float, s);
  const int t = threadIdx.x;
  ptx::cp_async_16(s + 4 * t, src + 4 * t);
  ptx::cp_async_commit();
  if (kWait) ptx::cp_async_wait<0>();
  for (int i = 0; i < 4; ++i) out[4 * t + i] = s[4 * t + i];
  if (!kWait) ptx::cp_async_wait_all();
}

SIMT_TEST(cp_async_missing_wait_reads_poison) {
  alignas(16) float src[128];
  for (int i = 0; i < 128; ++i) src[i] = static_cast<float>(i);
  std::vector<float> out(128);
  auto* bad = &cp_async_kernel<false>;
  ATTNKIT_LAUNCH(bad, 1, 32, 128 * sizeof(float), 0, src, out.data());
  for (float f : out) CHECK(is_poison(f));
  auto* good = &cp_async_kernel<true>;
  ATTNKIT_LAUNCH(good, 1, 32, 128 * sizeof(float), 0, src, out.data());
  for (int i = 0; i < 128; ++i) CHECK(out[i] == src[i]);
}

// Three groups; wait_group<1> completes the first two; zero-fill sizes 0, 5, 16.
__global__ void cp_async_groups_kernel(const unsigned char* src, unsigned char* out) {
  ATTNKIT_DYNAMIC_SMEM(unsigned char, s);
  if (threadIdx.x != 0) return;
  ptx::cp_async_16(s, src);
  ptx::cp_async_commit();
  ptx::cp_async_16_zfill(s + 16, src + 16, 5);
  ptx::cp_async_commit();
  ptx::cp_async_16_zfill(s + 32, src + 32, 0);
  ptx::cp_async_16(s + 48, src + 48);
  ptx::cp_async_commit();
  ptx::cp_async_wait<1>();
  for (int i = 0; i < 64; ++i) out[i] = s[i];
  ptx::cp_async_wait<0>();
  for (int i = 0; i < 64; ++i) out[64 + i] = s[i];
}

SIMT_TEST(cp_async_groups_and_zero_fill) {
  alignas(16) unsigned char src[64];
  for (int i = 0; i < 64; ++i) src[i] = static_cast<unsigned char>(i + 1);
  std::vector<unsigned char> out(128);
  auto* k = &cp_async_groups_kernel;
  ATTNKIT_LAUNCH(k, 1, 32, 64, 0, src, out.data());
  for (int i = 0; i < 16; ++i) CHECK(out[i] == src[i]);
  for (int i = 16; i < 21; ++i) CHECK(out[i] == src[i]);
  for (int i = 21; i < 32; ++i) CHECK(out[i] == 0);
  for (int i = 32; i < 64; ++i) CHECK(out[i] == 0xff);  // third group still in flight
  for (int i = 0; i < 32; ++i) CHECK(out[64 + i] == out[i]);
  for (int i = 32; i < 48; ++i) CHECK(out[64 + i] == 0);
  for (int i = 48; i < 64; ++i) CHECK(out[64 + i] == src[i]);
}

__global__ void cp_async_left_in_flight_kernel(const float* src) {
  ATTNKIT_DYNAMIC_SMEM(float, s);
  line_a = __LINE__; ptx::cp_async_16(s + 4 * threadIdx.x, src + 4 * threadIdx.x);
  ptx::cp_async_commit();
}

SIMT_TEST(cp_async_left_in_flight) {
  alignas(16) float src[128] = {};
  auto* k = &cp_async_left_in_flight_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 512, 0, src), "returned from the kernel with 1 cp.async copy not waited for",
               "first issued at " + at(__FILE__, line_a));
}

__global__ void cp_async_to_global_kernel(const float* src, float* dst) {
  line_a = __LINE__; ptx::cp_async_16(dst, src);
  ptx::cp_async_wait_all();
}

SIMT_TEST(cp_async_destination_not_shared) {
  alignas(16) float src[4] = {}, dst[4] = {};
  auto* k = &cp_async_to_global_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 1, 0, 0, src, dst), "cp.async at " + at(__FILE__, line_a),
               "not in this block's shared memory");
}

// ---- launches ----------------------------------------------------------------------------------------

// Many blocks over the worker pool: warp sums, then a block sum through shared memory.
__global__ void many_blocks_kernel(const int* in, int* out) {
  __shared__ int partial[3];
  const int t = threadIdx.x;
  int v = in[blockIdx.x * 96 + t];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(kFull, v, static_cast<unsigned>(o));
  if (t % 32 == 0) partial[t / 32] = v;
  __syncthreads();
  if (t == 0) out[blockIdx.x] = partial[0] + partial[1] + partial[2];
}

SIMT_TEST(many_blocks) {
  const int blocks = 37;
  std::vector<int> in(blocks * 96), out(blocks);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i % 101);
  auto* k = &many_blocks_kernel;
  ATTNKIT_LAUNCH(k, blocks, 96, 0, 0, in.data(), out.data());
  for (int b = 0; b < blocks; ++b) {
    int s = 0;
    for (int i = 0; i < 96; ++i) s += in[b * 96 + i];
    CHECK(out[b] == s);
  }
}

__global__ void throwing_kernel(float* out) {
  if (threadIdx.x == 3) throw std::runtime_error("boom");
  out[threadIdx.x] = 1.0f;
}

SIMT_TEST(errors_leave_the_emulator_usable) {
  std::vector<float> out(128);
  auto* t = &throwing_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(t, 4, 32, 0, 0, out.data()), "thread 3 (3,0,0)", "boom");
  auto* d = &divergent_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(d, 2, 128, 0, 0, out.data()), "divergent barrier");
  // The next launch runs normally on the same workers and stacks.
  const std::vector<float> in = reduce_input(2);
  std::vector<float> sums(2);
  auto* k = &reduce_kernel<true>;
  ATTNKIT_LAUNCH(k, 2, 128, 0, 0, in.data(), sums.data());
  CHECK(sums[0] == reduce_expected(in, 0) && sums[1] == reduce_expected(in, 1));
}

SIMT_TEST(invalid_launch_configuration) {
  std::vector<float> out(4096);
  auto* k = &throwing_kernel;
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 2048, 0, 0, out.data()), "invalid block (2048,1,1)");
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, dim3(1, 70000), 32, 0, 0, out.data()), "invalid grid");
  EXPECT_ERROR(ATTNKIT_LAUNCH(k, 1, 32, 300 * 1024, 0, out.data()), "dynamic shared memory exceed");
  EXPECT_ERROR(__syncthreads(), "__syncthreads called outside a kernel launch");
}

}  // namespace

SIMT_TEST_MAIN
