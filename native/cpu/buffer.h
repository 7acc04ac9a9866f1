// 64-byte aligned scratch and tensor storage for the CPU backend. Allocation failure throws
// attnkit::Error("OOM"), which the stream records and the next wait reports.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "attnkit/error.h"

namespace attnkit::cpu {

inline void* aligned_alloc64(size_t bytes, const char* op) {
  if (bytes == 0) bytes = 64;
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p)
    throw Error("OOM", op, std::string(op) + ": out of memory allocating " +
                               std::to_string(bytes) + " bytes on cpu");
  return p;
}

// A small per-thread cache of scratch blocks. Each CPU stream runs its ops one after another on
// its own worker thread, so the packed operands and workspaces of one op are reused by the next
// instead of being mapped fresh (large allocations are mmap'ed by malloc, and first-touch page
// faults cost several percent of a small op). At most kScratchCacheBytes stay cached per thread.
void* scratch_acquire(size_t bytes, const char* op);
void scratch_release(void* p, size_t bytes);

template <typename T>
class Scratch {
 public:
  Scratch() = default;
  Scratch(size_t n, const char* op, bool zero = false)
      : p_(static_cast<T*>(scratch_acquire(n * sizeof(T), op))), n_(n) {
    if (zero) std::memset(p_, 0, n * sizeof(T));
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  Scratch& operator=(Scratch&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~Scratch() {
    if (p_) scratch_release(p_, n_ * sizeof(T));
  }
  T* get() const { return p_; }
  T& operator[](size_t i) const { return p_[i]; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace attnkit::cpu
