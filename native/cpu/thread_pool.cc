#include "thread_pool.h"

#include <atomic>
#include <cstdlib>

namespace attnkit::cpu {

int configured_threads() {
  if (const char* env = std::getenv("ATTNKIT_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1 && n <= 1024) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : int(hc);
}

ThreadPool& ThreadPool::instance() {
  // Leaked on purpose: worker threads must outlive every addon instance (worker_threads included).
  static ThreadPool* pool = new ThreadPool(configured_threads() - 1);
  return *pool;
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::run_job(int id, const std::function<void(int64_t, int)>& fn, int64_t n) {
  for (;;) {
    int64_t i = next_.fetch_add(1);
    if (i >= n) break;
    try {
      fn(i, id);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
      next_.store(n, std::memory_order_relaxed);  // stop handing out work
    }
  }
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int)>* fn;
    int64_t n;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      // The job is read here, under the lock, and only while it is open (fn_ is cleared when it
      // ends): a worker that woke too late for its job must not join the next one's setup, or it
      // would read the next job's n_ and fn_ unsynchronized and could run an index twice
      // (ThreadSanitizer found it, test/tsan/pool_stream_test.cc).
      if (fn_ == nullptr) continue;
      fn = fn_;
      n = n_;
      ++active_;
    }
    run_job(id, *fn, n);
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn) {
  if (n <= 0) return;
  std::lock_guard<std::mutex> job(job_mu_);
  if (threads_.empty() || n == 1) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    n_ = n;
    next_.store(0);  // workers read fn_ and n_ under mu_ (worker_loop), never through next_
    error_ = nullptr;
    ++generation_;
    ++active_;  // the caller
  }
  cv_.notify_all();
  run_job(0, fn, n);
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    --active_;
    // Every worker that joined this job has finished when active_ drops to zero; a worker that
    // wakes later finds fn_ cleared and does not join.
    done_cv_.wait(lk, [&] { return active_ == 0; });
    err = error_;
    fn_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace attnkit::cpu
