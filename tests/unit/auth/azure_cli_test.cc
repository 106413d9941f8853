// Azure CLI source (token-sources.md §10) with a fake process runner.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <ctime>

#include "tests/unit/auth/fakes.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;
using std::chrono::seconds;

namespace {

constexpr char kScope[] = "https://storage.azure.com/.default";

struct CliFixture {
  Harness h;
  TempDir bin;
  std::string az;
  SourceDeps deps;
  CliFixture() {
    az = bin.write("az", "#!/bin/sh\nexit 0\n", 0755);
    h.env["PATH"] = "/usr/bin:/bin";
    h.env["HOME"] = "/home/dev";
    h.env["AZURE_CLIENT_SECRET"] = "not-for-az";
    deps = h.deps();
    deps.az_search_path = {"/nonexistent-dir", bin.path(), "/usr/bin"};
  }
  std::unique_ptr<TokenSource> make(const std::string& tenant = "") {
    config::Identity id;
    id.type = config::Identity::Type::AZURE_CLI;
    id.tenant_id = tenant;
    auto source = make_source(id, deps);
    REQUIRE(source.has_value());
    return std::move(*source);
  }
  void answer(int exit_code, std::string out, std::string err = "") {
    ProcessResult r;
    r.exit_code = exit_code;
    r.out = std::move(out);
    r.err = std::move(err);
    h.processes.results.push_back(r);
  }
};

class ScopedTz {
 public:
  explicit ScopedTz(const char* tz) {
    const char* old = std::getenv("TZ");
    had_ = old != nullptr;
    old_ = old ? old : "";
    ::setenv("TZ", tz, 1);
    ::tzset();
  }
  ~ScopedTz() {
    if (had_) {
      ::setenv("TZ", old_.c_str(), 1);
    } else {
      ::unsetenv("TZ");
    }
    ::tzset();
  }

 private:
  bool had_ = false;
  std::string old_;
};

}  // namespace

TEST_CASE("Azure CLI: argv without a shell, fixed directory, environment, timeout", "[auth]") {
  CliFixture f;
  auto source = f.make("contoso.onmicrosoft.com");
  CHECK(source->name() == "azure_cli");
  f.answer(
      0,
      R"({"accessToken":"cli-token","expiresOn":"2026-01-01 12:34:56.000000","expires_on":1767270896,"subscription":"s","tenant":"t","tokenType":"Bearer"})");
  auto out = fetch_once(f.h, *source, kScope);
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  REQUIRE(f.h.processes.calls.size() == 1);
  const ProcessCall& call = f.h.processes.calls[0];
  CHECK(call.argv == std::vector<std::string>{f.az, "account", "get-access-token", "--output",
                                              "json", "--scope", kScope, "--tenant",
                                              "contoso.onmicrosoft.com"});
  CHECK(call.timeout == f.deps.az_timeout);
  auto has = [&](const std::string& entry) {
    return std::find(call.env.begin(), call.env.end(), entry) != call.env.end();
  };
  CHECK(has("AZURE_CORE_NO_COLOR=true"));
  CHECK(has("PATH=/usr/bin:/bin"));
  CHECK(has("HOME=/home/dev"));
  for (const auto& entry : call.env) {
    CHECK(entry.rfind("AZURE_CLIENT_SECRET=", 0) != 0);
  }
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "cli-token"));
  CHECK(out.token().expires_at == Clock::time_point{seconds{1767270896}});
}

TEST_CASE("Azure CLI output: expires_on integer or string, else expiresOn in local time",
          "[auth]") {
  CliFixture f;
  auto source = f.make();
  f.answer(
      0,
      R"({"accessToken":"t","expires_on":"1767270896","expiresOn":"2000-01-01 00:00:00.000000"})");
  auto out = fetch_once(f.h, *source, kScope);
  REQUIRE(out.ok());
  CHECK(out.token().expires_at == Clock::time_point{seconds{1767270896}});
  CHECK(f.h.processes.calls.at(0).argv.size() == 7);  // no --tenant

  {
    ScopedTz tz("EST5");
    f.answer(0, R"({"accessToken":"t","expiresOn":"2026-01-01 12:34:56.000000"})");
    out = fetch_once(f.h, *source, kScope);
    REQUIRE(out.ok());
    CHECK(out.token().expires_at == Clock::time_point{seconds{1767270896 + 5 * 3600}});
  }
  f.answer(0, R"({"accessToken":"t","expires_on":"soon","expiresOn":"garbage"})");
  CHECK(fetch_once(f.h, *source, kScope).error().message ==
        "Azure CLI output has no usable expires_on or expiresOn");
  f.answer(0, "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln not json");
  out = fetch_once(f.h, *source, kScope);
  CHECK(out.error().message == "Azure CLI printed something that is not a JSON object");
  f.answer(0, R"({"expires_on":1767270896})");
  CHECK(fetch_once(f.h, *source, kScope).error().message == "Azure CLI output has no accessToken");
}

TEST_CASE("Azure CLI failures: not installed, not logged in, timeout, other", "[auth]") {
  CliFixture f;
  auto source = f.make();

  f.answer(127, "", "az: not found");
  auto out = fetch_once(f.h, *source, kScope);
  CHECK(out.error().message == "Azure CLI not installed");
  CHECK(out.error().unavailable);

  ProcessResult spawn;
  spawn.spawn_failed = true;
  f.h.processes.results.push_back(spawn);
  CHECK(fetch_once(f.h, *source, kScope).error().message == "Azure CLI not installed");

  f.answer(1, "", "ERROR: Please run 'az login' to setup account.\n");
  out = fetch_once(f.h, *source, kScope);
  CHECK(out.error().message == "Azure CLI not logged in: run az login");
  CHECK(out.error().unavailable);
  f.answer(1, "", "ERROR: No subscription found. Run 'az account set' to select a subscription.");
  CHECK(fetch_once(f.h, *source, kScope).error().message ==
        "Azure CLI not logged in: run az login");

  ProcessResult slow;
  slow.timed_out = true;
  f.h.processes.results.push_back(slow);
  out = fetch_once(f.h, *source, kScope);
  CHECK(out.error().message == "Azure CLI did not answer within 13 s");
  CHECK(out.error().retryable);
  CHECK_FALSE(out.error().unavailable);

  f.answer(2, "",
           "ERROR: AADSTS700082: refresh token expired. "
           "token=eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\n");
  out = fetch_once(f.h, *source, kScope);
  CHECK(out.error().message ==
        "Azure CLI failed (exit 2): ERROR: AADSTS700082: refresh token expired. token=[redacted]");
  CHECK(out.error().message.find("eyJ") == std::string::npos);
  CHECK_FALSE(out.error().unavailable);
}

TEST_CASE("Azure CLI: az missing from the search path, non-executable files ignored", "[auth]") {
  CliFixture f;
  TempDir empty;
  empty.write("az", "not executable", 0644);
  f.deps.az_search_path = {empty.path(), "relative/dir"};
  auto source = f.make();
  auto out = fetch_once(f.h, *source, kScope);
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.error().message ==
        "Azure CLI not installed (no az in " + empty.path() + ", relative/dir)");
  CHECK(out.error().unavailable);
  CHECK(f.h.processes.calls.empty());
}

TEST_CASE("Azure CLI: scopes outside letters, digits and .-:/_ never reach the command line",
          "[auth]") {
  CliFixture f;
  auto source = f.make();
  for (const char* scope :
       {"https://x/.default; rm -rf /", "https://x/.default --debug", "https://x/$(id)", ""}) {
    auto out = fetch_once(f.h, *source, scope);
    INFO(scope);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().message.find("has characters the Azure CLI invocation refuses") !=
          std::string::npos);
  }
  CHECK(f.h.processes.calls.empty());
  config::Identity id;
  id.type = config::Identity::Type::AZURE_CLI;
  id.tenant_id = "a b";
  CHECK_FALSE(make_source(id, f.deps).has_value());
}
