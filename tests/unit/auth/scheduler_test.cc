#include "auth/scheduler.h"

#include <uv.h>

#include <catch2/catch.hpp>
#include <vector>

namespace {

using namespace miproxy::auth;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

TEST_CASE("UvScheduler fires timers once, in deadline order, and not after cancel", "[token]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  std::vector<int> fired;
  {
    UvScheduler scheduler(&loop);
    scheduler.start_timer(30ms, [&] { fired.push_back(30); });
    scheduler.start_timer(10ms, [&] {
      fired.push_back(10);
      // A callback may start another timer.
      scheduler.start_timer(5ms, [&] { fired.push_back(15); });
    });
    auto cancelled = scheduler.start_timer(20ms, [&] { fired.push_back(20); });
    REQUIRE(cancelled != 0);
    scheduler.cancel_timer(cancelled);
    scheduler.cancel_timer(cancelled);  // twice: a no-op
    CHECK(fired.empty());               // never inside start_timer()
    CHECK(scheduler.pending() == 2);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(scheduler.pending() == 0);
  }
  CHECK(fired == std::vector<int>{10, 15, 30});
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("UvScheduler close() cancels pending timers and frees their handles", "[token]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int fired = 0;
  auto scheduler = std::make_unique<UvScheduler>(&loop);
  scheduler->start_timer(10ms, [&] { ++fired; });
  scheduler->start_timer(0ms, [&] {
    ++fired;
    scheduler->close();
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(fired == 1);
  CHECK(scheduler->start_timer(0ms, [&] { ++fired; }) == 0);
  scheduler.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(fired == 1);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("ManualScheduler fires due timers in order with the clock at each deadline", "[token]") {
  ManualScheduler scheduler;
  const Clock::time_point t0 = scheduler.now();
  std::vector<std::pair<int, Clock::duration>> fired;
  scheduler.start_timer(2s, [&] { fired.emplace_back(2, scheduler.now() - t0); });
  scheduler.start_timer(1s, [&] {
    fired.emplace_back(1, scheduler.now() - t0);
    scheduler.start_timer(500ms, [&] { fired.emplace_back(15, scheduler.now() - t0); });
    scheduler.start_timer(10s, [&] { fired.emplace_back(11, scheduler.now() - t0); });
  });
  auto cancelled =
      scheduler.start_timer(1500ms, [&] { fired.emplace_back(-1, Clock::duration::zero()); });
  scheduler.cancel_timer(cancelled);

  scheduler.advance(999ms);
  CHECK(fired.empty());
  scheduler.advance(1001ms);
  using Fired = std::vector<std::pair<int, Clock::duration>>;
  CHECK(fired == Fired{{1, 1s}, {15, 1500ms}, {2, 2s}});
  CHECK(scheduler.now() - t0 == 2s);
  CHECK(scheduler.pending() == 1);
  CHECK(scheduler.next_deadline() == t0 + 11s);
  REQUIRE(scheduler.fire_next());
  CHECK(fired.back() == std::make_pair(11, Clock::duration(11s)));
  CHECK_FALSE(scheduler.fire_next());
  CHECK(scheduler.started_delays() ==
        std::vector<milliseconds>{2000ms, 1000ms, 1500ms, 500ms, 10000ms});
}

}  // namespace
