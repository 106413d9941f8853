#include "auth/uv_executor.h"

#include <deque>
#include <mutex>
#include <utility>

#include "base/guard.h"

namespace miproxy {

// Lives apart from the UvExecutor so the uv_async_t can outlive it until its close callback.
struct UvExecutor::State {
  uv_async_t async;
  std::mutex mu;
  std::deque<std::function<void()>> queue;  // guarded by mu
  bool closed = false;                      // written under mu, on the loop thread only
  std::shared_ptr<State> self;              // held from close() until the close callback

  static void on_async(uv_async_t* handle) {
    auto* state = static_cast<State*>(handle->data);
    // Run only what was queued when we woke up: tasks posted meanwhile send another wake-up,
    // so a task that posts itself again cannot starve the loop.
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard lock(state->mu);
      batch.swap(state->queue);
    }
    for (auto& task : batch) {
      // closed is only written on this thread, so reading it without the lock is safe here.
      if (state->closed) {
        break;
      }
      // One task's throw (logged) must neither end the process nor drop the tasks after it.
      guard::run("posted task", [&] {
        task();
        task = nullptr;  // destroy captures before the next task runs
      });
      task = nullptr;
    }
  }
};

UvExecutor::UvExecutor(uv_loop_t* loop) : state_(std::make_shared<State>()) {
  uv_async_init(loop, &state_->async, &State::on_async);
  state_->async.data = state_.get();
}

UvExecutor::~UvExecutor() { close(); }

void UvExecutor::post(std::function<void()> task) {
  {
    std::lock_guard lock(state_->mu);
    if (!state_->closed) {
      state_->queue.push_back(std::move(task));
      // Under the lock, so close() cannot uv_close the handle between our check and the send.
      uv_async_send(&state_->async);
      return;
    }
  }
  // Closed: |task| is destroyed when this function returns, outside the lock.
}

void UvExecutor::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  std::deque<std::function<void()>> dropped;
  {
    std::lock_guard lock(state_->mu);
    state_->closed = true;
    dropped.swap(state_->queue);
  }
  dropped.clear();
  state_->self = state_;
  uv_close(reinterpret_cast<uv_handle_t*>(&state_->async), [](uv_handle_t* h) {
    std::shared_ptr<State> last = std::move(static_cast<State*>(h->data)->self);
  });
}

}  // namespace miproxy
