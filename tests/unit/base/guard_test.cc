#include "base/guard.h"

#include <catch2/catch.hpp>
#include <atomic>
#include <cstdlib>
#include <new>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "auth/uv_executor.h"
#include "base/log.h"
#include "unit/support/capture_stderr.h"

// Counts allocations made on this thread while |g_counting| is set: the guard's happy path must
// allocate nothing. (A replacement operator new is program-wide; it only counts, then mallocs.)
namespace {
thread_local bool g_counting = false;
thread_local int g_allocations = 0;
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// Every form that pairs with a delete below allocates with malloc too, so that no block made by
// the library's own operator new is handed to free (AddressSanitizer reports that mismatch).
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (g_counting) ++g_allocations;
  return std::malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using miproxy::test::CaptureStderr;

nlohmann::json only_log_line(CaptureStderr& capture) {
  auto lines = capture.lines();
  REQUIRE(lines.size() == 1);
  return nlohmann::json::parse(lines[0]);  // throws (fails the test) if not valid JSON
}

}  // namespace

TEST_CASE("guard::run runs the body and reports success without allocating", "[guard]") {
  uint64_t before = miproxy::guard::caught();
  int calls = 0;
  g_allocations = 0;
  g_counting = true;
  bool ok = miproxy::guard::run("test", [&] { ++calls; });
  int rc = miproxy::guard::parser_call("test", [&] { return 7; });
  g_counting = false;
  CHECK(ok);
  CHECK(rc == 7);
  CHECK(calls == 1);
  CHECK(g_allocations == 0);
  CHECK(miproxy::guard::caught() == before);
}

TEST_CASE("guard::run catches a std::exception, logs it once with where it was, counts it",
          "[guard]") {
  miproxy::log::set_level(miproxy::log::Level::INFO);
  uint64_t before = miproxy::guard::caught();
  CaptureStderr capture;
  bool ok = miproxy::guard::run("transport read",
                                [] { throw std::runtime_error("invalid UTF-8 byte \xff"); });
  CHECK_FALSE(ok);
  CHECK(miproxy::guard::caught() == before + 1);
  nlohmann::json line = only_log_line(capture);
  CHECK(line["level"] == "error");
  CHECK(line["where"] == "transport read");
  // The exception's own text may carry outside bytes: the line stays valid JSON.
  CHECK(line["what"] == "invalid UTF-8 byte \xef\xbf\xbd");
}

TEST_CASE("guard catches what is not a std::exception, and parser_call answers -1", "[guard]") {
  uint64_t before = miproxy::guard::caught();
  CaptureStderr capture;
  CHECK_FALSE(miproxy::guard::run("a", [] { throw 42; }));
  CHECK(miproxy::guard::parser_call("b", []() -> int { throw std::out_of_range("x"); }) == -1);
  CHECK(miproxy::guard::caught() == before + 2);
  auto lines = capture.lines();
  REQUIRE(lines.size() == 2);
  CHECK(nlohmann::json::parse(lines[0])["what"] == "unknown exception");
  CHECK(nlohmann::json::parse(lines[1])["where"] == "b");
}

TEST_CASE("A throwing posted task neither ends the loop nor drops the tasks after it", "[guard]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  std::vector<int> ran;
  {
    miproxy::UvExecutor executor(&loop);
    CaptureStderr capture;
    executor.post([&] { ran.push_back(1); });
    executor.post([&] {
      ran.push_back(2);
      throw std::runtime_error("boom");
    });
    executor.post([&] {
      ran.push_back(3);
      executor.close();
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(capture.lines().size() == 1);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(uv_loop_close(&loop) == 0);
  CHECK(ran == std::vector<int>{1, 2, 3});
}
