#pragma once
// An Executor for one uv_loop_t: post() from any thread appends to a mutex-protected queue and
// wakes the loop with a uv_async_t; the loop thread runs the queued tasks in post order. Used by
// the control thread and by every proxy worker.

#include <uv.h>

#include <functional>
#include <memory>

#include "base/executor.h"

namespace miproxy {

class UvExecutor : public Executor {
 public:
  // On |loop|'s thread (before the loop runs, or from a callback on it).
  explicit UvExecutor(uv_loop_t* loop);
  // On the loop thread; close()s if that was not done.
  ~UvExecutor() override;
  UvExecutor(const UvExecutor&) = delete;
  UvExecutor& operator=(const UvExecutor&) = delete;

  // Any thread. |task| runs later on the loop thread, never inside post(). Tasks posted from one
  // thread run in the order they were posted. After close(), |task| is destroyed unrun (on the
  // calling thread).
  void post(std::function<void()> task) override;

  // Loop thread; safe to call more than once, including from inside a task. Tasks not yet run
  // are destroyed unrun, here; no task starts after close() returns. The uv_async_t is closed
  // with uv_close and freed by its close callback, so the loop must run once more (the
  // UvExecutor object itself may be destroyed right after close()).
  void close();

 private:
  struct State;
  // Shared with the async handle until its close callback, so neither a late post() (between
  // close() and destruction) nor the close callback touches freed memory.
  std::shared_ptr<State> state_;
  bool closed_ = false;
};

}  // namespace miproxy
