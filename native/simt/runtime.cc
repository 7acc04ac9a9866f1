// The SIMT emulator's runtime: worker pool, per-block fiber scheduler, barriers, warp collectives
// (shuffles, votes, reductions, __syncwarp, mma.sync, ldmatrix), deferred cp.async, and the reports
// of everything that would be undefined behaviour or a hang on a GPU.
//
// Scheduling: the fibers of a block are resumed one after another in thread order (forward or
// reversed: the warps advance almost in lockstep, collective by collective), or warp by warp (ahead:
// one warp runs alone until all its threads wait at a barrier or have returned, then the next; the
// warp that leads rotates with every barrier). A fiber runs until it waits (barrier, warp
// collective) or returns. A warp collective is computed by the last lane of its mask to arrive, from
// the operands every lane deposited, and the other lanes are made runnable again. When no fiber can run, either every live thread waits at the
// same __syncthreads (released) or the block is stuck (reported with every thread's wait site).
// Shared-memory hazards: every 16-byte granule of dynamic shared memory remembers the warp that last
// wrote it through cp.async and the warps that read it through ldmatrix since the last barrier; a
// cross-warp write after read, read after write or write after write with no __syncthreads between
// them is reported, whatever the thread order (plain loads and stores are not seen).
// On an error the block is aborted: every started fiber is resumed once more and unwinds by an
// internal exception, so that destructors run and the stacks can be reused.
#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fiber.h"
#include "fragments.h"
#include "simt.h"

namespace simt::detail {

__thread Tls tls;

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr size_t kMaxDynamicSmem = 227 * 1024;  // the largest opt-in on any target (sm_90)

enum class State : uint8_t { Runnable, Barrier, Collective, Done };
enum class Kind : uint8_t { Shfl, Vote, Reduce, SyncWarp, Mma, Ldmatrix };

// Thrown inside a fiber to unwind it when its block is aborted. Not derived from std::exception, so
// that kernel code catching std::exception does not swallow it.
struct AbortBlock {};

struct LaneIn {
  uint64_t v = 0;
  int arg = 0;
  int width = 32;
  uint32_t u[6] = {};
  float f[4] = {};
  const void* p = nullptr;
};
struct LaneOut {
  uint64_t v = 0;
  uint32_t u[4] = {};
  float f[4] = {};
};

struct Copy {
  void* dst;
  unsigned char data[16];
  Site site;
};

struct Thread {
  ThreadRegs regs{};
  int linear = 0;
  int warp = 0;
  int lane = 0;
  void* sp = nullptr;
  Stack stack;
  void* asan_fake = nullptr;
  State state = State::Runnable;
  bool started = false;
  Site site{nullptr, 0};  // where it waits
  const char* what = "";
  int bar_kind = 0;
  int bar_pred = 0;
  int bar_result = 0;
  LaneIn in;
  LaneOut out;
  std::vector<Copy> copies;        // cp.async issued and not yet performed, oldest first
  std::vector<size_t> group_ends;  // committed groups: end index into copies, oldest first
};

// A warp collective that some lanes of `mask` have joined.
struct Pending {
  Kind kind;
  int sub;  // variant: shuffle mode, vote mode, mma type, ldmatrix count/trans
  Site site;
  const char* what;
  unsigned mask;
  unsigned arrived;
};

enum class Order { Forward, Reverse, Ahead };

// What the hazard check keeps per 16-byte granule of dynamic shared memory. Epochs count the
// barriers a worker has released (never reset, so a granule of an earlier block is simply stale).
struct Granule {
  uint64_t write_epoch = 0;  // when `writer` last wrote it (cp.async issue or completion)
  uint64_t read_epoch = 0;   // the epoch `readers` belong to
  uint32_t readers = 0;      // warps that read it (ldmatrix) in read_epoch
  int writer = -1;
  Site write_site{nullptr, 0};
  const char* write_what = "";
  Site read_site{nullptr, 0};  // the last read, its instruction and warp
  const char* read_what = "";
  int read_warp = -1;
};

struct Launch {
  LaunchSpec spec;
  Order order = Order::Forward;
  uint64_t nblocks = 0;
  int nthreads = 0;
  size_t stack_bytes = 0;
  bool poison_static = true;
  bool hazards = true;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex m;
  std::string error;

  void fail(const std::string& msg) {
    std::lock_guard<std::mutex> lk(m);
    if (!failed.load()) error = msg;
    failed.store(true);
  }
};

bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && (a.file == b.file || (a.file && b.file && std::strcmp(a.file, b.file) == 0));
}

std::string str(const Site& s) { return std::string(s.file ? s.file : "?") + ":" + std::to_string(s.line); }

std::string hex(unsigned v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08x", v);
  return b;
}

// "0-15, 17, 20-31"
std::string ranges(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += std::to_string(ids[i]);
    if (j > i) s += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return s.empty() ? "none" : s;
}

std::string ptr(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

std::string lanes(unsigned mask) {
  std::vector<int> v;
  for (int l = 0; l < 32; ++l)
    if (mask & (1u << l)) v.push_back(l);
  return ranges(v);
}

const char* getenv_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : dflt;
}

uint64_t half_bits_to_f32_bits(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return sign;
    float f = std::ldexp(static_cast<float>(man), -24);  // subnormal: exact in f32
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return sign | b;
  }
  if (exp == 31) return sign | 0x7f800000u | (man << 13);
  return sign | ((exp + 112) << 23) | (man << 13);
}

float unpack(uint32_t reg, int half, MmaType type) {
  const uint32_t bits16 = (reg >> (16 * half)) & 0xffffu;
  const uint32_t bits32 = type == MmaType::BF16 ? bits16 << 16 : static_cast<uint32_t>(half_bits_to_f32_bits(bits16));
  float f;
  std::memcpy(&f, &bits32, 4);
  return f;
}

class Worker;
void fiber_main(void* arg);

// Finds the calling thread's instance of the thread-local block (PT_TLS) of the module containing
// `addr`: where that module's __shared__ variables live on this OS thread.
struct TlsBlock {
  unsigned char* data = nullptr;
  size_t size = 0;
  bool known = false;
};

TlsBlock tls_block_of(const void* addr) {
  struct Query {
    uintptr_t addr;
    TlsBlock out;
  } q{reinterpret_cast<uintptr_t>(addr), {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        Query& query = *static_cast<Query*>(data);
        bool contains = false;
        size_t tls_size = 0;
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type == PT_LOAD) {
            const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
            if (query.addr >= lo && query.addr < lo + ph.p_memsz) contains = true;
          } else if (ph.p_type == PT_TLS) {
            tls_size = ph.p_memsz;
          }
        }
        if (!contains) return 0;
        if (tls_size == 0) {
          query.out.known = true;  // no thread-locals at all: no static shared memory
        } else if (info->dlpi_tls_data != nullptr) {
          query.out.data = static_cast<unsigned char*>(info->dlpi_tls_data);
          query.out.size = tls_size;
          query.out.known = true;
        }
        return 1;
      },
      &q);
  return q.out;
}

// One OS thread of the pool: runs blocks of the current launch, one at a time.
class Worker {
 public:
  void run(Launch& L);

  // ---- called on fibers (kernel code) ----
  [[noreturn]] void fail(const std::string& msg);
  void suspend(Thread& t);
  LaneOut& collective(Kind kind, int sub, const char* what, unsigned mask, const Site& site, const LaneIn& in);
  int barrier(int kind, int pred, const Site& site);
  bool is_shared(const void* p, size_t n) const;
  std::string who(const Thread& t) const;  // "thread 35 (35,0,0), warp 1, lane 3"
  std::string prefix() const;              // "simt: kernel 'k', block (0,0,0): "
  void cp_async(const void* src, void* dst, int src_bytes, const Site& site);
  void cp_commit(const Site& site);
  void cp_wait(int n, const Site& site);
  void smem_read(int warp, const void* p, const Site& site, const char* what);
  void smem_write(const Thread& t, const void* p, const Site& site, const char* what);
  void on_exit(Thread& t);
  void record_error(const std::string& msg);

  Launch* launch_ = nullptr;
  Thread* current_ = nullptr;
  void* sched_sp_ = nullptr;
  void* sched_fake_ = nullptr;
  const void* sched_bottom_ = nullptr;
  size_t sched_size_ = 0;

 private:
  void run_block(uint64_t b);
  void resume(Thread& t);
  void schedule();
  void abort_all();
  void resolve_stall();
  Granule* granule(const void* p);
  void compute(int warp, const Pending& p);
  Thread& lane_thread(int warp, int lane) { return threads_[static_cast<size_t>(warp * 32 + lane)]; }
  unsigned lanes_of_warp(int warp) const {
    const int n = std::min(32, nthreads_ - warp * 32);
    return n >= 32 ? kFullMask : ((1u << n) - 1u);
  }

  StackPool stacks_;
  std::vector<Thread> threads_;
  std::vector<std::vector<Pending>> pending_;  // per warp
  std::vector<unsigned> exited_lanes_;         // per warp
  BlockRegs block_{};
  TlsBlock tls_block_;
  int nthreads_ = 0;
  int live_ = 0;
  int exited_ = 0;
  int at_barrier_ = 0;
  Order order_ = Order::Forward;
  bool aborting_ = false;
  bool hazards_ = true;
  uint64_t block_barriers_ = 0;    // barriers released in this block (which warp leads, ahead)
  uint64_t block_linear_ = 0;      // this block's linear index
  uint64_t epoch_ = 1;             // barriers released by this worker, plus one per block
  std::vector<Granule> granules_;  // per 16 bytes of dynamic shared memory
  std::string error_;
};

Worker* worker_or_throw(const char* what, const Site& site) {
  Worker* w = static_cast<Worker*>(tls.worker);
  if (w == nullptr || w->current_ == nullptr)
    throw Error(std::string("simt: ") + what + " called outside a kernel launch (" + str(site) + ")");
  return w;
}

void describe_current(char* buf, size_t n) {
  Worker* w = static_cast<Worker*>(tls.worker);
  if (w == nullptr || w->current_ == nullptr || w->launch_ == nullptr) {
    std::snprintf(buf, n, "a fiber");
    return;
  }
  const Thread& t = *w->current_;
  const BlockRegs& b = *tls.block;
  std::snprintf(buf, n, "kernel '%s', block (%u,%u,%u), thread %d (%u,%u,%u)", w->launch_->spec.name,
                b.block_idx.x, b.block_idx.y, b.block_idx.z, t.linear, t.regs.thread_idx.x, t.regs.thread_idx.y,
                t.regs.thread_idx.z);
}

std::string Worker::who(const Thread& t) const {
  const uint3& i = t.regs.thread_idx;
  return "thread " + std::to_string(t.linear) + " (" + std::to_string(i.x) + "," + std::to_string(i.y) + "," +
         std::to_string(i.z) + "), warp " + std::to_string(t.warp) + ", lane " + std::to_string(t.lane);
}

std::string Worker::prefix() const {
  const uint3& b = block_.block_idx;
  return std::string("simt: kernel '") + launch_->spec.name + "', block (" + std::to_string(b.x) + "," +
         std::to_string(b.y) + "," + std::to_string(b.z) + "): ";
}

void Worker::record_error(const std::string& msg) {
  if (!aborting_) error_ = prefix() + msg;
  aborting_ = true;
}

void Worker::fail(const std::string& msg) {
  record_error(msg);
  throw AbortBlock{};
}

void Worker::run(Launch& L) {
  launch_ = &L;
  tls.worker = this;
  overflow_info.pool = &stacks_;
  overflow_info.describe = &describe_current;
  order_ = L.order;
  hazards_ = L.hazards;
  tls_block_ = tls_block_of(L.spec.kernel_address);
  for (;;) {
    if (L.failed.load(std::memory_order_relaxed)) break;
    const uint64_t b = L.next.fetch_add(1, std::memory_order_relaxed);
    if (b >= L.nblocks) break;
    run_block(b);
  }
  tls.worker = nullptr;
  tls.block = nullptr;
  launch_ = nullptr;
}

void Worker::run_block(uint64_t b) {
  Launch& L = *launch_;
  const dim3 g = L.spec.grid;
  const dim3 bd = L.spec.block;
  block_.block_idx = make_uint3(static_cast<unsigned>(b % g.x), static_cast<unsigned>((b / g.x) % g.y),
                                static_cast<unsigned>(b / (static_cast<uint64_t>(g.x) * g.y)));
  block_.block_dim = bd;
  block_.grid_dim = g;
  nthreads_ = L.nthreads;
  live_ = nthreads_;
  exited_ = 0;
  at_barrier_ = 0;
  aborting_ = false;
  error_.clear();
  const int nwarps = (nthreads_ + 31) / 32;
  pending_.assign(static_cast<size_t>(nwarps), {});
  exited_lanes_.assign(static_cast<size_t>(nwarps), 0u);

  // Dynamic shared memory: exactly the launch's size, so that ASan's red zones sit right after it;
  // 0xFF is NaN in f16, bf16 and f32.
  void* smem = nullptr;
  if (posix_memalign(&smem, 128, L.spec.dynamic_smem_bytes) != 0) smem = nullptr;
  if (smem == nullptr && L.spec.dynamic_smem_bytes > 0) {
    L.fail(prefix() + "could not allocate " + std::to_string(L.spec.dynamic_smem_bytes) +
           " bytes of dynamic shared memory");
    return;
  }
  std::memset(smem, 0xff, L.spec.dynamic_smem_bytes);
  block_.dynamic_smem = static_cast<unsigned char*>(smem);
  block_.dynamic_smem_bytes = L.spec.dynamic_smem_bytes;
  ++epoch_;  // what an earlier block recorded is stale
  block_barriers_ = 0;
  block_linear_ = b;
  if (hazards_ && granules_.size() < (L.spec.dynamic_smem_bytes + 15) / 16)
    granules_.resize((L.spec.dynamic_smem_bytes + 15) / 16);

  // Static __shared__ variables are this OS thread's instances of the kernel module's thread-locals.
  // Poison them all, keeping the emulator's own thread-locals (which live in the same block when the
  // emulator is linked into the kernel's executable).
  if (L.poison_static && tls_block_.data != nullptr) {
    const Tls saved_tls = tls;
    const OverflowInfo saved_overflow = overflow_info;
    std::memset(tls_block_.data, 0xff, tls_block_.size);
    tls = saved_tls;
    overflow_info = saved_overflow;
  }
  tls.block = &block_;

  if (threads_.size() < static_cast<size_t>(nthreads_)) threads_.resize(static_cast<size_t>(nthreads_));
  stacks_.get(static_cast<size_t>(nthreads_ - 1), L.stack_bytes);  // grow once, then copy descriptors
  for (int i = 0; i < nthreads_; ++i) {
    Thread& t = threads_[static_cast<size_t>(i)];
    const unsigned ui = static_cast<unsigned>(i);
    t.regs.thread_idx = make_uint3(ui % bd.x, (ui / bd.x) % bd.y, ui / (bd.x * bd.y));
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.state = State::Runnable;
    t.started = false;
    t.site = Site{nullptr, 0};
    t.what = "";
    t.asan_fake = nullptr;
    t.copies.clear();
    t.group_ends.clear();
    t.stack = stacks_.get(static_cast<size_t>(i), L.stack_bytes);
    t.sp = prepare_context(t.stack, &fiber_main, &t);
  }

  schedule();

  tls.block = nullptr;
  block_.dynamic_smem = nullptr;
  std::free(smem);
  if (aborting_) L.fail(error_);
}

void Worker::resume(Thread& t) {
  current_ = &t;
  tls.thread = &t.regs;
  t.started = true;
  asan_start_switch(&sched_fake_, t.stack.usable(), t.stack.usable_size());
  simt_context_switch(&sched_sp_, t.sp);
  asan_finish_switch(sched_fake_, nullptr, nullptr);
  current_ = nullptr;
  tls.thread = nullptr;
}

void Worker::suspend(Thread& t) {
  asan_start_switch(&t.asan_fake, sched_bottom_, sched_size_);
  simt_context_switch(&t.sp, sched_sp_);
  asan_finish_switch(t.asan_fake, &sched_bottom_, &sched_size_);
  if (aborting_) throw AbortBlock{};
}

void fiber_main(void* arg) {
  Thread& t = *static_cast<Thread*>(arg);
  Worker& w = *static_cast<Worker*>(tls.worker);
  asan_finish_switch(nullptr, &w.sched_bottom_, &w.sched_size_);
  try {
    w.launch_->spec.invoke(w.launch_->spec.ctx);
  } catch (const AbortBlock&) {
  } catch (const std::exception& e) {
    w.record_error(w.who(t) + " threw an exception out of the kernel: " + e.what());
  } catch (...) {
    w.record_error(w.who(t) + " threw an exception out of the kernel");
  }
  w.on_exit(t);
  asan_start_switch(nullptr, w.sched_bottom_, w.sched_size_);
  void* unused;
  simt_context_switch(&unused, w.sched_sp_);
  __builtin_trap();  // a finished fiber is never resumed
}

void Worker::schedule() {
  const int n = nthreads_;
  const int nwarps = (n + 31) / 32;
  for (;;) {
    bool ran = false;
    if (order_ == Order::Ahead) {
      // One warp at a time, to its next barrier (or its end); which warp goes first rotates.
      const int lead = static_cast<int>((block_barriers_ + block_linear_) % static_cast<uint64_t>(nwarps));
      for (int i = 0; i < nwarps; ++i) {
        const int w = (lead + i) % nwarps;
        for (bool again = true; again;) {
          again = false;
          for (int k = w * 32; k < std::min(n, w * 32 + 32); ++k) {
            Thread& t = threads_[static_cast<size_t>(k)];
            if (t.state != State::Runnable) continue;
            resume(t);
            again = ran = true;
            if (aborting_) return abort_all();
          }
        }
      }
    } else {
      for (int k = 0; k < n; ++k) {
        Thread& t = threads_[static_cast<size_t>(order_ == Order::Reverse ? n - 1 - k : k)];
        if (t.state != State::Runnable) continue;
        resume(t);
        ran = true;
        if (aborting_) return abort_all();
      }
    }
    if (ran) continue;
    if (live_ == 0) return;
    resolve_stall();
    if (aborting_) return abort_all();
  }
}

void Worker::abort_all() {
  for (int i = 0; i < nthreads_; ++i) {
    Thread& t = threads_[static_cast<size_t>(i)];
    if (t.state == State::Done) continue;
    if (!t.started) {
      t.state = State::Done;
      continue;
    }
    resume(t);  // its wait throws AbortBlock; the fiber unwinds and finishes
  }
}

void Worker::on_exit(Thread& t) {
  t.state = State::Done;
  --live_;
  ++exited_;
  const unsigned bit = 1u << t.lane;
  exited_lanes_[static_cast<size_t>(t.warp)] |= bit;
  if (aborting_) return;
  if (!t.copies.empty()) {
    record_error(who(t) + " returned from the kernel with " + std::to_string(t.copies.size()) +
                 " cp.async cop" + (t.copies.size() == 1 ? "y" : "ies") + " not waited for (first issued at " +
                 str(t.copies.front().site) + "); wait with cp_async_wait<N>() / cp_async_wait_all() first");
    return;
  }
  for (const Pending& p : pending_[static_cast<size_t>(t.warp)]) {
    if (p.mask & bit) {
      record_error(who(t) + " returned from the kernel while lanes " + lanes(p.arrived) + " of warp " +
                   std::to_string(t.warp) + " wait for it in " + p.what + " at " + str(p.site) + " (mask " +
                   hex(p.mask) + "): every lane named in the mask must take part");
      return;
    }
  }
  if (at_barrier_ == 0) return;
  std::vector<int> waiting;
  const Thread* first = nullptr;
  for (int i = 0; i < nthreads_; ++i) {
    const Thread& o = threads_[static_cast<size_t>(i)];
    if (o.state == State::Barrier) {
      waiting.push_back(i);
      if (!first) first = &o;
    }
  }
  if (first) {
    record_error(who(t) + " returned from the kernel while threads " + ranges(waiting) + " wait at " + first->what +
                 " (" + str(first->site) + "): every thread of the block must reach the barrier");
  }
}

int Worker::barrier(int kind, int pred, const Site& site) {
  static const char* const names[] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and",
                                      "__syncthreads_or"};
  Thread& t = *current_;
  t.state = State::Barrier;
  t.site = site;
  t.what = names[kind];
  t.bar_kind = kind;
  t.bar_pred = pred != 0;
  ++at_barrier_;
  suspend(t);
  return t.bar_result;
}

void Worker::resolve_stall() {
  std::vector<int> at_barrier;
  for (int i = 0; i < nthreads_; ++i)
    if (threads_[static_cast<size_t>(i)].state == State::Barrier) at_barrier.push_back(i);

  if (static_cast<int>(at_barrier.size()) == live_) {
    const Thread& first = threads_[static_cast<size_t>(at_barrier.front())];
    if (exited_ > 0) {
      std::vector<int> gone;
      for (int i = 0; i < nthreads_; ++i)
        if (threads_[static_cast<size_t>(i)].state == State::Done) gone.push_back(i);
      record_error(std::string("threads ") + ranges(at_barrier) + " wait at " + first.what + " (" + str(first.site) +
                   ") but threads " + ranges(gone) +
                   " have returned from the kernel: every thread of the block must reach the barrier");
      return;
    }
    // Same call site and same barrier flavour for everyone, or the barrier is divergent.
    std::vector<std::pair<const Thread*, std::vector<int>>> groups;
    for (int i : at_barrier) {
      const Thread& t = threads_[static_cast<size_t>(i)];
      auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) {
        return same_site(g.first->site, t.site) && g.first->bar_kind == t.bar_kind;
      });
      if (it == groups.end()) groups.push_back({&t, {i}});
      else it->second.push_back(i);
    }
    if (groups.size() > 1) {
      std::string msg = "divergent barrier: the threads of the block wait at different barriers:";
      for (const auto& g : groups)
        msg += std::string(" threads ") + ranges(g.second) + " at " + g.first->what + " (" + str(g.first->site) + ");";
      msg.pop_back();
      record_error(msg);
      return;
    }
    int count = 0;
    for (int i : at_barrier) count += threads_[static_cast<size_t>(i)].bar_pred;
    for (int i : at_barrier) {
      Thread& t = threads_[static_cast<size_t>(i)];
      switch (t.bar_kind) {
        case 1: t.bar_result = count; break;
        case 2: t.bar_result = count == live_; break;
        case 3: t.bar_result = count > 0; break;
        default: t.bar_result = 0; break;
      }
      t.state = State::Runnable;
    }
    at_barrier_ = 0;
    ++epoch_;
    ++block_barriers_;
    return;
  }

  // Deadlock: describe where every live thread waits.
  std::string msg = "deadlock: no thread can proceed;";
  std::vector<std::pair<const Thread*, std::vector<int>>> groups;
  for (int i = 0; i < nthreads_; ++i) {
    const Thread& t = threads_[static_cast<size_t>(i)];
    if (t.state != State::Barrier) continue;
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return same_site(g.first->site, t.site); });
    if (it == groups.end()) groups.push_back({&t, {i}});
    else it->second.push_back(i);
  }
  for (const auto& g : groups)
    msg += std::string(" threads ") + ranges(g.second) + " wait at " + g.first->what + " (" + str(g.first->site) + ");";
  for (size_t w = 0; w < pending_.size(); ++w) {
    for (const Pending& p : pending_[w]) {
      std::vector<int> ids;
      for (int l = 0; l < 32; ++l)
        if (p.arrived & (1u << l)) ids.push_back(static_cast<int>(w) * 32 + l);
      msg += " threads " + ranges(ids) + " (warp " + std::to_string(w) + ", lanes " + lanes(p.arrived) + ") wait in " +
             p.what + " (" + str(p.site) + ") for lanes " + lanes(p.mask & ~p.arrived) + " of mask " + hex(p.mask) + ";";
    }
  }
  std::vector<int> gone;
  for (int i = 0; i < nthreads_; ++i)
    if (threads_[static_cast<size_t>(i)].state == State::Done) gone.push_back(i);
  if (!gone.empty()) msg += " threads " + ranges(gone) + " have returned;";
  msg.pop_back();
  record_error(msg);
}

bool Worker::is_shared(const void* p, size_t n) const {
  const unsigned char* a = static_cast<const unsigned char*>(p);
  const unsigned char* d = block_.dynamic_smem;
  if (d != nullptr && a >= d && a + n <= d + block_.dynamic_smem_bytes) return true;
  if (!tls_block_.known) return true;  // cannot tell: do not claim a violation
  const unsigned char* s = tls_block_.data;
  return s != nullptr && a >= s && a + n <= s + tls_block_.size;
}

LaneOut& Worker::collective(Kind kind, int sub, const char* what, unsigned mask, const Site& site, const LaneIn& in) {
  Thread& t = *current_;
  const unsigned bit = 1u << t.lane;
  const auto at = [&] { return std::string(what) + " at " + str(site) + ": "; };
  if (!(mask & bit)) fail(at() + who(t) + " calls it with mask " + hex(mask) + ", which does not name the calling lane");
  const unsigned exists = lanes_of_warp(t.warp);
  if (mask & ~exists)
    fail(at() + who(t) + ": mask " + hex(mask) + " names lanes " + lanes(mask & ~exists) +
         " that do not exist (the block has " + std::to_string(nthreads_) + " threads)");
  const unsigned gone = exited_lanes_[static_cast<size_t>(t.warp)];
  if (mask & gone)
    fail(at() + who(t) + ": mask " + hex(mask) + " names lanes " + lanes(mask & gone) +
         " that have returned from the kernel");

  std::vector<Pending>& pend = pending_[static_cast<size_t>(t.warp)];
  size_t idx = pend.size();
  for (size_t i = 0; i < pend.size(); ++i)
    if (pend[i].mask & mask) {
      idx = i;
      break;
    }
  if (idx < pend.size()) {
    const Pending& p = pend[idx];
    if (p.mask != mask)
      fail(at() + who(t) + " joins with mask " + hex(mask) + " while lanes " + lanes(p.arrived) + " wait in " + p.what +
           " (" + str(p.site) + ") with the overlapping mask " + hex(p.mask));
    if (p.kind != kind || p.sub != sub || !same_site(p.site, site))
      fail(std::string("lanes of warp ") + std::to_string(t.warp) + " disagree: " + who(t) + " is at " + what + " (" +
           str(site) + ") while lanes " + lanes(p.arrived) + " wait in " + p.what + " (" + str(p.site) +
           "); all lanes of the mask must execute the same collective from the same call site");
  } else {
    pend.push_back(Pending{kind, sub, site, what, mask, 0u});
  }
  t.in = in;
  pend[idx].arrived |= bit;
  if (pend[idx].arrived != mask) {
    t.state = State::Collective;
    t.site = site;
    t.what = what;
    suspend(t);
    return t.out;
  }
  const Pending done = pend[idx];
  pend.erase(pend.begin() + static_cast<std::ptrdiff_t>(idx));
  compute(t.warp, done);
  for (int l = 0; l < 32; ++l) {
    if (!(mask & (1u << l)) || l == t.lane) continue;
    lane_thread(t.warp, l).state = State::Runnable;
  }
  return t.out;
}

void Worker::compute(int warp, const Pending& p) {
  const unsigned mask = p.mask;
  const auto at = [&] { return std::string(p.what) + " at " + str(p.site) + ": "; };
  switch (p.kind) {
    case Kind::Shfl: {
      // PTX shfl.sync with c = ((32 - width) << 8) | (up ? 0 : 31): segmask selects the segment of
      // `width` lanes; a source outside the valid range reads the lane's own value.
      const ShflMode mode = static_cast<ShflMode>(p.sub);
      for (int l = 0; l < 32; ++l) {
        if (!(mask & (1u << l))) continue;
        Thread& x = lane_thread(warp, l);
        const int width = x.in.width;
        if (width < 1 || width > 32 || (width & (width - 1)) != 0)
          fail(at() + who(x) + " passes width " + std::to_string(width) + " (must be a power of two in 1..32)");
        const int segmask = (32 - width) & 31;
        const int cval = mode == ShflMode::Up ? 0 : 31;
        const int b = x.in.arg & 31;
        const int max_lane = (l & segmask) | (cval & ~segmask);
        const int min_lane = l & segmask;
        int j = l;
        bool ok = false;
        switch (mode) {
          case ShflMode::Up: j = l - b; ok = j >= max_lane; break;
          case ShflMode::Down: j = l + b; ok = j <= max_lane; break;
          case ShflMode::Xor: j = l ^ b; ok = j <= max_lane; break;
          case ShflMode::Idx: j = min_lane | (b & ~segmask); ok = j <= max_lane; break;
        }
        if (!ok) j = l;
        // Reading a lane outside the mask is undefined on a GPU: hand back poison (NaN for floats).
        x.out.v = (mask & (1u << j)) ? lane_thread(warp, j).in.v : ~uint64_t(0);
      }
      return;
    }
    case Kind::Vote: {
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l)
        if ((mask & (1u << l)) && lane_thread(warp, l).in.arg != 0) ballot |= 1u << l;
      const VoteMode mode = static_cast<VoteMode>(p.sub);
      const unsigned r = mode == VoteMode::Ballot ? ballot : mode == VoteMode::Any ? (ballot != 0) : (ballot == mask);
      for (int l = 0; l < 32; ++l)
        if (mask & (1u << l)) lane_thread(warp, l).out.v = r;
      return;
    }
    case Kind::Reduce: {
      const ReduceOp op = static_cast<ReduceOp>(p.sub);
      bool first = true;
      uint32_t acc = 0;
      for (int l = 0; l < 32; ++l) {
        if (!(mask & (1u << l))) continue;
        const uint32_t v = static_cast<uint32_t>(lane_thread(warp, l).in.v);
        if (first) {
          acc = v;
          first = false;
          continue;
        }
        switch (op) {
          case ReduceOp::AddU: case ReduceOp::AddI: acc += v; break;
          case ReduceOp::MinU: acc = std::min(acc, v); break;
          case ReduceOp::MaxU: acc = std::max(acc, v); break;
          case ReduceOp::MinI: acc = static_cast<uint32_t>(std::min(static_cast<int32_t>(acc), static_cast<int32_t>(v))); break;
          case ReduceOp::MaxI: acc = static_cast<uint32_t>(std::max(static_cast<int32_t>(acc), static_cast<int32_t>(v))); break;
          case ReduceOp::And: acc &= v; break;
          case ReduceOp::Or: acc |= v; break;
          case ReduceOp::Xor: acc ^= v; break;
        }
      }
      for (int l = 0; l < 32; ++l)
        if (mask & (1u << l)) lane_thread(warp, l).out.v = acc;
      return;
    }
    case Kind::SyncWarp:
      return;
    case Kind::Mma: {
      // D = A * B + C for one 16x8x16 tile; products and sum in double, rounded once to f32 (tensor
      // cores truncate partial sums differently: compare with tolerances).
      const MmaType type = static_cast<MmaType>(p.sub);
      float A[16][16], B[16][8], C[16][8];
      for (int l = 0; l < 32; ++l) {
        const LaneIn& in = lane_thread(warp, l).in;
        for (int i = 0; i < 8; ++i) {
          const fragments::RowCol rc = fragments::mma_a(l, i);
          A[rc.row][rc.col] = unpack(in.u[i >> 1], i & 1, type);
        }
        for (int i = 0; i < 4; ++i) {
          const fragments::RowCol rc = fragments::mma_b(l, i);
          B[rc.row][rc.col] = unpack(in.u[4 + (i >> 1)], i & 1, type);
        }
        for (int i = 0; i < 4; ++i) {
          const fragments::RowCol rc = fragments::mma_c(l, i);
          C[rc.row][rc.col] = in.f[i];
        }
      }
      for (int l = 0; l < 32; ++l) {
        LaneOut& out = lane_thread(warp, l).out;
        for (int i = 0; i < 4; ++i) {
          const fragments::RowCol rc = fragments::mma_c(l, i);
          double s = C[rc.row][rc.col];
          for (int k = 0; k < 16; ++k) s += static_cast<double>(A[rc.row][k]) * static_cast<double>(B[k][rc.col]);
          out.f[i] = static_cast<float>(s);
        }
      }
      return;
    }
    case Kind::Ldmatrix: {
      const int num = p.sub >> 1;
      const bool trans = (p.sub & 1) != 0;
      uint16_t M[4][8][8];
      for (int j = 0; j < num; ++j) {
        for (int r = 0; r < 8; ++r) {
          const Thread& src = lane_thread(warp, 8 * j + r);
          const void* a = src.in.p;
          if (reinterpret_cast<uintptr_t>(a) % 16 != 0)
            fail(at() + "row " + std::to_string(r) + " of matrix " + std::to_string(j) + " comes from " + who(src) +
                 ", whose address " + ptr(a) + " is not 16-byte aligned");
          if (!is_shared(a, 16))
            fail(at() + "row " + std::to_string(r) + " of matrix " + std::to_string(j) + " comes from " + who(src) +
                 ", whose address is not in this block's shared memory");
          smem_read(warp, a, p.site, p.what);
          std::memcpy(M[j][r], a, 16);
        }
      }
      for (int l = 0; l < 32; ++l) {
        LaneOut& out = lane_thread(warp, l).out;
        for (int j = 0; j < num; ++j) {
          const fragments::RowCol lo = fragments::ldmatrix(l, 0, trans);
          const fragments::RowCol hi = fragments::ldmatrix(l, 1, trans);
          out.u[j] = static_cast<uint32_t>(M[j][lo.row][lo.col]) | (static_cast<uint32_t>(M[j][hi.row][hi.col]) << 16);
        }
      }
      return;
    }
  }
}

void Worker::cp_async(const void* src, void* dst, int src_bytes, const Site& site) {
  Thread& t = *current_;
  const auto at = [&] { return "cp.async at " + str(site) + ": " + who(t); };
  if (src_bytes < 0 || src_bytes > 16) fail(at() + " passes src-size " + std::to_string(src_bytes) + " (must be 0..16)");
  if (reinterpret_cast<uintptr_t>(dst) % 16 != 0) fail(at() + ": the shared-memory destination is not 16-byte aligned");
  if (src_bytes > 0 && reinterpret_cast<uintptr_t>(src) % 16 != 0)
    fail(at() + ": the global-memory source is not 16-byte aligned");
  if (!is_shared(dst, 16)) fail(at() + ": the destination is not in this block's shared memory");
  smem_write(t, dst, site, "cp.async");
  Copy c;
  c.dst = dst;
  c.site = site;
  std::memset(c.data, 0, sizeof c.data);
  // The source is read now (an out-of-bounds read is reported at the cp.async), the destination is
  // written at the wait; until then it holds poison.
  if (src_bytes > 0) std::memcpy(c.data, src, static_cast<size_t>(src_bytes));
  std::memset(dst, 0xff, 16);
  t.copies.push_back(c);
}

void Worker::cp_commit(const Site&) {
  Thread& t = *current_;
  t.group_ends.push_back(t.copies.size());  // an empty group is allowed, as in PTX
}

void Worker::cp_wait(int n, const Site& site) {
  Thread& t = *current_;
  if (n < 0) fail("cp.async.wait_group at " + str(site) + ": " + who(t) + " waits for a negative count");
  const size_t groups = t.group_ends.size();
  if (groups <= static_cast<size_t>(n)) return;
  const size_t done_groups = groups - static_cast<size_t>(n);
  const size_t upto = t.group_ends[done_groups - 1];
  for (size_t i = 0; i < upto; ++i) {
    smem_write(t, t.copies[i].dst, t.copies[i].site, "cp.async");  // lands now
    std::memcpy(t.copies[i].dst, t.copies[i].data, 16);
  }
  t.copies.erase(t.copies.begin(), t.copies.begin() + static_cast<std::ptrdiff_t>(upto));
  t.group_ends.erase(t.group_ends.begin(), t.group_ends.begin() + static_cast<std::ptrdiff_t>(done_groups));
  for (size_t& e : t.group_ends) e -= upto;
}

// The hazard record of the 16 bytes of dynamic shared memory at p (16-byte aligned, checked by the
// callers), or null when the check is off or p is not dynamic shared memory.
Granule* Worker::granule(const void* p) {
  const unsigned char* a = static_cast<const unsigned char*>(p);
  const unsigned char* d = block_.dynamic_smem;
  if (!hazards_ || d == nullptr || a < d || a + 16 > d + block_.dynamic_smem_bytes) return nullptr;
  return &granules_[static_cast<size_t>(a - d) / 16];
}

std::string smem_bytes(const unsigned char* base, const void* p) {
  const size_t off = static_cast<size_t>(static_cast<const unsigned char*>(p) - base);
  return "dynamic shared memory bytes [" + std::to_string(off) + ", " + std::to_string(off + 16) + ")";
}

void Worker::smem_read(int warp, const void* p, const Site& site, const char* what) {
  Granule* g = granule(p);
  if (g == nullptr) return;
  if (g->write_epoch == epoch_ && g->writer != warp)
    fail("shared-memory race (read after write): warp " + std::to_string(warp) + " reads " +
         smem_bytes(block_.dynamic_smem, p) + " with " + what + " at " + str(site) + ", which warp " +
         std::to_string(g->writer) + " wrote with " + g->write_what + " at " + str(g->write_site) +
         ", with no __syncthreads in between");
  if (g->read_epoch != epoch_) {
    g->read_epoch = epoch_;
    g->readers = 0;
  }
  g->readers |= 1u << warp;
  g->read_site = site;
  g->read_what = what;
  g->read_warp = warp;
}

void Worker::smem_write(const Thread& t, const void* p, const Site& site, const char* what) {
  Granule* g = granule(p);
  if (g == nullptr) return;
  const uint32_t others = g->read_epoch == epoch_ ? g->readers & ~(1u << t.warp) : 0u;
  if (others != 0) {
    int r = g->read_warp;
    if (r == t.warp || !(others & (1u << r))) r = __builtin_ctz(others);
    std::vector<int> ws;
    for (int w = 0; w < 32; ++w)
      if (others & (1u << w)) ws.push_back(w);
    fail("shared-memory race (write after read): " + who(t) + " overwrites " + smem_bytes(block_.dynamic_smem, p) +
         " with " + what + " at " + str(site) + ", which warp" + (ws.size() > 1 ? "s " : " ") + ranges(ws) +
         " read with " + g->read_what + " (last at " + str(g->read_site) + "), with no __syncthreads in between");
  }
  if (g->write_epoch == epoch_ && g->writer != t.warp)
    fail("shared-memory race (write after write): " + who(t) + " writes " + smem_bytes(block_.dynamic_smem, p) +
         " with " + what + " at " + str(site) + ", which warp " + std::to_string(g->writer) + " wrote with " +
         g->write_what + " at " + str(g->write_site) + ", with no __syncthreads in between");
  g->write_epoch = epoch_;
  g->writer = t.warp;
  g->write_site = site;
  g->write_what = what;
}

// ---- The pool ----------------------------------------------------------------------------------------

class Pool {
 public:
  explicit Pool(int n) {
    install_stack_overflow_handler();
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { main(); });
    for (std::thread& t : threads_) t.detach();
  }
  size_t size() const { return threads_.size(); }

  void run(Launch& L) {
    std::lock_guard<std::mutex> one_launch_at_a_time(launch_m_);
    std::unique_lock<std::mutex> lk(m_);
    job_ = &L;
    busy_ = static_cast<int>(threads_.size());
    ++generation_;
    cv_job_.notify_all();
    cv_done_.wait(lk, [&] { return busy_ == 0; });
    job_ = nullptr;
  }

 private:
  void main() {
    set_signal_stack_for_this_thread();
    Worker w;
    uint64_t seen = 0;
    for (;;) {
      Launch* L;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_job_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        L = job_;
      }
      w.run(*L);
      {
        std::lock_guard<std::mutex> lk(m_);
        if (--busy_ == 0) cv_done_.notify_all();
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex launch_m_;
  std::mutex m_;
  std::condition_variable cv_job_;
  std::condition_variable cv_done_;
  Launch* job_ = nullptr;
  uint64_t generation_ = 0;
  int busy_ = 0;
};

Pool& pool() {
  // Never destroyed: the workers block on its condition variables until the process exits.
  static Pool* p = [] {
    int n = static_cast<int>(std::thread::hardware_concurrency());
    const char* env = std::getenv("SIMT_WORKERS");
    if (env && *env) n = std::atoi(env);
    if (n < 1) n = 1;
    return new Pool(n);
  }();
  return *p;
}

std::string dims(const dim3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

}  // namespace

// ---- Entry points used by simt.h and native/cuda/ptx.cuh --------------------------------------------

void launch(const LaunchSpec& spec) {
  const std::string head = std::string("simt: launch of kernel '") + spec.name + "': ";
  if (tls.worker != nullptr) throw Error(head + "launching from inside a kernel is not supported");
  const dim3 g = spec.grid, b = spec.block;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    throw Error(head + "invalid grid " + dims(g));
  const uint64_t nthreads = static_cast<uint64_t>(b.x) * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || nthreads > 1024)
    throw Error(head + "invalid block " + dims(b) + " (at most 1024 threads, z at most 64)");
  if (spec.dynamic_smem_bytes > kMaxDynamicSmem)
    throw Error(head + std::to_string(spec.dynamic_smem_bytes) + " bytes of dynamic shared memory exceed " +
                std::to_string(kMaxDynamicSmem));

  Launch L;
  L.spec = spec;
  const std::string order = getenv_or("SIMT_ORDER", "forward");
  if (order == "forward") L.order = Order::Forward;
  else if (order == "reverse") L.order = Order::Reverse;
  else if (order == "ahead") L.order = Order::Ahead;
  else throw Error("simt: SIMT_ORDER must be 'forward', 'reverse' or 'ahead', not '" + order + "'");
  const int kb = std::atoi(getenv_or("SIMT_STACK_KB", "64"));
  if (kb < 16) throw Error("simt: SIMT_STACK_KB must be at least 16");
  L.stack_bytes = static_cast<size_t>(kb) * 1024;
  L.poison_static = std::string(getenv_or("SIMT_POISON_STATIC_SMEM", "1")) != "0";
  L.hazards = std::string(getenv_or("SIMT_HAZARDS", "1")) != "0";
  L.nblocks = static_cast<uint64_t>(g.x) * g.y * g.z;
  L.nthreads = static_cast<int>(nthreads);
  pool().run(L);
  if (L.failed.load()) throw Error(L.error);
}

int syncthreads(int kind, int pred, Site site) {
  return worker_or_throw("__syncthreads", site)->barrier(kind, pred, site);
}

void syncwarp(unsigned mask, Site site) {
  Worker* w = worker_or_throw("__syncwarp", site);
  w->collective(Kind::SyncWarp, 0, "__syncwarp", mask, site, LaneIn{});
}

uint64_t shfl(ShflMode mode, unsigned mask, uint64_t bits, int lane_arg, int width, Site site) {
  static const char* const names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};
  const char* what = names[static_cast<int>(mode)];
  Worker* w = worker_or_throw(what, site);
  LaneIn in;
  in.v = bits;
  in.arg = lane_arg;
  in.width = width;
  return w->collective(Kind::Shfl, static_cast<int>(mode), what, mask, site, in).v;
}

unsigned vote(VoteMode mode, unsigned mask, int pred, Site site) {
  static const char* const names[] = {"__ballot_sync", "__any_sync", "__all_sync"};
  const char* what = names[static_cast<int>(mode)];
  Worker* w = worker_or_throw(what, site);
  LaneIn in;
  in.arg = pred != 0;
  return static_cast<unsigned>(w->collective(Kind::Vote, static_cast<int>(mode), what, mask, site, in).v);
}

unsigned reduce(ReduceOp op, unsigned mask, unsigned value, Site site) {
  static const char* const names[] = {"__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync",
                                      "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync",
                                      "__reduce_and_sync", "__reduce_or_sync",  "__reduce_xor_sync"};
  const char* what = names[static_cast<int>(op)];
  Worker* w = worker_or_throw(what, site);
  LaneIn in;
  in.v = value;
  return static_cast<unsigned>(w->collective(Kind::Reduce, static_cast<int>(op), what, mask, site, in).v);
}

void mma_m16n8k16(MmaType type, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                  Site site) {
  const char* what = type == MmaType::F16 ? "mma.sync.m16n8k16.f32.f16" : "mma.sync.m16n8k16.f32.bf16";
  Worker* w = worker_or_throw(what, site);
  LaneIn in;
  for (int i = 0; i < 4; ++i) in.u[i] = a[i];
  in.u[4] = b[0];
  in.u[5] = b[1];
  for (int i = 0; i < 4; ++i) in.f[i] = c[i];
  const LaneOut& out = w->collective(Kind::Mma, static_cast<int>(type), what, kFullMask, site, in);
  for (int i = 0; i < 4; ++i) d[i] = out.f[i];
}

void ldmatrix(int num, bool trans, uint32_t* regs, const void* smem_row, Site site) {
  static const char* const names[] = {"",
                                      "",
                                      "ldmatrix.m8n8.x1",
                                      "ldmatrix.m8n8.x1.trans",
                                      "ldmatrix.m8n8.x2",
                                      "ldmatrix.m8n8.x2.trans",
                                      "",
                                      "",
                                      "ldmatrix.m8n8.x4",
                                      "ldmatrix.m8n8.x4.trans"};
  const int sub = num * 2 + (trans ? 1 : 0);
  const char* what = names[sub];
  Worker* w = worker_or_throw(what, site);
  LaneIn in;
  in.p = smem_row;
  const LaneOut& out = w->collective(Kind::Ldmatrix, sub, what, kFullMask, site, in);
  for (int j = 0; j < num; ++j) regs[j] = out.u[j];
}

void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes, Site site) {
  worker_or_throw("cp.async", site)->cp_async(gmem_src, smem_dst, src_bytes, site);
}

void cp_async_commit(Site site) { worker_or_throw("cp.async.commit_group", site)->cp_commit(site); }

void cp_async_wait_group(int n, Site site) { worker_or_throw("cp.async.wait_group", site)->cp_wait(n, site); }

}  // namespace simt::detail
