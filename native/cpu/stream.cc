#include "stream.h"

#include <cstdlib>
#include <thread>

#include "buffer.h"

namespace attnkit::cpu {

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
  if (runtime::injected_alloc_failure(runtime::AllocSite::Scratch)) throw runtime::out_of_memory(op, bytes);
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
CpuStream::CpuStream() : runtime::Stream(std::make_shared<runtime::StreamState>()) {
  std::thread(worker_loop, queue_, state_).detach();
}

void CpuStream::worker_loop(std::shared_ptr<runtime::TaskQueue> q, std::shared_ptr<runtime::StreamState> st) {
  std::pair<uint64_t, runtime::Task> item;
  while (q->pop(&item)) {
    auto& [seq, task] = item;
    // Inputs produced on other streams: wait for them (they were enqueued earlier, so no cycle).
    for (auto& in : task.inputs)
      if (in->ready_stream && in->ready_stream != st) in->ready_stream->wait_for(in->ready_seq);
    runtime::FailurePtr failure = runtime::inherited(runtime::first_input_failure(task), task.is_wait);
    if (!failure && task.run) failure = runtime::run_guarded(task.run, "cpu");
    runtime::FailurePtr report = runtime::settle(task, *st, failure);
    if (task.done) task.done(report);
    task = runtime::Task();  // release storage references before signalling completion
    runtime::complete(*st, seq);
  }
}

}  // namespace attnkit::cpu
