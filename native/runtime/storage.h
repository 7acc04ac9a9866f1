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

}  // namespace attnkit::runtime
