// Run-time choice of the CPU kernel table: the best level the CPU and OS support, unless
// ATTNKIT_CPU_ISA (generic | avx2 | avx512 | avx512bf16 | amx) or set_isa() asks for a lower one, which
// is how the test suite runs the same conformance tests on every level this machine has.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

#if defined(__linux__) && (defined(__x86_64__) || defined(_M_X64))
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace attnkit::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
    case Isa::Amx: return "amx";
  }
  return "?";
}

// AMX needs the CPU bits (AMX-TILE, AMX-BF16), the OS's XSAVE support for tile state (XCR0 bits
// 17-18) and, on Linux, permission to use tile data, granted per process by arch_prctl.
static bool amx_usable() {
#if defined(__linux__) && (defined(__x86_64__) || defined(_M_X64))
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool tile = (d >> 24) & 1u, bf16 = (d >> 22) & 1u;
  if (!tile || !bf16) return false;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1u)) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

Isa detected_isa() {
  static const Isa best = [] {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (bf16 && amx_usable()) return Isa::Amx;
  if (bf16) return Isa::Avx512Bf16;
  if (avx512) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Generic;
  }();
  return best;
}

static const CpuKernels& table_for(Isa isa) {
  switch (isa) {
    case Isa::Amx: return kernels_amx();
    case Isa::Avx512Bf16: return kernels_avx512bf16();
    case Isa::Avx512: return kernels_avx512();
    case Isa::Avx2: return kernels_avx2();
    default: return kernels_generic();
  }
}

static Isa initial_isa() {
  Isa best = detected_isa();
  if (const char* env = std::getenv("ATTNKIT_CPU_ISA")) {
    for (int i = 0; i <= int(best); ++i)
      if (std::strcmp(env, isa_name(Isa(i))) == 0) return Isa(i);
  }
  return best;
}

static std::atomic<int> g_isa{-1};

const CpuKernels& active_kernels() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = int(initial_isa());
    g_isa.store(v, std::memory_order_relaxed);
  }
  return table_for(Isa(v));
}

bool set_isa(Isa isa) {
  if (int(isa) < 0 || int(isa) > int(detected_isa())) return false;
  g_isa.store(int(isa), std::memory_order_relaxed);
  return true;
}

}  // namespace attnkit::cpu
