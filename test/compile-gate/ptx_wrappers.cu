// The PTX check of the compile gate (scripts/compile-gate.mjs --ptx-check): one kernel per
// inline-asm wrapper of native/cuda/ptx.cuh, named ptx_<wrapper>, compiled twice:
//   nvcc -ptx (sm_80, sm_90)  the gate reads the inline asm each kernel's PTX holds: the device string;
//   g++ (this file's main)    the wrappers' emulator branches call the stubs below instead of the SIMT
//                             runtime; each stub prints the PTX instruction the emulator's function
//                             models for the arguments it got: the variant the emulator implements.
// The gate requires the two to be the same instruction for instruction (mnemonic with every
// modifier, operand count, immediates), so a device string that drifts from the emulator's model
// (a dropped .trans, .x2 for .x4, another mma shape or type, a cp.async without its src-size) fails,
// and every wrapper of ptx.cuh with inline asm must have its kernel here.
#include <cstdint>

#include "ptx.cuh"

namespace ptx = attnkit::ptx;

// Operands come from parameters so that none folds into an immediate the emulator would not see.
#define ARGS uint32_t *out, const uint32_t *in, const float *fin, float *fout, const void *gmem, int bytes

#define LDMATRIX_KERNEL(name, n)                          \
  extern "C" __global__ void ptx_##name(ARGS) {           \
    alignas(16) __shared__ uint16_t tile[32 * 8];         \
    uint32_t r[n];                                        \
    ptx::name(r, tile + 8 * (in[0] & 31));                \
    for (int i = 0; i < n; ++i) out[i] = r[i];            \
  }
LDMATRIX_KERNEL(ldmatrix_x1, 1)
LDMATRIX_KERNEL(ldmatrix_x2, 2)
LDMATRIX_KERNEL(ldmatrix_x4, 4)
LDMATRIX_KERNEL(ldmatrix_x1_trans, 1)
LDMATRIX_KERNEL(ldmatrix_x2_trans, 2)
LDMATRIX_KERNEL(ldmatrix_x4_trans, 4)

#define MMA_KERNEL(name)                                      \
  extern "C" __global__ void ptx_##name(ARGS) {               \
    const uint32_t a[4] = {in[0], in[1], in[2], in[3]};       \
    const uint32_t b[2] = {in[4], in[5]};                     \
    const float c[4] = {fin[0], fin[1], fin[2], fin[3]};      \
    float d[4];                                               \
    ptx::name(d, a, b, c);                                    \
    for (int i = 0; i < 4; ++i) fout[i] = d[i];               \
  }
MMA_KERNEL(mma_m16n8k16_f16)
MMA_KERNEL(mma_m16n8k16_bf16)

extern "C" __global__ void ptx_cp_async_16(ARGS) {
  alignas(16) __shared__ uint32_t buf[4];
  ptx::cp_async_16(buf, gmem);
  out[0] = buf[in[0] & 3];
}
extern "C" __global__ void ptx_cp_async_16_zfill(ARGS) {
  alignas(16) __shared__ uint32_t buf[4];
  ptx::cp_async_16_zfill(buf, gmem, bytes);
  out[0] = buf[in[0] & 3];
}
extern "C" __global__ void ptx_cp_async_commit(ARGS) { ptx::cp_async_commit(); }
extern "C" __global__ void ptx_cp_async_wait(ARGS) {
  ptx::cp_async_wait<1>();
  ptx::cp_async_wait<0>();
}
extern "C" __global__ void ptx_cp_async_wait_all(ARGS) { ptx::cp_async_wait_all(); }

#if !defined(__CUDACC__)
// ---- g++: the emulator's functions as stubs that print the instruction each one models ----------
#include <cstdio>
#include <string>

namespace simt::detail {
static std::string regs(int n) {
  std::string s = "{";
  for (int i = 0; i < n; ++i) s += i ? ", %" : "%";
  return s + "}";
}
void mma_m16n8k16(MmaType type, float (&)[4], const uint32_t (&)[4], const uint32_t (&)[2], const float (&)[4], Site) {
  const char* t = type == MmaType::F16 ? "f16" : "bf16";
  std::printf("mma.sync.aligned.m16n8k16.row.col.f32.%s.%s.f32 %s, %s, %s, %s\n", t, t, regs(4).c_str(),
              regs(4).c_str(), regs(2).c_str(), regs(4).c_str());
}
void ldmatrix(int num, bool trans, uint32_t*, const void*, Site) {
  std::printf("ldmatrix.sync.aligned.m8n8.x%d%s.shared.b16 %s, [%%]\n", num, trans ? ".trans" : "", regs(num).c_str());
}
// The emulator copies 16 bytes, of which src_bytes are read: 16 is the plain form, fewer the
// src-size (zero-fill) form with its extra operand (main passes 7).
void cp_async_16(void*, const void*, int src_bytes, Site) {
  std::printf("cp.async.cg.shared.global [%%], [%%], 16%s\n", src_bytes == 16 ? "" : ", %");
}
void cp_async_commit(Site) { std::printf("cp.async.commit_group\n"); }
void cp_async_wait_group(int n, Site) { std::printf("cp.async.wait_group %d\n", n); }
}  // namespace simt::detail

int main() {
  uint32_t out[8] = {}, in[8] = {};
  float fin[4] = {}, fout[4] = {};
  const uint32_t gmem[4] = {};
#define RUN(name)                                   \
  std::printf("== ptx_%s\n", #name);                \
  ptx_##name(out, in, fin, fout, gmem, 7);
  RUN(ldmatrix_x1) RUN(ldmatrix_x2) RUN(ldmatrix_x4)
  RUN(ldmatrix_x1_trans) RUN(ldmatrix_x2_trans) RUN(ldmatrix_x4_trans)
  RUN(mma_m16n8k16_f16) RUN(mma_m16n8k16_bf16)
  RUN(cp_async_16) RUN(cp_async_16_zfill) RUN(cp_async_commit) RUN(cp_async_wait) RUN(cp_async_wait_all)
  return 0;
}
#endif
