#pragma once
// Timers and the wall clock for the token cache, behind an interface so tests can drive time.
// UvScheduler runs timers on the control loop; ManualScheduler is a clock that a test advances
// by hand, firing due timers in deadline order.

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "auth/token.h"

namespace miproxy::auth {

class Scheduler {
 public:
  using TimerId = uint64_t;  // 0 is never a valid id
  virtual ~Scheduler() = default;
  // Any thread: the wall clock that token expiry is measured against.
  virtual Clock::time_point now() const = 0;
  // Control thread: runs |cb| once, on the control thread, after |delay| (negative = 0). Never
  // runs |cb| inside start_timer(). Returns an id for cancel_timer().
  virtual TimerId start_timer(std::chrono::milliseconds delay, std::function<void()> cb) = 0;
  // Control thread: |cb| of |id| will not run. A no-op for an id that fired or was cancelled.
  virtual void cancel_timer(TimerId id) = 0;
};

// A Scheduler over a uv_loop_t; every call except now() must be made on the loop's thread. Each
// timer is its own uv_timer_t, freed by its close callback, so the scheduler may be destroyed
// while close callbacks are still pending; the loop must run once more to free them.
class UvScheduler : public Scheduler {
 public:
  explicit UvScheduler(uv_loop_t* loop);
  ~UvScheduler() override;  // close()
  UvScheduler(const UvScheduler&) = delete;
  UvScheduler& operator=(const UvScheduler&) = delete;

  Clock::time_point now() const override { return Clock::now(); }
  TimerId start_timer(std::chrono::milliseconds delay, std::function<void()> cb) override;
  void cancel_timer(TimerId id) override;
  // Cancels every pending timer and closes its handle; later start_timer() calls return 0 and
  // never fire. Safe to call more than once.
  void close();
  size_t pending() const { return timers_.size(); }

 private:
  struct Timer;
  static void on_timer(uv_timer_t* handle);
  void release(Timer* timer);

  uv_loop_t* loop_;
  TimerId next_id_ = 1;
  std::unordered_map<TimerId, Timer*> timers_;
  bool closed_ = false;
};

// A Scheduler for tests: now() starts at |start| and moves only when advance() is called, which
// fires every timer that falls due, in deadline order (ties in start order), each with the clock
// set to its deadline. Callbacks run on the thread that calls advance(), which plays the
// control thread. now() is safe from any thread.
class ManualScheduler : public Scheduler {
 public:
  // 2026-01-01T00:00:00Z by default, so tokens and logs show plausible dates.
  explicit ManualScheduler(
      Clock::time_point start = Clock::time_point(std::chrono::seconds(1767225600)));

  Clock::time_point now() const override;
  TimerId start_timer(std::chrono::milliseconds delay, std::function<void()> cb) override;
  void cancel_timer(TimerId id) override;

  // Moves the clock forward by |d|, firing timers that fall due on the way (including timers
  // that those callbacks start, if they fall due before the new time).
  void advance(Clock::duration d);
  // Advances to the earliest pending deadline and fires what is due then. False if none.
  bool fire_next();
  size_t pending() const;
  // Deadline of the earliest pending timer.
  std::optional<Clock::time_point> next_deadline() const;
  // Every delay passed to start_timer(), in call order (including cancelled timers).
  std::vector<std::chrono::milliseconds> started_delays() const;

 private:
  struct Entry {
    TimerId id;
    std::function<void()> cb;
  };
  // Pops the earliest timer due at or before |limit|, setting the clock to its deadline.
  std::optional<std::function<void()>> pop_due(Clock::time_point limit);

  std::atomic<int64_t> now_ns_;
  mutable std::mutex mu_;
  TimerId next_id_ = 1;
  // (deadline, id) orders by deadline, then by start order.
  std::map<std::pair<Clock::time_point, TimerId>, std::function<void()>> timers_;
  std::unordered_map<TimerId, Clock::time_point> deadlines_;
  std::vector<std::chrono::milliseconds> delays_;
};

}  // namespace miproxy::auth
