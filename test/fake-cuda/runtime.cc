// A fake CUDA device for testing attnkit's CUDA runtime (native/cuda/device_stream.cu) without a
// GPU: the functions of the CUDA runtime API that attnkit calls, implemented on the host against the
// real cuda_runtime.h declarations, so that device_stream.cu compiles unchanged with g++ and links
// against this file instead of cudart (test/cuda-fake-device.test.ts).
//
// Two devices. Each stream is a host thread that runs its operations in order, each after a random
// delay of up to 0.3 ms (so that a missing wait shows up as wrong data or a wrong order). Device
// memory is host memory in a registry: every copy, memset and kernel checks its ranges when it runs,
// and a stream-ordered free poisons and quarantines the block, so that a use after the free in
// device order aborts with "use after a stream-ordered free". Host-to-device copies read the host
// buffer when they run (stricter than a real pageable copy, which may stage it at the call), device-
// to-host copies complete before the call returns (as documented for pageable memory). An event
// must be recorded on a stream of its own device. fakeSetSticky models a lost device context.
#include <cuda_runtime.h>

#include "fake.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

namespace {
constexpr int kDevices = 2;
thread_local int t_device = 0;
thread_local cudaError_t t_last = cudaSuccess;
std::atomic<int> g_sticky{0};
cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) t_last = e;
  return e;
}
[[noreturn]] void fatal(const std::string& m) {
  std::fprintf(stderr, "FAKE CUDA FATAL: %s\n", m.c_str());
  std::fflush(stderr);
  std::abort();
}

struct Alloc {
  size_t size;
  int device;
  bool freed;
};
// The registries are never destroyed: the stream threads are detached and may still run a queued
// operation (a stream-ordered free of a storage released at exit) while the process runs its exit
// handlers, which would otherwise have destroyed the map under them.
std::mutex& g_mem_mu = *new std::mutex;
std::map<uintptr_t, Alloc>& g_allocs = *new std::map<uintptr_t, Alloc>;
int64_t g_used[kDevices], g_reserved[kDevices];

const Alloc* find(const void* p, uintptr_t* base) {
  auto it = g_allocs.upper_bound(uintptr_t(p));
  if (it == g_allocs.begin()) return nullptr;
  --it;
  if (uintptr_t(p) >= it->first + std::max<size_t>(it->second.size, 1)) return nullptr;
  *base = it->first;
  return &it->second;
}

int jitter_us() {
  thread_local std::mt19937 rng(std::random_device{}());
  return int(rng() % 300);
}
}  // namespace

void fakeSetSticky(int e) { g_sticky = e; }
#define STICKY() do { if (g_sticky) return ret(cudaError_t(g_sticky.load())); } while (0)

void fakeCheckRange(const void* p, size_t n, const char* what) {
  if (n == 0) return;
  std::lock_guard<std::mutex> lk(g_mem_mu);
  uintptr_t base;
  const Alloc* a = find(p, &base);
  if (!a) fatal(std::string(what) + ": not device memory");
  if (uintptr_t(p) + n > base + a->size) fatal(std::string(what) + ": out of bounds");
  if (a->freed) fatal(std::string(what) + ": use after a stream-ordered free");
}

bool fakeKernelPointer(const void* p) {
  std::lock_guard<std::mutex> lk(g_mem_mu);
  uintptr_t base;
  const Alloc* a = find(p, &base);
  if (a && a->freed) fatal("kernel argument: use after a stream-ordered free");
  return a != nullptr;
}

static bool is_device(const void* p) {
  std::lock_guard<std::mutex> lk(g_mem_mu);
  uintptr_t base;
  return find(p, &base) != nullptr;
}

struct CUstream_st {
  int device;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> q;
  bool closing = false;
  void push(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (closing) fatal("operation on a destroyed stream");
      q.push_back(std::move(f));
    }
    cv.notify_one();
  }
  static void loop(CUstream_st* s) {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lk(s->mu);
        s->cv.wait(lk, [&] { return s->closing || !s->q.empty(); });
        if (s->q.empty()) break;
        f = std::move(s->q.front());
        s->q.pop_front();
      }
      std::this_thread::sleep_for(std::chrono::microseconds(jitter_us()));
      f();
    }
    delete s;
  }
};

struct CUevent_st {
  int device;
  bool timing;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t recorded = 0, completed = 0;
  std::chrono::steady_clock::time_point t;
};
static std::mutex& g_ev_mu = *new std::mutex;  // never destroyed, as g_allocs
static std::map<CUevent_st*, std::shared_ptr<CUevent_st>>& g_events = *new std::map<CUevent_st*, std::shared_ptr<CUevent_st>>;
static std::shared_ptr<CUevent_st> ev_of(cudaEvent_t e) {
  std::lock_guard<std::mutex> lk(g_ev_mu);
  auto it = g_events.find(e);
  if (it == g_events.end()) fatal("unknown or destroyed event");
  return it->second;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    default: return "cudaErrorInvalidValue";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return e == cudaErrorMemoryAllocation ? "out of memory" : "fake error"; }
cudaError_t cudaGetLastError() {
  cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}
cudaError_t cudaGetDevice(int* d) {
  *d = t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= kDevices) return ret(cudaErrorInvalidDevice);
  t_device = d;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = kDevices;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, enum cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrClockRate ? 1000000 : 1;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 13000;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  std::memset(static_cast<void*>(p), 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "Fake GPU %d", d);
  p->totalGlobalMem = size_t(16) << 30;
  p->major = 9;
  p->multiProcessorCount = 8;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  auto* f = new CUstream_st;
  f->device = t_device;
  std::thread(CUstream_st::loop, f).detach();
  *s = f;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  {
    std::lock_guard<std::mutex> lk(s->mu);
    s->closing = true;
  }
  s->cv.notify_all();
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (!s) fatal("legacy default stream synchronize not modelled");
  auto done = std::make_shared<std::pair<std::mutex, std::condition_variable>>();
  auto flag = std::make_shared<bool>(false);
  s->push([done, flag] {
    std::lock_guard<std::mutex> lk(done->first);
    *flag = true;
    done->second.notify_all();
  });
  std::unique_lock<std::mutex> lk(done->first);
  done->second.wait(lk, [&] { return *flag; });
  STICKY();
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  auto ev = std::make_shared<CUevent_st>();
  ev->device = t_device;
  ev->timing = !(flags & cudaEventDisableTiming);
  std::lock_guard<std::mutex> lk(g_ev_mu);
  g_events[ev.get()] = ev;
  *e = ev.get();
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard<std::mutex> lk(g_ev_mu);
  if (!g_events.erase(e)) fatal("double event destroy");
  return cudaSuccess;
}
// The legacy default stream (0) of the fake: a stream per device, created on first use.
static CUstream_st* legacy(int device) {
  static CUstream_st* s[kDevices] = {};
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  if (!s[device]) {
    int old = t_device;
    t_device = device;
    cudaStreamCreateWithFlags(&s[device], 0);
    t_device = old;
  }
  return s[device];
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  STICKY();
  auto ev = ev_of(e);
  if (!s) s = legacy(t_device);
  if (ev->device != s->device) return ret(cudaErrorInvalidResourceHandle);
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lk(ev->mu);
    gen = ++ev->recorded;
  }
  s->push([ev, gen] {
    std::lock_guard<std::mutex> lk(ev->mu);
    if (gen > ev->completed) ev->completed = gen;
    ev->t = std::chrono::steady_clock::now();
    ev->cv.notify_all();
  });
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  auto ev = ev_of(e);
  std::lock_guard<std::mutex> lk(ev->mu);
  return ev->completed >= ev->recorded ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  STICKY();
  auto ev = ev_of(e);
  std::unique_lock<std::mutex> lk(ev->mu);
  const uint64_t target = ev->recorded;
  ev->cv.wait(lk, [&] { return ev->completed >= target; });
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  auto x = ev_of(a), y = ev_of(b);
  if (!x->timing || !y->timing) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> l1(x->mu);
  std::lock_guard<std::mutex> l2(y->mu);
  if (!x->recorded || !y->recorded || x->completed < x->recorded || y->completed < y->recorded) return ret(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(y->t - x->t).count();
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  STICKY();
  auto ev = ev_of(e);
  uint64_t target;
  {
    std::lock_guard<std::mutex> lk(ev->mu);
    target = ev->recorded;
  }
  if (target == 0) return cudaSuccess;
  s->push([ev, target] {
    std::unique_lock<std::mutex> lk(ev->mu);
    ev->cv.wait(lk, [&] { return ev->completed >= target; });
  });
  return cudaSuccess;
}
cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void* arg) {
  STICKY();
  s->push([fn, arg] { fn(arg); });
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t s) {
  STICKY();
  if (n > (size_t(64) << 30)) return ret(cudaErrorMemoryAllocation);
  const size_t rounded = (n + 255) / 256 * 256;
  void* m = std::aligned_alloc(256, rounded);
  std::memset(m, 0xCD, rounded);  // uninitialized
  std::lock_guard<std::mutex> lk(g_mem_mu);
  g_allocs[uintptr_t(m)] = Alloc{n, s->device, false};
  g_used[s->device] += int64_t(n);
  if (g_used[s->device] > g_reserved[s->device]) g_reserved[s->device] = g_used[s->device];
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t s) {
  {
    std::lock_guard<std::mutex> lk(g_mem_mu);
    auto it = g_allocs.find(uintptr_t(p));
    if (it == g_allocs.end() || it->second.freed) fatal("cudaFreeAsync of unknown or freed memory");
  }
  s->push([p] {
    std::lock_guard<std::mutex> lk(g_mem_mu);
    Alloc& a = g_allocs[uintptr_t(p)];
    if (a.freed) fatal("double free");
    a.freed = true;  // quarantined: kept (poisoned) so that a late use is detected
    std::memset(p, 0xEE, a.size);
    g_used[a.device] -= int64_t(a.size);
  });
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  STICKY();
  fakeCheckRange(p, n, "cudaMemsetAsync (at the call)");
  s->push([p, v, n] {
    fakeCheckRange(p, n, "cudaMemsetAsync");
    std::memset(p, v, n);
  });
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s) {
  STICKY();
  if (n == 0) return cudaSuccess;
  switch (kind) {
    case cudaMemcpyHostToDevice:
      if (is_device(src)) return ret(cudaErrorInvalidValue);
      fakeCheckRange(dst, n, "H2D (at the call)");
      // read at execution time (stricter than the staging a real pageable copy may do)
      s->push([dst, src, n] {
        fakeCheckRange(dst, n, "H2D");
        std::memcpy(dst, src, n);
      });
      return cudaSuccess;
    case cudaMemcpyDeviceToHost: {
      if (is_device(dst)) return ret(cudaErrorInvalidValue);
      fakeCheckRange(src, n, "D2H (at the call)");
      s->push([dst, src, n] {
        fakeCheckRange(src, n, "D2H");
        std::memcpy(dst, src, n);
      });
      return cudaStreamSynchronize(s);  // to pageable memory: complete on return
    }
    case cudaMemcpyDeviceToDevice:
      fakeCheckRange(dst, n, "D2D dst (at the call)");
      fakeCheckRange(src, n, "D2D src (at the call)");
      s->push([dst, src, n] {
        fakeCheckRange(src, n, "D2D src");
        fakeCheckRange(dst, n, "D2D dst");
        std::memcpy(dst, src, n);
      });
      return cudaSuccess;
    default:
      std::memcpy(dst, src, n);
      return cudaSuccess;
  }
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int, const void* src, int, size_t n, cudaStream_t s) {
  return cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s);
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  std::memset(static_cast<void*>(a), 0, sizeof *a);
  std::lock_guard<std::mutex> lk(g_mem_mu);
  uintptr_t base;
  const Alloc* al = find(p, &base);
  if (al && !al->freed) {
    a->type = cudaMemoryTypeDevice;
    a->device = al->device;
  } else {
    a->type = cudaMemoryTypeUnregistered;
    a->device = -2;
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* p, int d) {
  *p = reinterpret_cast<cudaMemPool_t>(intptr_t(d + 1));
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, enum cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, enum cudaMemPoolAttr a, void* v) {
  const int d = int(reinterpret_cast<intptr_t>(p)) - 1;
  std::lock_guard<std::mutex> lk(g_mem_mu);
  *static_cast<uint64_t*>(v) = uint64_t(a == cudaMemPoolAttrUsedMemCurrent ? g_used[d] : g_reserved[d]);
  return cudaSuccess;
}
void fakeLaunch(cudaStream_t s, std::function<void()> fn) { s->push(std::move(fn)); }
