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

void ThreadPool::run_job(int id) {
  for (;;) {
    int64_t i = next_.fetch_add(1);
    if (i >= n_) break;
    try {
      (*fn_)(i, id);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
      next_.store(n_, std::memory_order_relaxed);  // stop handing out work
    }
  }
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      ++active_;
    }
    run_job(id);
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
    next_.store(0);  // seq_cst: publishes fn_ and n_ to workers that take an index
    error_ = nullptr;
    ++generation_;
    ++active_;  // the caller
  }
  cv_.notify_all();
  run_job(0);
  std::exception_ptr err;
  {
    std::unique_lock<std::mutex> lk(mu_);
    --active_;
    // Every worker that woke for this generation has finished when active_ drops to zero; a
    // worker that has not woken yet will find no work left (next_ >= n_) and leave at once.
    done_cv_.wait(lk, [&] { return active_ == 0; });
    err = error_;
    fn_ = nullptr;
  }
  if (err) std::rethrow_exception(err);
}

}  // namespace attnkit::cpu
