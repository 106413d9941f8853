#include "auth/uv_executor.h"

#include <uv.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <memory>
#include <thread>
#include <vector>

namespace {

using miproxy::UvExecutor;

TEST_CASE("UvExecutor runs tasks from 4 threads on the loop thread, in order per thread",
          "[token]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  auto executor = std::make_unique<UvExecutor>(&loop);
  const std::thread::id loop_thread = std::this_thread::get_id();
  std::vector<std::vector<int>> seen(kThreads);  // touched on the loop thread only
  int ran = 0;
  bool wrong_thread = false;

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        executor->post([&, t, i] {
          wrong_thread |= std::this_thread::get_id() != loop_thread;
          seen[t].push_back(i);
          if (++ran == kThreads * kPerThread) {
            executor->close();  // the loop ends once the async handle is closed
          }
        });
      }
    });
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  for (auto& t : threads) {
    t.join();
  }
  CHECK_FALSE(wrong_thread);
  CHECK(ran == kThreads * kPerThread);
  for (int t = 0; t < kThreads; ++t) {
    REQUIRE(seen[t].size() == static_cast<size_t>(kPerThread));
    bool in_order = true;
    for (int i = 0; i < kPerThread; ++i) {
      in_order &= seen[t][i] == i;
    }
    CHECK(in_order);
  }
  executor.reset();
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("UvExecutor never runs a task inside post()", "[token]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  UvExecutor executor(&loop);
  std::vector<int> order;
  executor.post([&] {
    order.push_back(1);
    executor.post([&] {
      order.push_back(3);
      executor.close();
    });
    order.push_back(2);
  });
  CHECK(order.empty());
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(order == std::vector<int>{1, 2, 3});
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("UvExecutor close() drops unrun tasks and later posts, and frees its handle", "[token]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  auto token = std::make_shared<int>(0);
  int ran = 0;
  auto executor = std::make_unique<UvExecutor>(&loop);
  executor->post([&ran, token] { ++ran; });
  CHECK(token.use_count() == 2);
  executor->close();
  CHECK(token.use_count() == 1);  // the unrun task and its captures are gone
  executor->close();              // idempotent
  std::thread late([&] { executor->post([&ran, token] { ++ran; }); });
  late.join();
  CHECK(token.use_count() == 1);
  executor.reset();  // destroyed before its close callback ran
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(ran == 0);
  CHECK(uv_loop_close(&loop) == 0);
}

}  // namespace
