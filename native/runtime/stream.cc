#include "stream.h"

#include <exception>
#include <new>

#include "attnkit/error.h"

namespace attnkit::runtime {

void StreamState::wait_for(uint64_t seq) {
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return completed >= seq; });
}

void TaskQueue::push(uint64_t seq, Task task) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    tasks_.emplace_back(seq, std::move(task));
  }
  cv_.notify_one();
}

bool TaskQueue::pop(std::pair<uint64_t, Task>* item) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return closing_ || !tasks_.empty(); });
  if (tasks_.empty()) return false;  // closing and drained
  *item = std::move(tasks_.front());
  tasks_.pop_front();
  return true;
}

void TaskQueue::close() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    closing_ = true;
  }
  cv_.notify_all();
}

Stream::Stream(std::shared_ptr<StreamState> state)
    : state_(std::move(state)), queue_(std::make_shared<TaskQueue>()) {}

Stream::~Stream() { queue_->close(); }

uint64_t Stream::enqueue(Task task) {
  const uint64_t seq = ++next_seq_;
  for (auto& out : task.outputs) {
    out->ready_stream = state_;
    out->ready_seq = seq;
  }
  queue_->push(seq, std::move(task));
  return seq;
}

FailurePtr run_guarded(const std::function<void()>& fn, const char* where) {
  try {
    fn();
  } catch (const Error& e) {
    return std::make_shared<Failure>(Failure{e.code(), e.op(), e.what()});
  } catch (const std::bad_alloc&) {
    return std::make_shared<Failure>(Failure{"OOM", "", std::string("out of memory on ") + where});
  } catch (const std::exception& e) {
    return std::make_shared<Failure>(Failure{"INTERNAL", "", e.what()});
  }
  return nullptr;
}

FailurePtr inherited(const FailurePtr& upstream, bool is_wait) {
  if (!upstream || is_wait) return upstream;
  return std::make_shared<Failure>(Failure{upstream->code, upstream->op,
                                           upstream->message + " (reported by a later operation that used this result)"});
}

FailurePtr first_input_failure(const Task& task) {
  for (const auto& in : task.inputs)
    if (FailurePtr f = in->get_failure()) return f;
  return nullptr;
}

FailurePtr settle(Task& task, StreamState& st, const FailurePtr& failure) {
  for (auto& out : task.outputs) {
    std::lock_guard<std::mutex> lk(out->mu);
    out->failure = failure;
  }
  FailurePtr report = failure;
  std::lock_guard<std::mutex> lk(st.mu);
  if (failure && !task.is_wait && !st.error) st.error = failure;
  if (task.is_wait) {
    // A wait reports its own failure (reading a failed tensor) or else the stream's recorded one;
    // either way the recorded error counts as reported once the wait has shown it. (A failed
    // tensor carries the very Failure its stream recorded, hence the comparison.)
    if (!report && st.error) report = st.error;
    if (report == st.error) st.error.reset();
  }
  return report;
}

void complete(StreamState& st, uint64_t seq) {
  {
    std::lock_guard<std::mutex> lk(st.mu);
    st.completed = seq;
  }
  st.cv.notify_all();
}

}  // namespace attnkit::runtime
