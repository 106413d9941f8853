#pragma once
// A token source is one way of getting an Entra access token: a managed-identity endpoint
// (IMDS, App Service, App Service 2017 / Azure ML, Arc, Service Fabric, Cloud Shell), the Entra
// token endpoint (workload identity, client secret, client certificate), the Azure CLI, a token
// file, or the `default` chain of these. A source makes exactly one attempt per fetch(); the
// token cache (token_manager.h) owns caching, refresh-ahead, single flight and retries, guided
// by the retry advice each SourceError carries. Wire formats: shared/reference/token-sources.md.

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "auth/http_fetcher.h"
#include "auth/token.h"
#include "base/secret.h"
#include "config/config.h"

namespace miproxy::auth {

// One successful attempt, normalised (token-sources.md §12).
struct TokenData {
  SecretString access_token;
  Clock::time_point expires_at;
  std::optional<Clock::time_point> refresh_at;  // from refresh_in, when the endpoint sent it
};

struct SourceError {
  std::string message;      // operator words: status, error code, description, AADSTS code,
                            // trace/correlation ids. Never a secret.
  int http_status = 0;      // 0 when there was no HTTP answer (network, process, file)
  bool retryable = false;   // per the source's rules in token-sources.md
  std::optional<std::chrono::seconds> retry_after;  // from Retry-After, when sent
  // IMDS 410 "updating": keep retrying for at least this long (70 s) at a slow, fixed pace.
  std::chrono::seconds retry_for{0};
  // For the `default` chain: the source does not apply in this environment (its variables or
  // files are absent), as opposed to applying and failing.
  bool unavailable = false;
  // The endpoint (or `az`) did not answer within its timeout (counted as a limit hit).
  bool timed_out = false;
};

using SourceResult = std::expected<TokenData, SourceError>;

class TokenSource {
 public:
  virtual ~TokenSource() = default;
  // "imds", "app_service", "app_service_2017", "arc", "service_fabric", "cloud_shell",
  // "workload_identity", "client_secret", "client_certificate", "azure_cli", "token_file",
  // or "default" (whose successful child is reported by last_source()).
  virtual const std::string& name() const = 0;
  // The source that produced the last successful token (differs from name() for `default`).
  virtual std::string last_source() const { return name(); }
  // One attempt for |scope| (a v2 scope, ".../.default"; managed-identity sources convert it to
  // a resource). |claims| is a CAE claims challenge (JSON) or "". |done| runs exactly once on
  // the control loop, never inside fetch().
  virtual void fetch(const std::string& scope, const std::string& claims,
                     std::function<void(SourceResult)> done) = 0;
  // Whether fetch() can pass |claims| to its endpoint (Entra sources, Service Fabric).
  virtual bool supports_claims() const { return false; }
};

struct ProcessResult {
  int exit_code = -1;       // -1 when it did not exit normally
  bool timed_out = false;
  bool spawn_failed = false;  // e.g. the executable does not exist
  std::string out;          // stdout (bounded)
  std::string err;          // stderr (bounded)
};

// Runs a program without a shell and without blocking the loop (uv_spawn on the control loop).
class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // |argv[0]| is an absolute path. |env| entries are "NAME=value" (the full environment).
  // The process is killed when |timeout| passes. |done| runs once on the loop, never inline.
  virtual void run(std::vector<std::string> argv, std::vector<std::string> env,
                   std::chrono::milliseconds timeout, std::function<void(ProcessResult)> done) = 0;
};

// Everything a source needs from outside the process, injectable for tests.
struct SourceDeps {
  HttpFetcher* fetcher = nullptr;
  ProcessRunner* processes = nullptr;
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
  // Environment lookup: "" when unset.
  std::function<std::string(const std::string&)> getenv;
  // Directory the Arc 401 challenge must name (tests point it at a temp dir).
  std::string arc_key_directory = "/var/opt/azcmagent/tokens";
  // Presence of the Arc agent binary (detection fallback).
  std::string arc_agent_binary = "/opt/azcmagent/bin/himds";
  // Where `az` is looked up (fixed, OS-owned directories first; tests prepend a fake).
  std::vector<std::string> az_search_path = {"/usr/bin", "/usr/local/bin", "/bin"};
  std::chrono::milliseconds az_timeout{13000};
  // The timeout of each token endpoint request (FetchRequest::timeout), read when the request
  // is made, so that main can hand out the running config's limits.token_request_timeout and a
  // reload applies to sources made earlier. Empty: FetchRequest's default.
  std::function<std::chrono::milliseconds()> request_timeout;
  // Global tls.ca_file for HTTPS token endpoints ("" = system store).
  std::string ca_file;
  // Runs |task| later on the control loop, never inside the call (main wires it to the control
  // Executor's post; tests to a queue they drain). Sources use it to report results that need
  // no I/O callback (file reads, configuration errors), so fetch() never calls |done| inline.
  // Required: make_source() refuses deps without it.
  std::function<void(std::function<void()>)> defer;
};

// Builds the source for |identity| (for managed_identity: auto-detected from the environment
// unless `source` forces one). Errors are configuration errors in words, e.g. "Azure Arc
// cannot select a user-assigned identity (client_id given)".
std::expected<std::unique_ptr<TokenSource>, std::string> make_source(
    const config::Identity& identity, const SourceDeps& deps);

}  // namespace miproxy::auth
