// ThreadSanitizer test of the CPU runtime's threads (issue 18), driving native/cpu/thread_pool and
// native/cpu/stream (with native/runtime/) directly, without Node: built and run by
// test/tsan/tsan.test.ts with -fsanitize=thread; any report fails it (TSAN_OPTIONS halt_on_error).
//  1. the compute pool: jobs of every size from several threads at once (as several streams
//     submit them), back to back so that late-waking workers meet the next job; every index runs
//     exactly once; a throwing body's exception reaches its caller and the pool stays usable;
//  2. CPU streams: chains of tasks across streams (an input produced on another stream makes the
//     task wait for it), tasks running parallel_for, failures propagating to dependent tasks and
//     reported once by a wait, a stream destroyed with work still queued (its worker drains it).
// Prints "ok <checks>" and exits 0; a failed check prints it and exits 1.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../../native/cpu/stream.h"
#include "../../native/cpu/thread_pool.h"
#include "attnkit/error.h"

using attnkit::cpu::CpuStream;
using attnkit::cpu::ThreadPool;
namespace rt = attnkit::runtime;

static std::atomic<int> g_checks{0};
#define CHECK(cond)                                                             \
  do {                                                                          \
    ++g_checks;                                                                 \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                             \
    }                                                                           \
  } while (0)

// ------------------------------------------------------------------ the compute pool

static void pool_jobs(int submitter, int jobs) {
  ThreadPool& pool = ThreadPool::instance();
  for (int j = 0; j < jobs; ++j) {
    const int64_t n = 1 + (j * 7 + submitter * 13) % 97;  // 1..97, tiny jobs included
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    std::vector<int64_t> out(static_cast<size_t>(n), 0);  // plain writes, one per index: a race if run twice at once
    pool.parallel_for(n, [&](int64_t i, int worker) {
      CHECK(worker >= 0 && worker < pool.size());
      hits[size_t(i)].fetch_add(1);
      out[size_t(i)] = i * i;
    });
    for (int64_t i = 0; i < n; ++i) {
      CHECK(hits[size_t(i)].load() == 1);
      CHECK(out[size_t(i)] == i * i);
    }
  }
}

static void pool_errors() {
  ThreadPool& pool = ThreadPool::instance();
  for (int j = 0; j < 20; ++j) {
    bool caught = false;
    try {
      pool.parallel_for(50, [&](int64_t i, int) {
        if (i == 17) throw attnkit::Error("INTERNAL", "test", "test: body failed");
      });
    } catch (const attnkit::Error& e) {
      caught = std::string(e.code()) == "INTERNAL";
    }
    CHECK(caught);
    std::atomic<int64_t> sum{0};
    pool.parallel_for(64, [&](int64_t i, int) { sum += i; });
    CHECK(sum.load() == 64 * 63 / 2);
  }
}

// ------------------------------------------------------------------ CPU streams

// Waits for a task's done callback (what the binding's completion does, without Node).
struct Latch {
  std::mutex mu;
  std::condition_variable cv;
  bool set = false;
  rt::FailurePtr failure;
  void open(rt::FailurePtr f) {
    std::lock_guard<std::mutex> lk(mu);
    failure = std::move(f);
    set = true;
    cv.notify_all();
  }
  rt::FailurePtr wait() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return set; });
    return failure;
  }
};

static rt::FailurePtr wait_on(rt::Stream& s, std::vector<rt::StoragePtr> inputs = {}) {
  auto latch = std::make_shared<Latch>();
  rt::Task t;
  t.inputs = std::move(inputs);
  t.is_wait = true;
  t.done = [latch](rt::FailurePtr f) { latch->open(std::move(f)); };
  s.enqueue(std::move(t));
  return latch->wait();
}

static rt::StoragePtr host(int64_t n) { return std::make_shared<rt::Storage>(attnkit::DType::Float32, n); }

// out[i] = f(in[i]) on the pool, as a kernel would.
static rt::Task map_task(rt::StoragePtr in, rt::StoragePtr out, float add) {
  rt::Task t;
  t.inputs = {in};
  t.outputs = {out};
  t.run = [in, out, add] {
    const float* a = static_cast<const float*>(in->data);
    float* b = static_cast<float*>(out->data);
    ThreadPool::instance().parallel_for(in->numel, [&](int64_t i, int) { b[i] = a[i] + add; });
  };
  return t;
}

static void stream_chains(int round) {
  const int64_t n = 4096;
  CpuStream a, b, c;
  rt::StoragePtr x = host(n), y = host(n), z = host(n), w = host(n);
  {
    rt::Task fill;
    fill.outputs = {x};
    fill.run = [x] {
      float* p = static_cast<float*>(x->data);
      for (int64_t i = 0; i < x->numel; ++i) p[i] = float(i);
    };
    a.enqueue(std::move(fill));
  }
  a.enqueue(map_task(x, y, 1.0f));   // y = x + 1 on a
  b.enqueue(map_task(y, z, 2.0f));   // z = y + 2 on b: waits for a
  c.enqueue(map_task(z, w, 3.0f));   // w = z + 3 on c: waits for b
  CHECK(wait_on(c, {w}) == nullptr);
  const float* p = static_cast<const float*>(w->data);
  for (int64_t i = 0; i < n; i += 97) CHECK(p[i] == float(i) + 6.0f);

  // A failure on a poisons what depends on it on b; each stream reports its own once.
  rt::StoragePtr bad = host(n), after = host(n);
  {
    rt::Task t;
    t.outputs = {bad};
    t.run = [round] { throw attnkit::Error("OOM", "test", "test: injected " + std::to_string(round)); };
    a.enqueue(std::move(t));
  }
  b.enqueue(map_task(bad, after, 1.0f));
  rt::FailurePtr fa = wait_on(a);
  CHECK(fa && fa->code == "OOM");
  CHECK(wait_on(a) == nullptr);  // reported once
  rt::FailurePtr fb = wait_on(b, {after});
  CHECK(fb && fb->code == "OOM");
  CHECK(wait_on(b) == nullptr);

  // Destroyed with work queued: the worker drains it, keeping the storage alive.
  auto d = std::make_unique<CpuStream>();
  rt::StoragePtr q = host(n), r = host(n);
  std::memset(q->data, 0, size_t(q->bytes));
  for (int i = 0; i < 8; ++i) d->enqueue(map_task(q, r, float(i)));
  auto latch = std::make_shared<Latch>();
  rt::Task last;
  last.inputs = {r};
  last.is_wait = true;
  last.done = [latch](rt::FailurePtr f) { latch->open(std::move(f)); };
  d->enqueue(std::move(last));
  d.reset();
  CHECK(latch->wait() == nullptr);
  CHECK(static_cast<const float*>(r->data)[5] == 7.0f);
}

int main() {
  std::vector<std::thread> submitters;
  for (int s = 0; s < 4; ++s) submitters.emplace_back(pool_jobs, s, 300);
  for (auto& t : submitters) t.join();
  pool_errors();
  std::vector<std::thread> streams;
  for (int s = 0; s < 3; ++s)
    streams.emplace_back([s] {
      for (int r = 0; r < 10; ++r) stream_chains(s * 100 + r);
    });
  for (auto& t : streams) t.join();
  std::printf("ok %d\n", g_checks.load());
  return 0;
}
