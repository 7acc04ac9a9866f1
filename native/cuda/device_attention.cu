// The CUDA column's support check for every op (the op's rows in generated/supports.h, generated from
// native/cuda/instantiations.json), and the entry to the dense fused attention kernels of
// native/cuda/fmha/ (their host launchers, fmha/launch.h). CMake defines ATTNKIT_HAVE_FMHA_CUDA when
// that header exists; without it every CUDA attention call says "not implemented on CUDA yet".
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "device.h"

#if defined(ATTNKIT_HAVE_FMHA_CUDA)
#include "fmha/launch.h"
#endif

namespace attnkit::cuda {

bool have_attention_kernels() {
#if defined(ATTNKIT_HAVE_FMHA_CUDA)
  return true;
#else
  return false;
#endif
}

namespace {

// "a, b or c"
std::string one_of(const std::vector<std::string>& items) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i == 0 ? "" : i + 1 == items.size() ? " or " : ", ") + items[i];
  return s;
}

// The distinct values of `field` over the rows that `keep` selects, in list order.
template <typename Keep, typename Field>
std::vector<std::string> distinct(const supported::OpTable& op, Keep keep, Field field) {
  std::vector<std::string> out;
  for (const supported::Row* r = op.rows; r != op.rows + op.count; ++r)
    if (keep(*r) && std::find(out.begin(), out.end(), field(*r)) == out.end()) out.push_back(field(*r));
  return out;
}
std::string dtype_of(const supported::Row& r) { return dtype_name(r.dtype); }
std::string head_dim_of(const supported::Row& r) { return std::to_string(r.head_dim); }
std::string value_head_dim_of(const supported::Row& r) { return std::to_string(r.value_head_dim); }

// Whether this build compiled the op's family: CMake compiles every family's sources when CUDA is on
// (generated/sources.cmake); the dense family is marked by its launchers' header (CMakeLists.txt).
bool compiled(const supported::OpTable& op) {
  return std::strcmp(op.family, "fmha") != 0 || have_attention_kernels();
}

}  // namespace

// The synchronous check at the call, from the op's rows in generated/supports.h. The launchers check
// again when the work is issued (fmha/dispatch.h, the same list), so a request this lets through
// that the build lacks fails the enqueued work with the launcher's message instead of crashing.
std::string support(const supported::OpTable& op, const AttentionShape& s, DType dtype) {
  if (op.count == 0)
    return std::string("not implemented on CUDA yet (native/cuda/instantiations.json lists no ") + op.title + " kernels)";
  if (!compiled(op)) return std::string("not implemented on CUDA yet (this build has no CUDA ") + op.title + " kernels)";
  const auto all = [](const supported::Row&) { return true; };
  const auto of_dtype = [&](const supported::Row& r) { return r.dtype == dtype; };
  const auto of_d = [&](const supported::Row& r) { return r.dtype == dtype && r.head_dim == s.D; };
  for (int i = 0; i < op.count; ++i)
    if (of_d(op.rows[i]) && op.rows[i].value_head_dim == s.Dv) return "";
  const auto dtypes = distinct(op, all, dtype_of);
  if (distinct(op, of_dtype, dtype_of).empty())
    return std::string("dtype ") + dtype_name(dtype) + " is not supported on CUDA (the kernels take " + one_of(dtypes) +
           "); convert with .to('" + dtypes.back() + "') or run on the CPU";
  const bool square = std::all_of(op.rows, op.rows + op.count, [](const supported::Row& r) { return r.head_dim == r.value_head_dim; });
  if (square && s.Dv != s.D)
    return "a value head dim (" + std::to_string(s.Dv) + ") different from the key head dim (" + std::to_string(s.D) +
           ") is not supported on CUDA";
  const auto dims = distinct(op, of_dtype, head_dim_of);
  if (distinct(op, of_d, head_dim_of).empty()) {
    // Name the dtype when it has fewer head dims than the op.
    const bool same = distinct(op, all, head_dim_of).size() == dims.size();
    return "head dim " + std::to_string(s.D) + " is not supported on CUDA" +
           (same ? std::string() : std::string(" for ") + dtype_name(dtype)) + " (" + one_of(dims) + ")";
  }
  return "value head dim " + std::to_string(s.Dv) + " is not supported on CUDA with head dim " + std::to_string(s.D) +
         " (" + one_of(distinct(op, of_d, value_head_dim_of)) + ")";
}

void run_attention_forward(const AttentionFwdParams& p, const DenseMaskOptions& mask, void* stream) {
#if defined(ATTNKIT_HAVE_FMHA_CUDA)
  attention_forward(p, mask, static_cast<cudaStream_t>(stream));
#else
  (void)p;
  (void)mask;
  (void)stream;
  throw Error("UNSUPPORTED", "attention", "attention: not implemented on CUDA yet (this build has no CUDA attention kernels)");
#endif
}

void run_attention_backward(const AttentionBwdParams& p, const DenseMaskOptions& mask, void* stream) {
#if defined(ATTNKIT_HAVE_FMHA_CUDA)
  attention_backward(p, mask, static_cast<cudaStream_t>(stream));
#else
  (void)p;
  (void)mask;
  (void)stream;
  throw Error("UNSUPPORTED", "attentionBackward",
              "attentionBackward: not implemented on CUDA yet (this build has no CUDA attention kernels)");
#endif
}

}  // namespace attnkit::cuda
