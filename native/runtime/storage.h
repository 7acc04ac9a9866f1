// Storage: the memory behind a tensor, on any backend (DESIGN §3). Backend-neutral: the CPU backend
// (native/cpu/) and the CUDA runtime (native/cuda/) both build on it, and neither includes the
// other. Host storage is 64-byte aligned memory owned here; device storage is a pointer plus a
// DeviceMemory object, supplied by the backend that allocated it, whose destructor releases it
// (stream-ordered on CUDA, after every stream that used it).
//
// Storage remembers the stream and sequence number at which its contents become ready, so a task
// on another stream waits for them, and the failure of the task that should have produced them.
// It is reference-counted: tasks keep their inputs and outputs alive, so disposing a tensor while
// work on it is queued is safe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "attnkit/dtype.h"
#include "attnkit/error.h"

namespace attnkit::runtime {

struct StreamState;

// Why a task failed: a stable code (AttnkitError's ERR_ATTNKIT_<code>), the op, the message.
struct Failure {
  std::string code, op, message;
};
using FailurePtr = std::shared_ptr<const Failure>;

// What a device storage owns instead of host memory.
struct DeviceMemory {
  virtual ~DeviceMemory() = default;
};

struct Storage {
  Storage(DType dtype, int64_t numel);  // host memory (64-byte aligned); throws Error OOM
  // Memory on cuda:`device` at `data`, owned (or merely referenced) by `memory`.
  Storage(DType dtype, int64_t numel, int device, void* data, std::unique_ptr<DeviceMemory> memory);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;  // host memory, or a device pointer when device >= 0
  DType dtype;
  int64_t numel;
  size_t bytes;
  int device = -1;  // -1: host; N: cuda:N
  std::unique_ptr<DeviceMemory> device_memory;
  // Written on the JS thread when work producing this storage is enqueued.
  std::shared_ptr<StreamState> ready_stream;
  uint64_t ready_seq = 0;
  // Written by the worker that failed to produce the contents.
  std::mutex mu;
  FailurePtr failure;
  FailurePtr get_failure();
};

using StoragePtr = std::shared_ptr<Storage>;

// Live bytes of host storage (allocated and not yet released).
int64_t live_host_bytes();

// The error of a failed host allocation: OOM, naming the op and the size.
Error out_of_memory(const char* op, size_t bytes);

// Fault injection, compiled into every build and inert until armed (the `testHooks` export): the
// next `n` allocations at `site` fail as if memory had run out, so tests reach the OOM paths
// without exhausting the machine. Storage: a tensor's host storage (on the JS thread); Scratch: a
// CPU kernel's workspace (on a stream's worker, native/cpu/stream.cc).
enum class AllocSite { Storage, Scratch };
void arm_alloc_failures(AllocSite site, int64_t n);
int64_t armed_alloc_failures(AllocSite site);
// True when this allocation must fail; consumes one armed failure.
bool injected_alloc_failure(AllocSite site);

}  // namespace attnkit::runtime
