// Run-time choice of the CPU kernel table: the best level the CPU and OS support, unless
// ATTNKIT_CPU_ISA (generic | avx2 | avx512 | avx512bf16) or set_isa() asks for a lower one, which
// is how the test suite runs the same conformance tests on every level this machine has.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace attnkit::cpu {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
  }
  return "?";
}

Isa detected_isa() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  if (bf16) return Isa::Avx512Bf16;
  if (avx512) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Generic;
}

static const CpuKernels& table_for(Isa isa) {
  switch (isa) {
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
