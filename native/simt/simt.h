// The SIMT host emulator: CUDA kernel sources, compiled unchanged by the host compiler, run on the CPU
// with one fiber per CUDA thread and one OS thread per block in flight. This header is what a kernel
// sees under g++ (through native/cuda/cuda_compat.cuh): the CUDA keywords, threadIdx & co., barriers,
// warp collectives, a few device intrinsics, dynamic shared memory and simt::launch. Every
// synchronising call records its call site (a defaulted simt::Site argument) so that the emulator can
// check that the threads meeting there came from the same place. README.md in this folder has the
// design and the limits; docs/gpu-verification.md how the tests use it.
#pragma once

#if defined(__CUDACC__)
#error "native/simt/simt.h is the host emulator; under nvcc include native/cuda/cuda_compat.cuh"
#endif
#if !defined(__x86_64__) || !defined(__linux__)
#error "the SIMT emulator runs on x86-64 Linux only (hand-written context switch)"
#endif

// CUDA 13's host headers work under g++: they give __half, __nv_bfloat16 with host arithmetic, dim3,
// uint3, cudaStream_t, and define __device__ __global__ __host__ __shared__ as empty. They are
// included here, before the built-in variables become macros, so that a kernel source including
// them again (as under nvcc) finds them already included.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <device_launch_parameters.h>
#include <vector_types.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

// __shared__ variables are per block: thread_local gives one instance per OS thread, and an OS thread
// runs one block at a time. At block scope thread_local implies static, and `static __shared__`
// (`static thread_local`) means the same. The emulator poisons them at every block start.
#undef __shared__
#define __shared__ thread_local
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __maxnreg__
#define __maxnreg__(n)
#undef __grid_constant__
#define __grid_constant__

namespace simt {

// Where a synchronising call was made: filled in by default arguments at the caller.
struct Site {
  const char* file;
  int line;
  static constexpr Site here(const char* file = __builtin_FILE(), int line = __builtin_LINE()) noexcept {
    return Site{file, line};
  }
};

// What a failed launch throws: the first violation found, with its call site and the block, warp and
// thread ids involved.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

// Per-fiber and per-block values read by threadIdx & co. through the worker's thread-local pointers
// (GNU __thread: no TLS wrapper call, one fs-relative load).
struct ThreadRegs {
  uint3 thread_idx;
};
struct BlockRegs {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned char* dynamic_smem;
  size_t dynamic_smem_bytes;
};
struct Tls {
  const ThreadRegs* thread;
  const BlockRegs* block;
  void* worker;
};
extern __thread Tls tls;

inline const uint3& thread_idx() { return tls.thread->thread_idx; }
inline const uint3& block_idx() { return tls.block->block_idx; }
inline const dim3& block_dim() { return tls.block->block_dim; }
inline const dim3& grid_dim() { return tls.block->grid_dim; }
inline unsigned char* dynamic_smem() { return tls.block->dynamic_smem; }

enum class ShflMode : int { Idx = 0, Up = 1, Down = 2, Xor = 3 };
enum class VoteMode : int { Ballot = 0, Any = 1, All = 2 };
enum class ReduceOp : int { AddU = 0, MinU = 1, MaxU = 2, AddI = 3, MinI = 4, MaxI = 5, And = 6, Or = 7, Xor = 8 };
enum class MmaType : int { F16 = 0, BF16 = 1 };

uint64_t shfl(ShflMode mode, unsigned mask, uint64_t bits, int lane_arg, int width, Site site);
unsigned vote(VoteMode mode, unsigned mask, int pred, Site site);
unsigned reduce(ReduceOp op, unsigned mask, unsigned value, Site site);
void syncwarp(unsigned mask, Site site);
int syncthreads(int kind, int pred, Site site);  // kind: 0 plain, 1 count, 2 and, 3 or

// Tensor-core and async-copy instructions, called by the host branches of native/cuda/ptx.cuh.
void mma_m16n8k16(MmaType type, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                  const float (&c)[4], Site site);
void ldmatrix(int num, bool trans, uint32_t* regs, const void* smem_row, Site site);
void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes, Site site);
void cp_async_commit(Site site);
void cp_async_wait_group(int n, Site site);

// One kernel launch, type-erased: invoke(ctx) runs the kernel body for the current fiber.
struct LaunchSpec {
  const char* name;
  dim3 grid;
  dim3 block;
  size_t dynamic_smem_bytes;
  const void* kernel_address;  // to find the module whose thread-local (static shared) block to poison
  void (*invoke)(const void* ctx);
  const void* ctx;
};
void launch(const LaunchSpec& spec);

// Bit copies of values of at most 8 bytes. (CUDA's __half2 and __nv_bfloat162 declare copy
// assignments, so they are not trivially copyable in the C++ sense, but their bits are their value.)
template <typename T>
uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, static_cast<const void*>(&v), sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(static_cast<void*>(&v), &bits, sizeof(T));
  return v;
}

}  // namespace detail

// Runs kernel(args...) on a grid of blocks and returns when every block has finished; throws
// simt::Error on the first violation (the other blocks are not started). The arguments are converted
// to the kernel's parameter types once, as a real launch copies them into parameter space, and every
// thread receives its own copy. Environment: SIMT_ORDER=forward|reverse|ahead (the order in which
// runnable threads of a block are resumed; ahead: warp by warp, each to its next barrier),
// SIMT_HAZARDS=0 (no shared-memory hazard check), SIMT_WORKERS (OS threads, default: hardware threads),
// SIMT_STACK_KB (fiber stack size, default 64), SIMT_POISON_STATIC_SMEM=0 (do not poison __shared__
// variables at block start).
template <typename... P, typename... A>
void launch_named(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                  A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "simt::launch: wrong number of kernel arguments");
  using Params = std::tuple<std::decay_t<P>...>;
  struct Ctx {
    void (*kernel)(P...);
    Params params;
  };
  const Ctx ctx{kernel, Params(std::forward<A>(args)...)};
  detail::LaunchSpec spec;
  spec.name = name;
  spec.grid = grid;
  spec.block = block;
  spec.dynamic_smem_bytes = dynamic_smem_bytes;
  spec.kernel_address = reinterpret_cast<const void*>(kernel);
  spec.invoke = [](const void* p) {
    const Ctx* c = static_cast<const Ctx*>(p);
    std::apply(c->kernel, c->params);
  };
  spec.ctx = &ctx;
  detail::launch(spec);
}

template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem_bytes, A&&... args) {
  launch_named("kernel", kernel, grid, block, dynamic_smem_bytes, std::forward<A>(args)...);
}

}  // namespace simt

// ---- Built-in variables -------------------------------------------------------------------------
#define threadIdx (::simt::detail::thread_idx())
#define blockIdx (::simt::detail::block_idx())
#define blockDim (::simt::detail::block_dim())
#define gridDim (::simt::detail::grid_dim())
#define warpSize 32

// `extern __shared__` cannot be emulated by a declaration: kernels name the dynamic buffer with this
// macro (native/cuda/cuda_compat.cuh maps ATTNKIT_DYNAMIC_SMEM onto it). The buffer is allocated per
// block at exactly the launch's size (AddressSanitizer red zones apply) and filled with 0xFF.
#define SIMT_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::simt::detail::dynamic_smem())

// ---- Barriers -------------------------------------------------------------------------------------
inline void __syncthreads(::simt::Site site = ::simt::Site::here()) { ::simt::detail::syncthreads(0, 0, site); }
inline int __syncthreads_count(int pred, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::syncthreads(1, pred, site);
}
inline int __syncthreads_and(int pred, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::syncthreads(2, pred, site);
}
inline int __syncthreads_or(int pred, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::syncthreads(3, pred, site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, ::simt::Site site = ::simt::Site::here()) {
  ::simt::detail::syncwarp(mask, site);
}

// ---- Warp collectives -----------------------------------------------------------------------------
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, ::simt::Site site = ::simt::Site::here()) {
  using namespace ::simt::detail;
  return from_bits<T>(shfl(ShflMode::Idx, mask, to_bits(var), src_lane, width, site));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 ::simt::Site site = ::simt::Site::here()) {
  using namespace ::simt::detail;
  return from_bits<T>(shfl(ShflMode::Up, mask, to_bits(var), static_cast<int>(delta), width, site));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   ::simt::Site site = ::simt::Site::here()) {
  using namespace ::simt::detail;
  return from_bits<T>(shfl(ShflMode::Down, mask, to_bits(var), static_cast<int>(delta), width, site));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  ::simt::Site site = ::simt::Site::here()) {
  using namespace ::simt::detail;
  return from_bits<T>(shfl(ShflMode::Xor, mask, to_bits(var), lane_mask, width, site));
}
inline unsigned __ballot_sync(unsigned mask, int pred, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::vote(::simt::detail::VoteMode::Ballot, mask, pred, site);
}
inline int __any_sync(unsigned mask, int pred, ::simt::Site site = ::simt::Site::here()) {
  return static_cast<int>(::simt::detail::vote(::simt::detail::VoteMode::Any, mask, pred, site));
}
inline int __all_sync(unsigned mask, int pred, ::simt::Site site = ::simt::Site::here()) {
  return static_cast<int>(::simt::detail::vote(::simt::detail::VoteMode::All, mask, pred, site));
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::reduce(::simt::detail::ReduceOp::AddU, mask, v, site);
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::reduce(::simt::detail::ReduceOp::MinU, mask, v, site);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::reduce(::simt::detail::ReduceOp::MaxU, mask, v, site);
}
inline int __reduce_add_sync(unsigned mask, int v, ::simt::Site site = ::simt::Site::here()) {
  return static_cast<int>(::simt::detail::reduce(::simt::detail::ReduceOp::AddI, mask, static_cast<unsigned>(v), site));
}
inline int __reduce_min_sync(unsigned mask, int v, ::simt::Site site = ::simt::Site::here()) {
  return static_cast<int>(::simt::detail::reduce(::simt::detail::ReduceOp::MinI, mask, static_cast<unsigned>(v), site));
}
inline int __reduce_max_sync(unsigned mask, int v, ::simt::Site site = ::simt::Site::here()) {
  return static_cast<int>(::simt::detail::reduce(::simt::detail::ReduceOp::MaxI, mask, static_cast<unsigned>(v), site));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned v, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::reduce(::simt::detail::ReduceOp::And, mask, v, site);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::reduce(::simt::detail::ReduceOp::Or, mask, v, site);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v, ::simt::Site site = ::simt::Site::here()) {
  return ::simt::detail::reduce(::simt::detail::ReduceOp::Xor, mask, v, site);
}

// ---- Device intrinsics with a host meaning ---------------------------------------------------------
// The fast-math intrinsics are computed exactly: the emulator checks logic, not the last ulp.
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fadd_rn(float x, float y) { return x + y; }
inline float __fsub_rn(float x, float y) { return x - y; }
inline float __fmul_rn(float x, float y) { return x * y; }
inline float __fmaf_rn(float x, float y, float z) { return std::fma(x, y, z); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline int __float_as_int(float x) { return ::simt::detail::from_bits<int>(::simt::detail::to_bits(x)); }
inline float __int_as_float(int x) { return ::simt::detail::from_bits<float>(::simt::detail::to_bits(x)); }
inline unsigned __float_as_uint(float x) { return ::simt::detail::from_bits<unsigned>(::simt::detail::to_bits(x)); }
inline float __uint_as_float(unsigned x) { return ::simt::detail::from_bits<float>(::simt::detail::to_bits(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <typename T>
T __ldg(const T* p) {
  return *p;
}
// The SM clock ticks in nanoseconds (a 1 GHz clock); __nanosleep sleeps the block's OS thread.
inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline void __nanosleep(unsigned ns) { std::this_thread::sleep_for(std::chrono::nanoseconds(ns)); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned min(int a, unsigned b) { return min(static_cast<unsigned>(a), b); }
inline unsigned max(int a, unsigned b) { return max(static_cast<unsigned>(a), b); }
inline unsigned min(unsigned a, int b) { return min(a, static_cast<unsigned>(b)); }
inline unsigned max(unsigned a, int b) { return max(a, static_cast<unsigned>(b)); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// Atomics (blocks of a launch run on several OS threads, so these must be real atomics).
inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  uint32_t* q = reinterpret_cast<uint32_t*>(p);
  uint32_t old = __atomic_load_n(q, __ATOMIC_RELAXED);
  for (;;) {
    const float next = __uint_as_float(old) + v;
    if (__atomic_compare_exchange_n(q, &old, __float_as_uint(next), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return __uint_as_float(old);
  }
}
inline double atomicAdd(double* p, double v) {
  uint64_t* q = reinterpret_cast<uint64_t*>(p);
  uint64_t old = __atomic_load_n(q, __ATOMIC_RELAXED);
  for (;;) {
    const double next = ::simt::detail::from_bits<double>(old) + v;
    if (__atomic_compare_exchange_n(q, &old, ::simt::detail::to_bits(next), true, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED))
      return ::simt::detail::from_bits<double>(old);
  }
}
namespace simt::detail {
template <typename T, typename F>
T atomic_update(T* p, F f) {  // CAS loop: GCC has no __atomic_fetch_max
  T old = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(p, &old, f(old), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
}  // namespace simt::detail
inline int atomicMax(int* p, int v) { return ::simt::detail::atomic_update(p, [v](int o) { return o > v ? o : v; }); }
inline int atomicMin(int* p, int v) { return ::simt::detail::atomic_update(p, [v](int o) { return o < v ? o : v; }); }
inline unsigned atomicMax(unsigned* p, unsigned v) {
  return ::simt::detail::atomic_update(p, [v](unsigned o) { return o > v ? o : v; });
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
  return ::simt::detail::atomic_update(p, [v](unsigned o) { return o < v ? o : v; });
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline int atomicCAS(int* p, int expected, int desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
inline unsigned atomicCAS(unsigned* p, unsigned expected, unsigned desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long expected, unsigned long long desired) {
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return expected;
}
