#include "stream.h"

#include <cstdlib>
#include <exception>
#include <new>

#include "buffer.h"

namespace attnkit::cpu {

static std::atomic<int64_t> g_live_bytes{0};

namespace {
constexpr size_t kScratchCacheBytes = size_t(256) << 20;
constexpr int kScratchCacheBlocks = 16;
struct ScratchCache {
  struct Block {
    void* p;
    size_t bytes;
  };
  Block blocks[kScratchCacheBlocks];
  int count = 0;
  size_t total = 0;
  ~ScratchCache() {
    for (int i = 0; i < count; ++i) std::free(blocks[i].p);
  }
};
thread_local ScratchCache t_scratch;
size_t rounded(size_t bytes) { return (bytes + 4095) / 4096 * 4096; }
}  // namespace

void* scratch_acquire(size_t bytes, const char* op) {
  const size_t want = rounded(bytes);
  ScratchCache& c = t_scratch;
  int best = -1;
  for (int i = 0; i < c.count; ++i)  // smallest cached block that fits, if not wastefully large
    if (c.blocks[i].bytes >= want && c.blocks[i].bytes <= 2 * want + (size_t(1) << 20) &&
        (best < 0 || c.blocks[i].bytes < c.blocks[best].bytes))
      best = i;
  if (best >= 0) {
    void* p = c.blocks[best].p;
    c.total -= c.blocks[best].bytes;
    c.blocks[best] = c.blocks[--c.count];
    return p;
  }
  return aligned_alloc64(want, op);
}

void scratch_release(void* p, size_t bytes) {
  const size_t size = rounded(bytes);
  ScratchCache& c = t_scratch;
  if (size > kScratchCacheBytes) {
    std::free(p);
    return;
  }
  while (c.count > 0 && (c.count == kScratchCacheBlocks || c.total + size > kScratchCacheBytes)) {
    // evict the largest cached block
    int big = 0;
    for (int i = 1; i < c.count; ++i)
      if (c.blocks[i].bytes > c.blocks[big].bytes) big = i;
    c.total -= c.blocks[big].bytes;
    std::free(c.blocks[big].p);
    c.blocks[big] = c.blocks[--c.count];
  }
  c.blocks[c.count++] = {p, size};
  c.total += size;
}
int64_t live_bytes_cpu() { return g_live_bytes.load(); }

Storage::Storage(DType t, int64_t n) : dtype(t), numel(n), bytes(size_t(n * dtype_size(t))) {
  data = aligned_alloc64(bytes, "empty");
  g_live_bytes += int64_t(bytes);
}

Storage::Storage(DType t, int64_t n, int dev, void* ptr, std::unique_ptr<DeviceMemory> memory)
    : data(ptr), dtype(t), numel(n), bytes(size_t(n * dtype_size(t))), device(dev),
      device_memory(std::move(memory)) {}

Storage::~Storage() {
  if (device >= 0) return;  // device_memory releases the device memory
  std::free(data);
  g_live_bytes -= int64_t(bytes);
}

std::shared_ptr<const Failure> Storage::get_failure() {
  std::lock_guard<std::mutex> lk(mu);
  return failure;
}

void StreamState::wait_for(uint64_t seq) {
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return completed >= seq; });
}

CpuStream::CpuStream()
    : state_(std::make_shared<StreamState>()), queue_(std::make_shared<Queue>()) {
  std::thread(worker_loop, queue_, state_).detach();
}

CpuStream::~CpuStream() {
  {
    std::lock_guard<std::mutex> lk(queue_->mu);
    queue_->closing = true;
  }
  queue_->cv.notify_all();
}

uint64_t CpuStream::enqueue(Task task) {
  const uint64_t seq = ++next_seq_;
  for (auto& out : task.outputs) {
    out->ready_stream = state_;
    out->ready_seq = seq;
  }
  {
    std::lock_guard<std::mutex> lk(queue_->mu);
    queue_->tasks.emplace_back(seq, std::move(task));
  }
  queue_->cv.notify_one();
  return seq;
}

void CpuStream::worker_loop(std::shared_ptr<Queue> q, std::shared_ptr<StreamState> st) {
  for (;;) {
    std::pair<uint64_t, Task> item;
    {
      std::unique_lock<std::mutex> lk(q->mu);
      q->cv.wait(lk, [&] { return q->closing || !q->tasks.empty(); });
      if (q->tasks.empty()) return;  // closing and drained
      item = std::move(q->tasks.front());
      q->tasks.pop_front();
    }
    auto& [seq, task] = item;
    std::shared_ptr<const Failure> failure;
    // Inputs produced on other streams: wait for them (they were enqueued earlier, so no cycle).
    for (auto& in : task.inputs) {
      if (in->ready_stream && in->ready_stream != st) in->ready_stream->wait_for(in->ready_seq);
      if (!failure) failure = in->get_failure();
    }
    if (failure && !task.is_wait) {
      failure = std::make_shared<Failure>(Failure{
          failure->code, failure->op,
          failure->message + " (reported by a later operation that used this result)"});
    }
    if (!failure && task.run) {
      try {
        task.run();
      } catch (const Error& e) {
        failure = std::make_shared<Failure>(Failure{e.code(), e.op(), e.what()});
      } catch (const std::bad_alloc&) {
        failure = std::make_shared<Failure>(Failure{"OOM", "", "out of memory on cpu"});
      } catch (const std::exception& e) {
        failure = std::make_shared<Failure>(Failure{"INTERNAL", "", e.what()});
      }
    }
    for (auto& out : task.outputs) {
      std::lock_guard<std::mutex> lk(out->mu);
      out->failure = failure;
    }
    std::shared_ptr<const Failure> report = failure;
    {
      std::lock_guard<std::mutex> lk(st->mu);
      if (failure && !task.is_wait && !st->error) st->error = failure;
      if (task.is_wait) {
        // A wait reports its own failure (reading a failed tensor) or else the stream's recorded
        // one; either way the recorded error counts as reported once the wait has shown it.
        // (A failed tensor carries the very Failure its stream recorded, hence the comparison.)
        if (!report && st->error) report = st->error;
        if (report == st->error) st->error.reset();
      }
    }
    if (task.done) task.done(report);
    task = Task();  // release storage references before signalling completion
    {
      std::lock_guard<std::mutex> lk(st->mu);
      st->completed = seq;
    }
    st->cv.notify_all();
  }
}

}  // namespace attnkit::cpu
