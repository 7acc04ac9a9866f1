// The backend table: for each op, its kernel on the CPU (native/cpu/) and on CUDA (native/cuda/),
// or none. This file and dispatch.cc are the only ones that see both backends; the CUDA column's
// support rules are the generated tables of native/cuda/instantiations.json (cuda::support).
#include "ops.h"

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../cpu/attention.h"
#include "../cpu/block_sparse.h"
#include "../cpu/convert.h"
#include "../cpu/linear.h"
#include "../cpu/neighborhood.h"
#include "../cpu/selection.h"
#include "../cpu/stream.h"
#include "../cuda/block_sparse/plan.h"
#include "../cuda/device.h"

namespace attnkit::ops {
namespace {

// ------------------------------------------------------------------ CPU column

void cpu_read(const ReadArgs& a, void*) {
  a.dst->resize(a.widen ? size_t(a.numel) * 4 : a.bytes);
  if (a.widen) cpu::convert(a.src, a.dtype, a.dst->data(), DType::Float32, a.numel);
  else if (a.bytes) std::memcpy(a.dst->data(), a.src, a.bytes);
}
void cpu_convert(const ConvertArgs& a, void*) { cpu::convert(a.src, a.from, a.dst, a.to, a.numel); }
void cpu_add(const AddArgs& a, void*) { cpu::add(a.a, a.b, a.out, a.dtype, a.numel); }
void cpu_randn(const RandnArgs& a, void*) { cpu::randn_fill(a.out, a.dtype, a.numel, a.seed); }
void cpu_sleep(const SleepArgs& a, void*) { std::this_thread::sleep_for(std::chrono::milliseconds(a.ms)); }

void cpu_dense_fwd(const DenseFwdArgs& a, void*) { cpu::attention_forward(a.p, a.mask); }
void cpu_dense_bwd(const DenseBwdArgs& a, void*) { cpu::attention_backward(a.p, a.mask); }
void cpu_na_fwd(const NeighborhoodFwdArgs& a, void*) { cpu::neighborhood_forward(a.p, a.na); }
void cpu_na_bwd(const NeighborhoodBwdArgs& a, void*) { cpu::neighborhood_backward(a.p, a.na); }

// A block mask's lists, checked when the work runs: offsets start at 0, never decrease and stay
// within the index buffer; indices are increasing key blocks. (Lists may have spare capacity past
// the last offset: selection ops allocate for the worst case.)
void check_lists(const int32_t* off, const int32_t* idx, int64_t rows, int64_t capacity, int64_t kb,
                 const char* op, const char* what) {
  if (off[0] != 0 || off[rows] > capacity)
    throw Error("ARGUMENT", op, std::string(op) + ": mask " + what + " offsets do not match the index list");
  for (int64_t r = 0; r < rows; ++r) {
    if (off[r + 1] < off[r]) throw Error("ARGUMENT", op, std::string(op) + ": mask " + what + " offsets decrease");
    for (int64_t i = off[r]; i < off[r + 1]; ++i)
      if (idx[i] < 0 || idx[i] >= kb || (i > off[r] && idx[i] <= idx[i - 1]))
        throw Error("ARGUMENT", op, std::string(op) + ": mask " + what + " indices out of range or not increasing");
  }
}
void check_mask(const BlockMaskView& m, const BlockMaskCheck& c, const char* op) {
  const int64_t rows = m.B * m.H * m.qb;
  check_lists(m.full_off, m.full_idx, rows, c.full_capacity, m.kb, op, "full");
  check_lists(m.part_off, m.part_idx, rows, c.partial_capacity, m.kb, op, "partial");
}
void cpu_bs_fwd(const BlockSparseFwdArgs& a, void*) {
  check_mask(a.mask, a.check, "blockSparseAttention");
  cpu::block_sparse_forward(a.p, a.mask);
}
void cpu_bs_bwd(const BlockSparseBwdArgs& a, void*) {
  check_mask(a.mask, a.check, "blockSparseAttentionBackward");
  cpu::block_sparse_backward(a.p, a.mask);
}
void cpu_merge_fwd(const MergeFwdArgs& a, void*) { cpu::merge_forward(a.p); }
void cpu_merge_bwd(const MergeBwdArgs& a, void*) { cpu::merge_backward(a.p); }

void cpu_linear_fwd(const LinearArgs<LinearFwdParams>& a, void*) { cpu::linear_forward(a.p); }
void cpu_linear_bwd(const LinearArgs<LinearBwdParams>& a, void*) { cpu::linear_backward(a.p); }
void cpu_linear_step(const LinearArgs<LinearStepParams>& a, void*) { cpu::linear_step(a.p); }
void cpu_moba(const MobaParams& p, void*) { cpu::moba_select(p); }
void cpu_xattn(const XattnParams& p, void*) { cpu::xattention_select(p); }

// ------------------------------------------------------------------ CUDA column

void cuda_read(const ReadArgs& a, void* stream) {
  a.dst->resize(a.widen ? size_t(a.numel) * 4 : a.bytes);
  if (!a.widen) {
    cuda::copy_to_host(a.dst->data(), a.src, a.bytes, stream, "toArray");
    return;
  }
  std::vector<uint8_t> staged(a.bytes);  // device to host first, then widen on the host
  cuda::copy_to_host(staged.data(), a.src, a.bytes, stream, "toArray");
  cpu::convert(staged.data(), a.dtype, a.dst->data(), DType::Float32, a.numel);
}
void cuda_convert(const ConvertArgs& a, void* stream) {
  cuda::convert(a.src, a.from, a.dst, a.to, a.numel, stream, "to");
}
void cuda_add(const AddArgs& a, void* stream) { cuda::add(a.a, a.b, a.out, a.dtype, a.numel, stream, "add"); }
void cuda_sleep(const SleepArgs& a, void* stream) { cuda::spin(double(a.ms), stream); }

void cuda_dense_fwd(const DenseFwdArgs& a, void* stream) { cuda::run_attention_forward(a.p, a.mask, stream); }
void cuda_dense_bwd(const DenseBwdArgs& a, void* stream) { cuda::run_attention_backward(a.p, a.mask, stream); }

// The CUDA cell of an op a kernel family serves (native/cuda/instantiations.json): its support rule
// reads the op's generated table (cuda/generated/supports.h). A cell with a kernel needs rows in the
// table, and an op with rows needs a kernel, checked when the table below is compiled.
template <const cuda::supported::OpTable& table>
std::string cuda_support(const Request& r) { return cuda::support(table, r.shape, r.dtype); }

// `supports` defaults to the table's rule; an op with a further limit passes its own (which must
// still end in the table's).
template <const cuda::supported::OpTable& table, typename Args>
constexpr Kernel<Args> cuda_kernel(void (*run)(const Args&, void*),
                                   std::string (*supports)(const Request&) = &cuda_support<table>) {
  static_assert(table.count > 0, "the op has a CUDA kernel but no instantiation in native/cuda/instantiations.json");
  return {run, supports};
}

template <const cuda::supported::OpTable& table>
struct NoCudaKernel {
  template <typename Args>
  constexpr operator Kernel<Args>() const {
    static_assert(table.count == 0, "native/cuda/instantiations.json lists CUDA kernels for the op: give it a CUDA cell");
    return {};
  }
};
template <const cuda::supported::OpTable& table>
constexpr NoCudaKernel<table> no_cuda_kernel{};

namespace cs = cuda::supported;

// Merge: the family's rows (dtypes; any value head dim) and the parts one launch takes.
template <const cuda::supported::OpTable& table>
std::string cuda_merge_support(const Request& r) {
  std::string why = cuda::support(table, r.shape, r.dtype);
  if (why.empty() && r.parts > kCudaMergeMaxParts)
    why = std::to_string(r.parts) + " parts are not supported on CUDA (1 to " + std::to_string(kCudaMergeMaxParts) +
          " per call; merging is associative, so merge larger sets in groups)";
  return why;
}
cuda::BlockSparseDevice bs_device(const BlockMaskCheck& c, const BlockSparsePlanBuffer& plan) {
  return {c.full_capacity, c.partial_capacity, plan.data, plan.ints, plan.build};
}
void cuda_bs_fwd(const BlockSparseFwdArgs& a, void* stream) {
  cuda::run_block_sparse_forward(a.p, a.mask, bs_device(a.check, a.plan), stream);
}
void cuda_bs_bwd(const BlockSparseBwdArgs& a, void* stream) {
  cuda::run_block_sparse_backward(a.p, a.mask, bs_device(a.check, a.plan), stream);
}
void cuda_na_fwd(const NeighborhoodFwdArgs& a, void* stream) { cuda::run_neighborhood_forward(a.p, a.na, stream); }
void cuda_na_bwd(const NeighborhoodBwdArgs& a, void* stream) { cuda::run_neighborhood_backward(a.p, a.na, stream); }
void cuda_merge_fwd(const MergeFwdArgs& a, void* stream) { cuda::run_merge_forward(a.p, stream); }
void cuda_merge_bwd(const MergeBwdArgs& a, void* stream) { cuda::run_merge_backward(a.p, stream); }
void cuda_moba(const MobaParams& p, void* stream) { cuda::run_moba_select(p, stream); }
void cuda_xattn(const XattnParams& p, void* stream) { cuda::run_xattention_select(p, stream); }

}  // namespace

// ------------------------------------------------------------------ the table
//                                      cpu                          cuda
const Op<ReadArgs> kRead{"toArray", {{cpu_read}, {cuda_read}}};
const Op<ConvertArgs> kConvert{"to", {{cpu_convert}, {cuda_convert}}};
const Op<AddArgs> kAdd{"add", {{cpu_add}, {cuda_add}}};
const Op<RandnArgs> kRandn{"randn", {{cpu_randn}, {}}};
const Op<SleepArgs> kSleep{"sleep", {{cpu_sleep}, {cuda_sleep}}};
const Op<DenseFwdArgs> kAttentionForward{"attention", {{cpu_dense_fwd}, cuda_kernel<cs::attention>(cuda_dense_fwd)}};
const Op<DenseBwdArgs> kAttentionBackward{"attentionBackward",
                                          {{cpu_dense_bwd}, cuda_kernel<cs::attentionBackward>(cuda_dense_bwd)}};
const Op<NeighborhoodFwdArgs> kNeighborhoodForward{"neighborhood", {{cpu_na_fwd}, cuda_kernel<cs::neighborhood>(cuda_na_fwd)}};
const Op<NeighborhoodBwdArgs> kNeighborhoodBackward{"neighborhoodBackward",
                                                    {{cpu_na_bwd}, cuda_kernel<cs::neighborhoodBackward>(cuda_na_bwd)}};
const Op<BlockSparseFwdArgs> kBlockSparseForward{"blockSparseAttention",
                                                 {{cpu_bs_fwd}, cuda_kernel<cs::blockSparseAttention>(cuda_bs_fwd)}};
const Op<BlockSparseBwdArgs> kBlockSparseBackward{"blockSparseAttentionBackward",
                                                  {{cpu_bs_bwd}, cuda_kernel<cs::blockSparseAttentionBackward>(cuda_bs_bwd)}};
const Op<MergeFwdArgs> kMergeForward{"mergeAttention", {{cpu_merge_fwd}, cuda_kernel<cs::mergeAttention>(cuda_merge_fwd, cuda_merge_support<cs::mergeAttention>)}};
const Op<MergeBwdArgs> kMergeBackward{"mergeAttentionBackward",
                                      {{cpu_merge_bwd}, cuda_kernel<cs::mergeAttentionBackward>(cuda_merge_bwd,
                                                                              cuda_merge_support<cs::mergeAttentionBackward>)}};
const Op<LinearArgs<LinearFwdParams>> kLinearForward{"linearAttention", {{cpu_linear_fwd}, no_cuda_kernel<cs::linearAttention>}};
const Op<LinearArgs<LinearBwdParams>> kLinearBackward{"linearAttentionBackward",
                                                      {{cpu_linear_bwd}, no_cuda_kernel<cs::linearAttentionBackward>}};
const Op<LinearArgs<LinearStepParams>> kLinearStep{"linearAttentionStep", {{cpu_linear_step}, no_cuda_kernel<cs::linearAttentionStep>}};
const Op<MobaParams> kMobaSelect{"mobaMask", {{cpu_moba}, cuda_kernel<cs::mobaMask>(cuda_moba)}};
const Op<XattnParams> kXattentionSelect{"xattentionMask", {{cpu_xattn}, cuda_kernel<cs::xattentionMask>(cuda_xattn)}};

// ------------------------------------------------------------------ lookups by name

namespace {
struct Entry {
  const char* name;
  std::string (*support)(Backend, const Request&);
  bool on[kBackends];
};
template <const auto& op>
Entry entry() {
  return {op.name, [](Backend b, const Request& r) { return support(op, b, r); },
          {op.on[0].run != nullptr, op.on[1].run != nullptr}};
}
const std::vector<Entry>& entries() {
  static const std::vector<Entry> all = {
      entry<kRead>(), entry<kConvert>(), entry<kAdd>(), entry<kRandn>(), entry<kSleep>(),
      entry<kAttentionForward>(), entry<kAttentionBackward>(),
      entry<kNeighborhoodForward>(), entry<kNeighborhoodBackward>(),
      entry<kBlockSparseForward>(), entry<kBlockSparseBackward>(),
      entry<kMergeForward>(), entry<kMergeBackward>(),
      entry<kLinearForward>(), entry<kLinearBackward>(), entry<kLinearStep>(),
      entry<kMobaSelect>(), entry<kXattentionSelect>()};
  return all;
}
}  // namespace

std::unique_ptr<runtime::Stream> make_stream(int device) {
  if (device >= 0) return std::make_unique<cuda::DeviceStream>(device);
  return std::make_unique<cpu::CpuStream>();
}

runtime::StoragePtr allocate(DType dtype, int64_t numel, runtime::Stream* stream, bool zero, const char* op) {
  if (stream && stream->device() >= 0)
    return cuda::allocate(dtype, numel, static_cast<cuda::DeviceStream&>(*stream), zero, op);
  auto s = std::make_shared<runtime::Storage>(dtype, numel);
  if (zero) std::memset(s->data, 0, s->bytes);
  return s;
}

int64_t block_sparse_plan_ints(int64_t mask_rows, int64_t nq, int64_t nk, int64_t bq, int64_t bk, int64_t listed) {
  return cuda::block_sparse::plan_layout(mask_rows, nq, nk, bq, bk, listed).ints;
}

const char* backend_name(Backend b) { return b == Backend::Cuda ? "cuda" : "cpu"; }

std::string not_implemented(const char* op, Backend b, const Request& r, const bool has[kBackends]) {
  std::string where;
  for (int i = 0; i < kBackends; ++i)
    if (has[i]) where += std::string(where.empty() ? "" : ", ") + backend_name(Backend(i));
  const std::string device = r.device >= 0 ? "cuda:" + std::to_string(r.device) : "cpu";
  std::string m = std::string("not implemented on ") + (b == Backend::Cuda ? "CUDA" : "the CPU") +
                  " yet (the inputs are on " + device + "; " + op + " runs on: " + (where.empty() ? "none" : where) + ")";
  if (b == Backend::Cuda && has[int(Backend::Cpu)]) m += "; move them to the CPU with .to('cpu')";
  return m;
}

std::string support_by_name(const std::string& op, const Request& r) {
  for (const Entry& e : entries())
    if (op == e.name) return e.support(backend_of(r.device), r);
  throw Error("ARGUMENT", "supports", "supports: unknown op '" + op + "'");
}

std::vector<OpRow> op_rows() {
  std::vector<OpRow> rows;
  for (const Entry& e : entries()) rows.push_back({e.name, {e.on[0], e.on[1]}});
  return rows;
}

}  // namespace attnkit::ops
