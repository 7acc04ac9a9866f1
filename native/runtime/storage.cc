#include "storage.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "attnkit/error.h"

namespace attnkit::runtime {

static std::atomic<int64_t> g_live_bytes{0};

int64_t live_host_bytes() { return g_live_bytes.load(); }

Error out_of_memory(const char* op, size_t bytes) {
  return Error("OOM", op, std::string(op) + ": out of memory allocating " + std::to_string(bytes) + " bytes on cpu");
}

static std::atomic<int64_t> g_armed[2]{0, 0};

void arm_alloc_failures(AllocSite site, int64_t n) { g_armed[int(site)].store(n < 0 ? 0 : n); }
int64_t armed_alloc_failures(AllocSite site) { return g_armed[int(site)].load(); }

bool injected_alloc_failure(AllocSite site) {
  std::atomic<int64_t>& armed = g_armed[int(site)];
  int64_t n = armed.load(std::memory_order_relaxed);
  while (n > 0)
    if (armed.compare_exchange_weak(n, n - 1)) return true;
  return false;
}

static void* host_alloc(size_t bytes) {
  const size_t rounded = (bytes == 0 ? 64 : (bytes + 63) / 64 * 64);
  void* p = injected_alloc_failure(AllocSite::Storage) ? nullptr : std::aligned_alloc(64, rounded);
  if (!p) throw out_of_memory("empty", bytes);
  return p;
}

Storage::Storage(DType t, int64_t n) : dtype(t), numel(n), bytes(size_t(n * dtype_size(t))) {
  data = host_alloc(bytes);
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

FailurePtr Storage::get_failure() {
  std::lock_guard<std::mutex> lk(mu);
  return failure;
}

}  // namespace attnkit::runtime
