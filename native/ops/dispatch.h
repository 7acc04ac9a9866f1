// One dispatch path for every op (docs/architecture.md): the binding reads a call into an op's
// descriptor (its `Args`: a plain struct of sizes, options and pointers) and hands it, with the
// storages the task reads and writes, to `enqueue`, which picks the backend from the table, refuses
// what that backend does not run (ERR_ATTNKIT_UNSUPPORTED, synchronously, before anything is
// enqueued) and enqueues the kernel on the stream. The binding never branches on the backend.
//
// Adding a backend is a column in every table (ops.cc); adding an op is a row; a kernel family's
// support rules come from its generated table (instantiations.json), not from the binding.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../runtime/stream.h"
#include "attnkit/attention.h"
#include "attnkit/dtype.h"
#include "attnkit/error.h"

namespace attnkit::ops {

enum class Backend : int { Cpu = 0, Cuda = 1 };
constexpr int kBackends = 2;
const char* backend_name(Backend b);  // "cpu", "cuda"
inline Backend backend_of(int device) { return device >= 0 ? Backend::Cuda : Backend::Cpu; }

// What a call asks for, as far as support depends on it.
struct Request {
  DType dtype = DType::Float32;
  AttentionShape shape{};  // sizes the op has (head dims D, Dv); zero where it has none
  int device = -1;         // the inputs' device (-1: host), for messages
  int64_t parts = 0;       // mergeAttention(Backward): the number of parts merged; 0 for other ops
};

// An op's kernel on one backend: `run` issues the work (on the stream's worker; `stream` is the
// backend's native stream, null on the CPU); `supports` says "" or what the backend runs instead.
template <typename Args>
struct Kernel {
  void (*run)(const Args&, void* stream) = nullptr;   // null: the op has no kernel on this backend
  std::string (*supports)(const Request&) = nullptr;  // null: everything the op validates
};

template <typename Args>
struct Op {
  const char* name;
  Kernel<Args> on[kBackends];
};

// The message for an op with no kernel on `b`, naming where it runs.
std::string not_implemented(const char* op, Backend b, const Request& r, const bool has[kBackends]);

// "" when `op` runs `r` on backend `b`, else why not (and what is supported).
template <typename Args>
std::string support(const Op<Args>& op, Backend b, const Request& r) {
  const Kernel<Args>& k = op.on[int(b)];
  if (!k.run) {
    bool has[kBackends];
    for (int i = 0; i < kBackends; ++i) has[i] = op.on[i].run != nullptr;
    return not_implemented(op.name, b, r, has);
  }
  return k.supports ? k.supports(r) : std::string();
}

// The kernel that runs `r` (on the backend of r.device); throws UNSUPPORTED naming the op, what was
// asked and what is supported, when there is none.
template <typename Args>
auto kernel_for(const Op<Args>& op, const Request& r) -> void (*)(const Args&, void*) {
  const Backend b = backend_of(r.device);
  const std::string why = support(op, b, r);
  if (!why.empty()) throw Error("UNSUPPORTED", op.name, std::string(op.name) + ": " + why);
  return op.on[int(b)].run;
}

// Enqueues `task` (its inputs and outputs filled in by the caller) running `args` on the kernel
// that kernel_for picks; refuses synchronously, before anything is enqueued.
template <typename Args>
void enqueue(const Op<Args>& op, runtime::Stream& stream, const Request& r, Args args, runtime::Task task) {
  auto run = kernel_for(op, r);
  void* handle = stream.handle();
  task.run = [run, handle, a = std::move(args)] { run(a, handle); };
  stream.enqueue(std::move(task));
}

// The backends' factories: a stream on `device` (-1: CPU; N: cuda:N; throws DEVICE/CUDA when it
// cannot be made), and `numel` elements of `dtype` for tensors of `stream`'s device (zeroed with
// `zero`: on the host at once, on a device by a task on the stream).
std::unique_ptr<runtime::Stream> make_stream(int device);
runtime::StoragePtr allocate(DType dtype, int64_t numel, runtime::Stream* stream, bool zero, const char* op);

// The support check by op name, for the TypeScript facade (before it allocates outputs) and for
// `attnkit info --kernels`. Throws ARGUMENT for an unknown op.
std::string support_by_name(const std::string& op, const Request& r);
// Every op and whether each backend has a kernel for it.
struct OpRow {
  const char* name;
  bool on[kBackends];
};
std::vector<OpRow> op_rows();

}  // namespace attnkit::ops
