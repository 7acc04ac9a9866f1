// The process-wide compute pool that every CPU stream spreads its tasks over.
// parallel_for(n, fn) runs fn(i, worker) for i in [0, n) with dynamic scheduling (an atomic
// counter, so causal/ragged work balances itself) and returns when all are done. The calling
// thread works too, as worker 0; `worker` < size() indexes per-worker scratch. Jobs from several
// streams are serialized: one job occupies the whole pool at a time.
#pragma once
#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace attnkit::cpu {

class ThreadPool {
 public:
  static ThreadPool& instance();
  int size() const { return int(threads_.size()) + 1; }
  void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn);
  ~ThreadPool();

 private:
  explicit ThreadPool(int threads);
  void worker_loop(int id);
  void run_job(int id, const std::function<void(int64_t, int)>& fn, int64_t n);

  std::mutex job_mu_;  // one job at a time
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> threads_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

int configured_threads();

}  // namespace attnkit::cpu
