// Fibers for the SIMT emulator: guard-paged stacks, the hand-written context switch
// (switch_x86_64.S) and the AddressSanitizer fiber hooks. A fiber runs entry(arg) on its own stack; it
// is resumed by the block scheduler and switches back to it at every synchronisation point.
// Invariant: a fiber is resumed only from the OS thread that prepared it, so thread-local storage
// (the emulated __shared__ variables) is the same for all fibers of a block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

extern "C" void simt_context_switch(void** save_sp, void* load_sp);
extern "C" void simt_context_start();

namespace simt::detail {

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif
#ifndef SIMT_ASAN
#define SIMT_ASAN 0
#endif

// One fiber stack: [lo, lo + guard) is PROT_NONE, [lo + guard, hi) usable.
struct Stack {
  unsigned char* lo = nullptr;
  unsigned char* hi = nullptr;
  size_t guard = 0;
  const void* usable() const { return lo + guard; }
  size_t usable_size() const { return static_cast<size_t>(hi - lo) - guard; }
};

// The stacks of one worker (OS thread), grown on demand and reused from block to block.
class StackPool {
 public:
  StackPool() = default;
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;
  ~StackPool();
  // Stack i (allocated on first use) of `bytes` usable bytes; a pool whose size changes is emptied.
  const Stack& get(size_t i, size_t bytes);
  // The stack whose guard page contains addr, or nullptr (for the SIGSEGV diagnostic).
  const Stack* guard_hit(const void* addr) const;

 private:
  std::vector<Stack> stacks_;
  size_t bytes_ = 0;
};

// Prepares a fresh context on `stack` that will call entry(arg) when first switched to; returns its
// saved stack pointer. Under ASan the stack's shadow is cleared first: a fiber abandoned mid-frame
// would otherwise leave poisoned red zones behind for the next block.
void* prepare_context(const Stack& stack, void (*entry)(void*), void* arg);

// AddressSanitizer fiber annotations (no-ops in other builds). start_switch before every switch,
// finish_switch right after control comes back; fake == nullptr in start_switch when the fiber that is
// switching away has finished for good.
void asan_start_switch(void** fake, const void* bottom, size_t size);
void asan_finish_switch(void* fake, const void** old_bottom, size_t* old_size);

// Installs (once per process) a SIGSEGV handler on an alternate stack that turns a fault in a fiber's
// guard page into "fiber stack overflow" with the CUDA thread's ids, then lets the fault proceed.
// describe(buf, n) writes those ids; it must be async-signal-safe.
void install_stack_overflow_handler();
void set_signal_stack_for_this_thread();
struct OverflowInfo {
  const StackPool* pool;
  void (*describe)(char* buf, size_t n);
};
extern __thread OverflowInfo overflow_info;

}  // namespace simt::detail
