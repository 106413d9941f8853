#include "auth/process.h"

#include <uv.h>

#include <catch2/catch.hpp>
#include <optional>

namespace {

using namespace miproxy::auth;
using namespace std::chrono_literals;

struct Loop {
  Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~Loop() { CHECK(uv_loop_close(&loop) == 0); }
  uv_loop_t loop;
};

// Runs |argv| to completion on a fresh loop; checks |done| ran exactly once, never inline.
ProcessResult run(std::vector<std::string> argv, std::vector<std::string> env = {"PATH=/bin"},
                  std::chrono::milliseconds timeout = 10s) {
  Loop l;
  int calls = 0;
  ProcessResult out;
  {
    UvProcessRunner runner(&l.loop);
    runner.run(std::move(argv), std::move(env), timeout, [&](ProcessResult r) {
      ++calls;
      out = std::move(r);
    });
    CHECK(calls == 0);
    uv_run(&l.loop, UV_RUN_DEFAULT);
    CHECK(runner.running() == 0);
  }
  CHECK(calls == 1);
  return out;
}

TEST_CASE("a process's stdout and exit code are captured", "[token]") {
  ProcessResult r = run({"/bin/echo", "hello", "world"});
  CHECK_FALSE(r.spawn_failed);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "hello world\n");
  CHECK(r.err.empty());
}

TEST_CASE("arguments reach the process without a shell, with exactly the given environment",
          "[token]") {
  ProcessResult r = run({"/bin/sh", "-c", "echo \"[$FOO][$HOME]\" '$FOO'; echo oops >&2; exit 3"},
                        {"FOO=bar baz", "PATH=/bin"});
  CHECK(r.exit_code == 3);
  CHECK(r.out == "[bar baz][] $FOO\n");  // HOME is not inherited from this process
  CHECK(r.err == "oops\n");
}

TEST_CASE("a process that outlives its timeout is killed with its children", "[token]") {
  ProcessResult r = run({"/bin/sh", "-c", "sleep 5 & sleep 5"}, {"PATH=/bin:/usr/bin"}, 100ms);
  CHECK(r.timed_out);
  CHECK_FALSE(r.spawn_failed);
  CHECK(r.exit_code == -1);
}

TEST_CASE("a plain sleep past the timeout reports timed_out", "[token]") {
  ProcessResult r = run({"/bin/sh", "-c", "sleep 5"}, {"PATH=/bin:/usr/bin"}, 100ms);
  CHECK(r.timed_out);
  CHECK(r.exit_code == -1);
}

TEST_CASE("a missing executable reports spawn_failed", "[token]") {
  ProcessResult r = run({"/nonexistent/az", "account", "get-access-token"});
  CHECK(r.spawn_failed);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code == -1);
  CHECK(r.out.empty());
}

TEST_CASE("output beyond 1 MiB is discarded without blocking the process", "[token]") {
  ProcessResult r =
      run({"/bin/sh", "-c", "head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2"},
          {"PATH=/bin:/usr/bin"});
  CHECK(r.exit_code == 0);
  CHECK_FALSE(r.timed_out);
  CHECK(r.out.size() == kProcessOutputLimit);
  CHECK(r.err.size() == kProcessOutputLimit);
}

TEST_CASE("close() kills running processes and drops their callbacks", "[token]") {
  Loop l;
  int calls = 0;
  {
    UvProcessRunner runner(&l.loop);
    runner.run({"/bin/sh", "-c", "sleep 5"}, {"PATH=/bin:/usr/bin"}, 10s,
               [&](ProcessResult) { ++calls; });
    CHECK(runner.running() == 1);
    runner.close();
    CHECK(runner.running() == 0);
  }
  uv_run(&l.loop, UV_RUN_DEFAULT);
  CHECK(calls == 0);
}

}  // namespace
