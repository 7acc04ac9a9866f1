// Streams, tasks and their failure bookkeeping, shared by every backend (DESIGN §3).
//
// A stream runs its tasks in enqueue order on a worker thread of its own. `Stream` holds what all
// backends share: the sequence numbers, the queue, the completion state (StreamState) and the
// rules for failures, which are one set for every backend (`settle`):
//  - a task whose input failed fails with the same cause, noting that a later op reported it;
//  - a failed task marks its outputs failed and records the first failure on its stream;
//  - a wait (synchronize, toArray) reports its own failure or else the stream's recorded one,
//    which then counts as reported (each failure is reported once).
// A backend supplies the worker loop: how a task waits for inputs from other streams, runs, and
// when it counts as complete (on the CPU when run returns; on CUDA when the device reaches it).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "storage.h"

namespace attnkit::runtime {

// Completion state of a stream, shared with storage and with tasks on other streams. A backend may
// derive from it: the CUDA stream's wait_for(seq) waits for the device to reach that point.
struct StreamState {
  virtual ~StreamState() = default;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t completed = 0;  // highest sequence number finished
  FailurePtr error;        // recorded by a failed task, reported by the next wait
  int device = -1;         // -1: a CPU stream; N: a stream on cuda:N
  virtual void wait_for(uint64_t seq);
};

struct Task {
  std::vector<StoragePtr> inputs, outputs;
  // Runs on the stream's worker; for a device stream it issues asynchronous work on handle().
  std::function<void()> run;
  // Called on the worker after run (or after a failure, with it), even when run is empty.
  std::function<void(FailurePtr)> done;
  // Waits report the stream's recorded error (and clear it); ordinary ops do not.
  bool is_wait = false;
};

// The queue between the JS thread (push) and a stream's worker (pop).
class TaskQueue {
 public:
  void push(uint64_t seq, Task task);
  // Blocks for the next task; false once the queue is closed and drained.
  bool pop(std::pair<uint64_t, Task>* item);
  void close();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<uint64_t, Task>> tasks_;
  bool closing_ = false;
};

// A stream of any backend, as the binding and the dispatch tables see it.
class Stream {
 public:
  virtual ~Stream();  // closes the queue: queued work drains on the worker, the caller never blocks
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Enqueues on the JS thread; returns the task's sequence number and marks outputs ready at it.
  uint64_t enqueue(Task task);
  const std::shared_ptr<StreamState>& state() const { return state_; }
  int device() const { return state_->device; }  // -1: CPU
  // The backend's native stream (a cudaStream_t), or null for a CPU stream.
  virtual void* handle() const { return nullptr; }

 protected:
  explicit Stream(std::shared_ptr<StreamState> state);
  std::shared_ptr<StreamState> state_;
  std::shared_ptr<TaskQueue> queue_;

 private:
  uint64_t next_seq_ = 0;
};

// ------------------------------------------------------------- failure bookkeeping (all backends)

// Runs fn, turning what it throws into a Failure (null when it returns). `where` names the memory
// an allocation failure ran out of ("cpu", "the host").
FailurePtr run_guarded(const std::function<void()>& fn, const char* where);

// The failure a task inherits from a failed input (null when none failed): a wait reports it as
// is, an op notes that it was reported by a later operation.
FailurePtr inherited(const FailurePtr& upstream, bool is_wait);

// The first failed input of a task, or null.
FailurePtr first_input_failure(const Task& task);

// Marks the task's outputs with `failure` (null: succeeded), records it on the stream, and returns
// what the task reports to `done`: for a wait, its own failure or else the stream's recorded one,
// which then counts as reported.
FailurePtr settle(Task& task, StreamState& st, const FailurePtr& failure);

// Marks `seq` complete on `st` and wakes waiters.
void complete(StreamState& st, uint64_t seq);

}  // namespace attnkit::runtime
