// CPU streams and storage (DESIGN §3). A stream is a worker thread that runs its tasks in order;
// each task may spread over the shared compute pool. Storage remembers the stream and sequence
// number at which its contents become ready, so a task on another stream waits for it; a failed
// task marks its outputs failed and the stream records the error for the next wait. Storage is
// reference-counted: tasks keep their inputs and outputs alive, so disposing a tensor while work
// on it is queued is safe, and its memory is returned when the last task finishes with it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "attnkit/dtype.h"
#include "attnkit/error.h"

namespace attnkit::cpu {

struct Failure {
  std::string code, op, message;
};

// Completion state of a stream, shared with storage and with tasks on other streams. A CUDA
// stream (native/cuda/device_stream.cu) derives from it: its wait_for(seq) waits, on the calling
// thread, for the device to reach that point.
struct StreamState {
  virtual ~StreamState() = default;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t completed = 0;  // highest sequence number finished
  std::shared_ptr<const Failure> error;  // recorded by a failed task, reported by the next wait
  int device = -1;  // -1: a CPU stream; N: a stream on cuda:N
  virtual void wait_for(uint64_t seq);
};

// What a CUDA storage owns instead of host memory (native/cuda/device_stream.cu): its destructor
// releases the device memory stream-ordered, after the work of every stream that used it.
struct DeviceMemory {
  virtual ~DeviceMemory() = default;
};

struct Storage {
  Storage(DType dtype, int64_t numel);  // host memory (64-byte aligned)
  // Memory on cuda:`device` at `data`, owned (or merely referenced) by `memory`.
  Storage(DType dtype, int64_t numel, int device, void* data, std::unique_ptr<DeviceMemory> memory);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;  // host memory, or a device pointer when device >= 0
  DType dtype;
  int64_t numel;
  size_t bytes;
  int device = -1;  // -1: cpu; N: cuda:N
  std::unique_ptr<DeviceMemory> device_memory;
  // Written on the JS thread when work producing this storage is enqueued.
  std::shared_ptr<StreamState> ready_stream;
  uint64_t ready_seq = 0;
  // Written by the worker that failed to produce the contents.
  std::mutex mu;
  std::shared_ptr<const Failure> failure;
  std::shared_ptr<const Failure> get_failure();
};

int64_t live_bytes_cpu();

using StoragePtr = std::shared_ptr<Storage>;

struct Task {
  std::vector<StoragePtr> inputs, outputs;
  std::function<void()> run;
  // Called on the worker after run (or after a failure, with it), even when run is empty.
  std::function<void(std::shared_ptr<const Failure>)> done;
  // Waits report the stream's recorded error (and clear it); ordinary ops do not.
  bool is_wait = false;
};

class CpuStream {
 public:
  CpuStream();
  ~CpuStream();  // drains queued work on the worker, never blocks the caller
  // Enqueues on the JS thread; returns the task's sequence number and marks outputs ready at it.
  uint64_t enqueue(Task task);
  const std::shared_ptr<StreamState>& state() const { return state_; }

 private:
  struct Queue {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::pair<uint64_t, Task>> tasks;
    bool closing = false;
  };
  static void worker_loop(std::shared_ptr<Queue> q, std::shared_ptr<StreamState> st);

  std::shared_ptr<StreamState> state_;
  std::shared_ptr<Queue> queue_;
  uint64_t next_seq_ = 0;
};

}  // namespace attnkit::cpu
