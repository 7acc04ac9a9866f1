// CPU streams (DESIGN §3): a CpuStream is a runtime::Stream whose worker thread runs each task on
// the host, spreading it over the shared compute pool. Storage, tasks, the completion state and
// the failure rules are the backend-neutral core in native/runtime/.
#pragma once
#include <memory>

#include "../runtime/stream.h"

namespace attnkit::cpu {

class CpuStream : public runtime::Stream {
 public:
  CpuStream();

 private:
  static void worker_loop(std::shared_ptr<runtime::TaskQueue> q, std::shared_ptr<runtime::StreamState> st);
};

}  // namespace attnkit::cpu
