// Fiber stacks, context preparation, ASan annotations and the stack-overflow diagnostic (fiber.h).
#include "fiber.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cfenv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <xmmintrin.h>

#if SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace simt::detail {

__thread OverflowInfo overflow_info;

namespace {

size_t page_size() {
  static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return p;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "simt: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

}  // namespace

StackPool::~StackPool() {
  for (const Stack& s : stacks_) munmap(s.lo, static_cast<size_t>(s.hi - s.lo));
}

const Stack& StackPool::get(size_t i, size_t bytes) {
  if (bytes != bytes_) {
    for (const Stack& s : stacks_) munmap(s.lo, static_cast<size_t>(s.hi - s.lo));
    stacks_.clear();
    bytes_ = bytes;
  }
  while (stacks_.size() <= i) {
    const size_t guard = page_size();
    const size_t total = guard + bytes;
    // MAP_NORESERVE: 1024 threads x 64 KiB per worker is address space, not memory, until touched.
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap of a fiber stack failed");
    if (mprotect(p, guard, PROT_NONE) != 0) die("mprotect of a fiber stack guard page failed");
    Stack s;
    s.lo = static_cast<unsigned char*>(p);
    s.hi = s.lo + total;
    s.guard = guard;
    stacks_.push_back(s);
  }
  return stacks_[i];
}

const Stack* StackPool::guard_hit(const void* addr) const {
  const unsigned char* a = static_cast<const unsigned char*>(addr);
  for (const Stack& s : stacks_)
    if (a >= s.lo && a < s.lo + s.guard) return &s;
  return nullptr;
}

void* prepare_context(const Stack& stack, void (*entry)(void*), void* arg) {
#if SIMT_ASAN
  __asan_unpoison_memory_region(stack.usable(), stack.usable_size());
#endif
  // The frame simt_context_switch pops (switch_x86_64.S), built so that after its `ret` into
  // simt_context_start the stack pointer is 16-byte aligned, as the `call` there requires.
  uintptr_t top = reinterpret_cast<uintptr_t>(stack.hi) & ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = reinterpret_cast<uint64_t>(&simt_context_start);  // return address
  *--sp = 0;                                                // rbp: ends frame-pointer walks
  *--sp = 0;                                                // rbx
  *--sp = reinterpret_cast<uint64_t>(arg);                  // r12
  *--sp = reinterpret_cast<uint64_t>(entry);                // r13
  *--sp = 0;                                                // r14
  *--sp = 0;                                                // r15
  // MXCSR and x87 control word of the preparing thread, so fibers inherit its floating-point modes.
  std::fenv_t env;
  std::fegetenv(&env);
  const uint32_t mxcsr = _mm_getcsr();
  const uint16_t fcw = env.__control_word;
  uint64_t fp = 0;
  std::memcpy(&fp, &mxcsr, 4);
  std::memcpy(reinterpret_cast<unsigned char*>(&fp) + 4, &fcw, 2);
  *--sp = fp;
  return sp;
}

void asan_start_switch(void** fake, const void* bottom, size_t size) {
#if SIMT_ASAN
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}

void asan_finish_switch(void* fake, const void** old_bottom, size_t* old_size) {
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(fake, old_bottom, old_size);
#else
  (void)fake, (void)old_bottom, (void)old_size;
#endif
}

namespace {

struct sigaction previous_segv;

void write_str(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  const OverflowInfo& oi = overflow_info;
  if (oi.pool != nullptr && oi.pool->guard_hit(info->si_addr) != nullptr) {
    char ids[256] = "";
    if (oi.describe != nullptr) oi.describe(ids, sizeof ids);
    write_str("simt: fiber stack overflow in ");
    write_str(ids);
    write_str(" (the guard page below a CUDA thread's stack was hit; raise SIMT_STACK_KB, default 64)\n");
    signal(SIGSEGV, SIG_DFL);  // returning re-executes the faulting access, which now kills the process
    return;
  }
  if (previous_segv.sa_flags & SA_SIGINFO) {
    if (previous_segv.sa_sigaction != nullptr) {
      previous_segv.sa_sigaction(sig, info, uctx);
      return;
    }
  } else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN &&
             previous_segv.sa_handler != nullptr) {
    previous_segv.sa_handler(sig);
    return;
  }
  signal(SIGSEGV, SIG_DFL);
}

}  // namespace

void install_stack_overflow_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
  });
}

void set_signal_stack_for_this_thread() {
  // The handler must not run on the overflowed fiber stack. The alternate stack belongs to the worker
  // thread, which lives as long as the process.
  const size_t bytes = 64 * 1024;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap of a signal stack failed");
  stack_t ss;
  ss.ss_sp = p;
  ss.ss_size = bytes;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, nullptr) != 0) die("sigaltstack failed");
}

}  // namespace simt::detail
