#include "auth/scheduler.h"

#include <algorithm>

#include "base/guard.h"

namespace miproxy::auth {

struct UvScheduler::Timer {
  uv_timer_t handle;
  UvScheduler* owner = nullptr;
  TimerId id = 0;
  std::function<void()> cb;
};

UvScheduler::UvScheduler(uv_loop_t* loop) : loop_(loop) {}

UvScheduler::~UvScheduler() { close(); }

Scheduler::TimerId UvScheduler::start_timer(std::chrono::milliseconds delay,
                                            std::function<void()> cb) {
  if (closed_) {
    return 0;
  }
  auto* timer = new Timer;
  timer->owner = this;
  timer->id = next_id_++;
  timer->cb = std::move(cb);
  uv_timer_init(loop_, &timer->handle);
  timer->handle.data = timer;
  uint64_t ms = delay.count() > 0 ? static_cast<uint64_t>(delay.count()) : 0;
  uv_timer_start(&timer->handle, &UvScheduler::on_timer, ms, 0);
  timers_.emplace(timer->id, timer);
  return timer->id;
}

void UvScheduler::cancel_timer(TimerId id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) {
    return;
  }
  Timer* timer = it->second;
  timers_.erase(it);
  release(timer);
}

void UvScheduler::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  auto timers = std::move(timers_);
  timers_.clear();
  for (auto& [id, timer] : timers) {
    release(timer);
  }
}

void UvScheduler::release(Timer* timer) {
  uv_timer_stop(&timer->handle);
  // Destroy the callback (and what it captured) now, on this thread, not in the close callback.
  timer->cb = nullptr;
  timer->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer->handle),
           [](uv_handle_t* h) { delete static_cast<Timer*>(h->data); });
}

void UvScheduler::on_timer(uv_timer_t* handle) {
  auto* timer = static_cast<Timer*>(handle->data);
  UvScheduler* owner = timer->owner;
  std::function<void()> cb = std::move(timer->cb);
  if (owner != nullptr) {
    owner->timers_.erase(timer->id);
    owner->release(timer);
  }
  if (cb) {
    guard::run("token timer", cb);  // a throw is logged; the loop goes on
  }
}

ManualScheduler::ManualScheduler(Clock::time_point start)
    : now_ns_(
          std::chrono::duration_cast<std::chrono::nanoseconds>(start.time_since_epoch()).count()) {}

Clock::time_point ManualScheduler::now() const {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::nanoseconds(now_ns_.load(std::memory_order_acquire))));
}

Scheduler::TimerId ManualScheduler::start_timer(std::chrono::milliseconds delay,
                                                std::function<void()> cb) {
  std::lock_guard lock(mu_);
  TimerId id = next_id_++;
  Clock::time_point due = now() + std::max(delay, std::chrono::milliseconds(0));
  timers_.emplace(std::make_pair(due, id), std::move(cb));
  deadlines_.emplace(id, due);
  delays_.push_back(delay);
  return id;
}

void ManualScheduler::cancel_timer(TimerId id) {
  std::function<void()> dropped;
  std::lock_guard lock(mu_);
  auto it = deadlines_.find(id);
  if (it == deadlines_.end()) {
    return;
  }
  auto node = timers_.extract(std::make_pair(it->second, id));
  deadlines_.erase(it);
  dropped = std::move(node.mapped());
}

std::optional<std::function<void()>> ManualScheduler::pop_due(Clock::time_point limit) {
  std::lock_guard lock(mu_);
  if (timers_.empty() || timers_.begin()->first.first > limit) {
    return std::nullopt;
  }
  auto node = timers_.extract(timers_.begin());
  deadlines_.erase(node.key().second);
  Clock::time_point due = std::max(node.key().first, now());
  now_ns_.store(
      std::chrono::duration_cast<std::chrono::nanoseconds>(due.time_since_epoch()).count(),
      std::memory_order_release);
  return std::move(node.mapped());
}

void ManualScheduler::advance(Clock::duration d) {
  Clock::time_point target = now() + d;
  while (auto cb = pop_due(target)) {
    (*cb)();
  }
  if (now() < target) {
    now_ns_.store(
        std::chrono::duration_cast<std::chrono::nanoseconds>(target.time_since_epoch()).count(),
        std::memory_order_release);
  }
}

bool ManualScheduler::fire_next() {
  std::optional<Clock::time_point> due = next_deadline();
  if (!due) {
    return false;
  }
  advance(std::max(*due - now(), Clock::duration::zero()));
  return true;
}

size_t ManualScheduler::pending() const {
  std::lock_guard lock(mu_);
  return timers_.size();
}

std::optional<Clock::time_point> ManualScheduler::next_deadline() const {
  std::lock_guard lock(mu_);
  if (timers_.empty()) {
    return std::nullopt;
  }
  return timers_.begin()->first.first;
}

std::vector<std::chrono::milliseconds> ManualScheduler::started_delays() const {
  std::lock_guard lock(mu_);
  return delays_;
}

}  // namespace miproxy::auth
