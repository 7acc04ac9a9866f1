// CUDA streams, events and stream-ordered device memory behind attnkit's Stream and Tensor
// (native/cuda/device.h has the model). Host code only: every CUDA call here is a runtime API call
// made on the JS thread (stream creation, allocation, release), on a stream's worker (issuing
// tasks) or on a CPU stream's worker (waiting for an event). None is made from a CUDA host
// callback: the one host function (releasing a keepAlive) calls no CUDA API.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "device.h"
#include "device_check.cuh"

namespace attnkit::cuda {

using runtime::Failure;
using runtime::StoragePtr;
using runtime::Task;

namespace {

constexpr int kMaxDevices = 64;
std::atomic<int64_t> g_live[kMaxDevices];

struct Event {
  cudaEvent_t e = nullptr;
  Event() {
    if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
      e = nullptr;
      cudaGetLastError();
    }
  }
  ~Event() {
    if (e) cudaEventDestroy(e);  // resources are released once the event has completed
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// The point after a task on a CUDA stream, and the host storages the device may still read until
// then (sources of host-to-device copies, which the runtime may read from pageable memory after the
// call returns).
struct Point {
  uint64_t seq;
  std::shared_ptr<Event> event;
  std::vector<StoragePtr> hold;
};

}  // namespace

// The shared state of a CUDA stream: the cudaStream_t, how far its worker has issued, and the
// events recorded after issued tasks that may not have completed yet.
struct CudaState final : runtime::StreamState {
  cudaStream_t stream = nullptr;
  uint64_t issued = 0;      // guarded by mu; cv is notified when it grows
  std::deque<Point> points;  // guarded by mu; increasing seq

  ~CudaState() override {
    points.clear();
    if (stream) {
      DeviceGuard g(device);
      cudaStreamDestroy(stream);  // returns at once; resources go when the device is done with it
    }
  }

  // The event after task `seq` once that task has been issued; null when it has completed (or
  // recorded no event).
  std::shared_ptr<Event> event_for(uint64_t seq) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return issued >= seq; });
    for (const Point& p : points) {
      if (p.seq == seq) return p.event;
      if (p.seq > seq) break;
    }
    return nullptr;
  }

  // A CPU stream's worker waiting for work on this stream (e.g. a device-to-host copy).
  void wait_for(uint64_t seq) override {
    std::shared_ptr<Event> ev = event_for(seq);
    if (ev && ev->e) cudaEventSynchronize(ev->e);  // errors surface through the producing task
  }

  // Drops the points the device has passed (from the front: the stream runs in order).
  void prune(std::vector<StoragePtr>* released) {
    while (!points.empty()) {
      Point& p = points.front();
      if (p.event && p.event->e && cudaEventQuery(p.event->e) == cudaErrorNotReady) break;
      for (auto& s : p.hold) released->push_back(std::move(s));
      points.pop_front();
    }
    cudaGetLastError();
  }
};

namespace {

// "op: what: cudaErrorX (description)" as a recorded failure.
std::shared_ptr<const Failure> failure_of(cudaError_t e, const std::string& op, const std::string& what) {
  cudaGetLastError();
  return std::make_shared<Failure>(
      Failure{e == cudaErrorMemoryAllocation ? "OOM" : "CUDA", op, op + ": " + what + ": " + cuda_error_text(e)});
}

// Device memory of a storage. `home` is the stream it was allocated for (or, for memory attnkit
// does not own, the stream it was wrapped on); `users` are the other streams whose tasks used it.
struct CudaMemory final : runtime::DeviceMemory {
  int device = 0;
  void* ptr = nullptr;
  size_t bytes = 0;
  bool owned = true;
  std::shared_ptr<CudaState> home;
  std::shared_ptr<void> keep_alive;
  std::mutex mu;
  std::vector<std::shared_ptr<CudaState>> users;

  // On the worker of `st`, before issuing a task that uses the memory. The first time another
  // stream uses it, that stream waits for the home stream's work issued so far: the allocation
  // may reuse memory whose previous owner was freed in the home stream's order.
  void note_use(const std::shared_ptr<CudaState>& st, const char* op) {
    if (st == home) return;
    {
      std::lock_guard<std::mutex> lk(mu);
      if (std::find(users.begin(), users.end(), st) != users.end()) return;
      users.push_back(st);
    }
    std::unique_ptr<Event> ev;
    {
      DeviceGuard g(home->device);  // an event is recorded on a stream of its own device
      ev = std::make_unique<Event>();
      if (!ev->e) throw Error("CUDA", op, std::string(op) + ": cudaEventCreate failed");
      check(cudaEventRecord(ev->e, home->stream), op, "cudaEventRecord (allocation point)");
    }
    check(cudaStreamWaitEvent(st->stream, ev->e, 0), op, "cudaStreamWaitEvent (allocation point)");
  }

  static void CUDART_CB release_keep_alive(void* p) { delete static_cast<std::shared_ptr<void>*>(p); }

  // Runs where the storage's last reference goes: the JS thread (dispose, garbage collection) or a
  // worker (after issuing the storage's last task). Everything is stream-ordered: the home stream
  // waits for the other users' work issued so far, then frees (or releases the keepAlive).
  ~CudaMemory() override {
    if (!home) return;
    for (const auto& u : users) {
      DeviceGuard g(u->device);
      Event ev;
      if (ev.e && cudaEventRecord(ev.e, u->stream) == cudaSuccess) cudaStreamWaitEvent(home->stream, ev.e, 0);
    }
    DeviceGuard g(device);
    if (owned) {
      if (ptr) cudaFreeAsync(ptr, home->stream);
      g_live[device] -= int64_t(bytes);
    } else if (keep_alive) {
      auto* p = new std::shared_ptr<void>(std::move(keep_alive));
      if (cudaLaunchHostFunc(home->stream, release_keep_alive, p) != cudaSuccess) delete p;
    }
    cudaGetLastError();
  }
};

CudaState& cuda_state(const std::shared_ptr<runtime::StreamState>& s) { return static_cast<CudaState&>(*s); }

// Makes `st` wait for `in`: on the device for a producer on another CUDA stream, on this worker for
// a producer on a CPU stream.
void wait_input(const std::shared_ptr<CudaState>& st, const StoragePtr& in) {
  const std::shared_ptr<runtime::StreamState>& rs = in->ready_stream;
  if (!rs || rs == st) return;
  if (rs->device >= 0) {
    std::shared_ptr<Event> ev = cuda_state(rs).event_for(in->ready_seq);
    if (ev && ev->e) check(cudaStreamWaitEvent(st->stream, ev->e, 0), "stream", "cudaStreamWaitEvent");
  } else {
    rs->wait_for(in->ready_seq);
  }
}

void worker_loop(std::shared_ptr<runtime::TaskQueue> q, std::shared_ptr<CudaState> st) {
  cudaSetDevice(st->device);
  std::pair<uint64_t, Task> item;
  while (q->pop(&item)) {
    auto& [seq, task] = item;
    std::shared_ptr<const Failure> failure;
    std::vector<StoragePtr> hold;
    failure = runtime::run_guarded([&] {
      for (auto& in : task.inputs) {
        wait_input(st, in);
        if (in->device >= 0) static_cast<CudaMemory*>(in->device_memory.get())->note_use(st, "stream");
        else hold.push_back(in);
      }
      for (auto& out : task.outputs)
        if (out->device >= 0) static_cast<CudaMemory*>(out->device_memory.get())->note_use(st, "stream");
    }, "the host");
    // The failure rules of every backend (native/runtime/stream.h).
    if (!failure) failure = runtime::inherited(runtime::first_input_failure(task), task.is_wait);
    if (!failure && task.run) failure = runtime::run_guarded(task.run, "the host");
    if (task.is_wait) {
      // Device-side errors (a faulted kernel) show up here, so the wait reports them.
      const cudaError_t e = cudaStreamSynchronize(st->stream);
      if (e != cudaSuccess && !failure)
        failure = failure_of(e, "synchronize", "work on cuda:" + std::to_string(st->device) + " failed");
    }
    std::shared_ptr<Event> ev;
    if (!task.is_wait && (!task.outputs.empty() || !hold.empty())) {
      ev = std::make_shared<Event>();
      if (!ev->e || cudaEventRecord(ev->e, st->stream) != cudaSuccess) {
        // No event: finish the work here so that nothing needs one.
        cudaGetLastError();
        ev.reset();
        const cudaError_t e = cudaStreamSynchronize(st->stream);
        if (e != cudaSuccess && !failure)
          failure = failure_of(e, "stream", "work on cuda:" + std::to_string(st->device) + " failed");
      }
    }
    std::shared_ptr<const Failure> report = runtime::settle(task, *st, failure);
    if (task.done) task.done(report);
    task = Task();  // release storage references (device memory is freed stream-ordered) first
    std::vector<StoragePtr> released;
    {
      std::lock_guard<std::mutex> lk(st->mu);
      if (ev) st->points.push_back(Point{seq, std::move(ev), std::move(hold)});
      st->issued = seq;
      st->prune(&released);
    }
    st->cv.notify_all();
    hold.clear();
    released.clear();
  }
  // The stream is going away. Host storages the device may still read are dropped once it has
  // (they may also refer back to this state, which would otherwise never be freed).
  std::vector<StoragePtr> released;
  {
    std::lock_guard<std::mutex> lk(st->mu);
    for (auto& p : st->points)
      for (auto& s : p.hold) released.push_back(std::move(s));
    st->points.clear();
  }
  if (!released.empty()) {
    cudaStreamSynchronize(st->stream);
    cudaGetLastError();
  }
}

std::once_flag g_pool_once[kMaxDevices];

// Checks that cuda:device exists and has the stream-ordered allocator; sets its default memory
// pool to keep freed memory for reuse (as a caching allocator would) instead of returning it to the
// driver at every synchronization.
void check_device(int device, const char* op) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("DEVICE", op, std::string(op) + ": CUDA is not available: " + cuda_error_text(e));
  }
  if (device < 0 || device >= count || device >= kMaxDevices)
    throw Error("DEVICE", op, std::string(op) + ": device cuda:" + std::to_string(device) + " does not exist (" +
                                  std::to_string(count) + " CUDA device" + (count == 1 ? "" : "s") + ")");
  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
  if (!pools)
    throw Error("UNSUPPORTED", op, std::string(op) + ": cuda:" + std::to_string(device) +
                                       " does not support stream-ordered allocation (cudaMallocAsync)");
  std::call_once(g_pool_once[device], [device] {
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
    cudaGetLastError();
  });
}

}  // namespace

// ---------------------------------------------------------------- DeviceStream

namespace {
// Checks the device and creates the cudaStream_t before the stream exists (nothing to undo).
std::shared_ptr<CudaState> make_state(int device) {
  check_device(device, "Stream");
  DeviceGuard g(device);
  auto st = std::make_shared<CudaState>();
  st->device = device;
  check(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking), "Stream", "cudaStreamCreateWithFlags");
  return st;
}
}  // namespace

DeviceStream::DeviceStream(int device) : runtime::Stream(make_state(device)) {
  std::thread(worker_loop, queue_, std::static_pointer_cast<CudaState>(state_)).detach();
}

void* DeviceStream::handle() const { return static_cast<CudaState&>(*state_).stream; }

// ---------------------------------------------------------------- memory

runtime::StoragePtr allocate(DType dtype, int64_t numel, DeviceStream& stream, bool zero, const char* op) {
  const int device = stream.device();
  const size_t bytes = size_t(numel * dtype_size(dtype));
  DeviceGuard g(device);
  void* ptr = nullptr;
  if (bytes > 0) {
    const cudaError_t e = cudaMallocAsync(&ptr, bytes, static_cast<cudaStream_t>(stream.handle()));
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw Error("OOM", op, std::string(op) + ": out of memory on cuda:" + std::to_string(device) + " allocating " +
                                 std::to_string(bytes) + " bytes (attnkit holds " + std::to_string(g_live[device].load()) +
                                 " bytes there; dispose() tensors you no longer need)");
    }
    check(e, op, "cudaMallocAsync");
  }
  auto mem = std::make_unique<CudaMemory>();
  mem->device = device;
  mem->ptr = ptr;
  mem->bytes = bytes;
  mem->home = std::static_pointer_cast<CudaState>(stream.state());
  g_live[device] += int64_t(bytes);
  auto s = std::make_shared<runtime::Storage>(dtype, numel, device, ptr, std::move(mem));
  if (zero && bytes > 0) {
    Task t;
    t.outputs = {s};
    void* h = stream.handle();
    t.run = [ptr, bytes, h] { check(cudaMemsetAsync(ptr, 0, bytes, static_cast<cudaStream_t>(h)), "zeros", "cudaMemsetAsync"); };
    stream.enqueue(std::move(t));
  }
  return s;
}

runtime::StoragePtr wrap_external(uint64_t address, DType dtype, int64_t numel, DeviceStream& owner,
                              std::shared_ptr<void> keep_alive, const char* op) {
  const int device = owner.device();
  void* ptr = reinterpret_cast<void*>(uintptr_t(address));
  cudaPointerAttributes a{};
  const cudaError_t e = cudaPointerGetAttributes(&a, ptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("ARGUMENT", op, std::string(op) + ": 'ptr' is not a pointer the CUDA runtime knows: " + cuda_error_text(e));
  }
  if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
    throw Error("ARGUMENT", op, std::string(op) + ": expected 'ptr' to point to device memory of cuda:" +
                                    std::to_string(device) + ", received " +
                                    (a.type == cudaMemoryTypeHost ? "pinned host memory" : "host memory"));
  if (a.type == cudaMemoryTypeDevice && a.device != device)
    throw Error("DEVICE", op, std::string(op) + ": expected 'ptr' to point to memory of cuda:" + std::to_string(device) +
                                  ", received memory of cuda:" + std::to_string(a.device));
  auto mem = std::make_unique<CudaMemory>();
  mem->device = device;
  mem->ptr = ptr;
  mem->bytes = size_t(numel * dtype_size(dtype));
  mem->owned = false;
  mem->home = std::static_pointer_cast<CudaState>(owner.state());
  mem->keep_alive = std::move(keep_alive);
  return std::make_shared<runtime::Storage>(dtype, numel, device, ptr, std::move(mem));
}

void wait_foreign_stream(const runtime::StoragePtr& storage, DeviceStream& stream, uint64_t raw_stream, const char* op) {
  DeviceGuard g(stream.device());
  auto ev = std::make_shared<Event>();
  if (!ev->e) throw Error("CUDA", op, std::string(op) + ": cudaEventCreate failed");
  const cudaError_t e = cudaEventRecord(ev->e, reinterpret_cast<cudaStream_t>(uintptr_t(raw_stream)));
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw Error("ARGUMENT", op, std::string(op) + ": could not record an event on the given 'stream' (a cudaStream_t of cuda:" +
                                    std::to_string(stream.device()) + " was expected): " + cuda_error_text(e));
  }
  Task t;
  t.outputs = {storage};
  void* h = stream.handle();
  t.run = [ev, h] { check(cudaStreamWaitEvent(static_cast<cudaStream_t>(h), ev->e, 0), "fromDevicePointer", "cudaStreamWaitEvent"); };
  stream.enqueue(std::move(t));
}

int64_t live_bytes(int device) { return device >= 0 && device < kMaxDevices ? g_live[device].load() : 0; }

bool pool_stats(int device, PoolStats* out) {
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  uint64_t reserved = 0, used = 0;
  if (cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) != cudaSuccess ||
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  out->reserved = int64_t(reserved);
  out->used = int64_t(used);
  return true;
}

// ---------------------------------------------------------------- copies

void copy(const runtime::StoragePtr& dst, const runtime::StoragePtr& src, void* h, const char* op) {
  const size_t n = src->bytes;
  if (n != dst->bytes) throw Error("SHAPE", op, std::string(op) + ": copy between storages of different sizes");
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(h);
  if (src->device < 0 && dst->device < 0) {
    std::memcpy(dst->data, src->data, n);
  } else if (src->device < 0) {
    check(cudaMemcpyAsync(dst->data, src->data, n, cudaMemcpyHostToDevice, s), op, "cudaMemcpyAsync (host to device)");
  } else if (dst->device < 0) {
    check(cudaMemcpyAsync(dst->data, src->data, n, cudaMemcpyDeviceToHost, s), op, "cudaMemcpyAsync (device to host)");
    check(cudaStreamSynchronize(s), op, "copy to the host");  // the host memory is complete on return
  } else if (src->device == dst->device) {
    check(cudaMemcpyAsync(dst->data, src->data, n, cudaMemcpyDeviceToDevice, s), op, "cudaMemcpyAsync (device to device)");
  } else {
    check(cudaMemcpyPeerAsync(dst->data, dst->device, src->data, src->device, n, s), op, "cudaMemcpyPeerAsync");
  }
}

void copy_to_host(void* dst, const void* src, size_t bytes, void* h, const char* op) {
  if (bytes == 0) return;
  auto s = static_cast<cudaStream_t>(h);
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s), op, "cudaMemcpyAsync (device to host)");
  check(cudaStreamSynchronize(s), op, "copy to the host");
}

// ---------------------------------------------------------------- timing events

TimingEvent::TimingEvent(int device) : device_(device) {
  DeviceGuard g(device);
  cudaEvent_t e = nullptr;
  check(cudaEventCreate(&e), "recordEvent", "cudaEventCreate");
  event_ = e;
}

TimingEvent::~TimingEvent() {
  if (event_) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

void TimingEvent::record(void* stream) {
  check(cudaEventRecord(static_cast<cudaEvent_t>(event_), static_cast<cudaStream_t>(stream)), "recordEvent", "cudaEventRecord");
}

double TimingEvent::elapsed_ms(const TimingEvent& start, const TimingEvent& end) {
  float ms = 0.f;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_), static_cast<cudaEvent_t>(end.event_)),
        "eventElapsed", "cudaEventElapsedTime (both events must have completed: synchronize first)");
  return double(ms);
}

}  // namespace attnkit::cuda
