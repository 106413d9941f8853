#pragma once
// Test doubles for auth/: a fetcher and a process runner that record what they were asked and
// answer with canned replies only when the test calls deliver(), a queue standing in for
// SourceDeps::defer, a fake environment and clock, and helpers to take URLs and form bodies
// apart. Nothing here prints a token.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "auth/form.h"
#include "auth/http_fetcher.h"
#include "auth/jwt.h"
#include "auth/source.h"

namespace miproxy::auth::testing {

// Runs deferred tasks when the test says so.
class DeferQueue {
 public:
  void post(std::function<void()> task) { tasks_.push_back(std::move(task)); }
  size_t run_all() {
    size_t n = 0;
    while (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      task();
      ++n;
    }
    return n;
  }
  size_t size() const { return tasks_.size(); }

 private:
  std::deque<std::function<void()>> tasks_;
};

inline FetchResponse make_response(int status, std::string body,
                                   std::vector<std::pair<std::string, std::string>> headers = {}) {
  FetchResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  if (r.headers.empty()) {
    r.headers.emplace_back("Content-Type", "application/json");
  }
  return r;
}

// Records every request; answers each with the next canned reply, but only from deliver().
class FakeFetcher : public HttpFetcher {
 public:
  using Reply = std::function<FetchResult(const FetchRequest&)>;

  std::vector<FetchRequest> requests;
  std::deque<Reply> replies;

  void reply(int status, std::string body,
             std::vector<std::pair<std::string, std::string>> headers = {}) {
    FetchResponse r = make_response(status, std::move(body), std::move(headers));
    replies.push_back([r](const FetchRequest&) { return FetchResult(r); });
  }
  void fail(FetchError::Kind kind, std::string message) {
    replies.push_back([kind, message](const FetchRequest&) {
      return FetchResult(std::unexpected(FetchError{kind, message}));
    });
  }

  void fetch(FetchRequest req, std::function<void(FetchResult)> done) override {
    requests.push_back(req);
    FetchResult result = std::unexpected(FetchError{FetchError::Kind::CONNECT, "no canned reply"});
    if (!replies.empty()) {
      result = replies.front()(req);
      replies.pop_front();
    }
    pending_.emplace_back(std::move(done), std::move(result));
  }

  // Delivers the replies to every request made so far; returns how many.
  size_t deliver() {
    size_t n = 0;
    while (!pending_.empty()) {
      auto [done, result] = std::move(pending_.front());
      pending_.pop_front();
      done(std::move(result));
      ++n;
    }
    return n;
  }
  size_t pending() const { return pending_.size(); }

 private:
  std::deque<std::pair<std::function<void(FetchResult)>, FetchResult>> pending_;
};

struct ProcessCall {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::chrono::milliseconds timeout{0};
};

class FakeProcessRunner : public ProcessRunner {
 public:
  std::vector<ProcessCall> calls;
  std::deque<ProcessResult> results;

  void run(std::vector<std::string> argv, std::vector<std::string> env,
           std::chrono::milliseconds timeout, std::function<void(ProcessResult)> done) override {
    calls.push_back({argv, env, timeout});
    ProcessResult result;
    result.spawn_failed = true;
    if (!results.empty()) {
      result = results.front();
      results.pop_front();
    }
    pending_.emplace_back(std::move(done), std::move(result));
  }
  size_t deliver() {
    size_t n = 0;
    while (!pending_.empty()) {
      auto [done, result] = std::move(pending_.front());
      pending_.pop_front();
      done(std::move(result));
      ++n;
    }
    return n;
  }

 private:
  std::deque<std::pair<std::function<void(ProcessResult)>, ProcessResult>> pending_;
};

// Everything a source needs, faked; deps() hands out pointers into this object.
struct Harness {
  FakeFetcher fetcher;
  FakeProcessRunner processes;
  DeferQueue queue;
  std::map<std::string, std::string> env;
  Clock::time_point now = Clock::time_point{std::chrono::seconds{1767225600}};  // 2026-01-01

  SourceDeps deps() {
    SourceDeps d;
    d.fetcher = &fetcher;
    d.processes = &processes;
    d.now = [this] { return now; };
    d.getenv = [this](const std::string& name) {
      auto it = env.find(name);
      return it == env.end() ? std::string() : it->second;
    };
    d.defer = [this](std::function<void()> task) { queue.post(std::move(task)); };
    d.arc_agent_binary = "/nonexistent/himds";
    return d;
  }

  // Delivers everything until nothing is left to deliver.
  void run() {
    while (queue.run_all() + fetcher.deliver() + processes.deliver() > 0) {
    }
  }
};

// Collects the answer of one fetch and counts calls (exactly once, never inline).
struct Capture {
  int calls = 0;
  std::optional<SourceResult> result;
  std::function<void(SourceResult)> callback() {
    return [this](SourceResult r) {
      ++calls;
      result = std::move(r);
    };
  }
  bool ok() const { return result && result->has_value(); }
  const SourceError& error() const { return result->error(); }
  const TokenData& token() const { return result->value(); }
};

// Compares without letting Catch print the secret on failure.
inline bool same_secret(const SecretString& secret, std::string_view expected) {
  return secret.reveal() == expected;
}

struct UrlParts {
  std::string base;  // scheme://host[:port]/path
  std::string path;  // /path
  FormFields query;  // decoded, in order, duplicates kept
};

inline UrlParts split_url(const std::string& url) {
  UrlParts parts;
  size_t q = url.find('?');
  parts.base = url.substr(0, q);
  size_t scheme = parts.base.find("://");
  size_t slash = parts.base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  parts.path = slash == std::string::npos ? "/" : parts.base.substr(slash);
  if (q != std::string::npos) {
    parts.query = parse_form(url.substr(q + 1)).value_or(FormFields{});
  }
  return parts;
}

inline std::map<std::string, std::string> to_map(const FormFields& fields) {
  std::map<std::string, std::string> m;
  for (const auto& [k, v] : fields) {
    m[k] = v;
  }
  return m;
}

inline bool has_duplicate_keys(const FormFields& fields) {
  return to_map(fields).size() != fields.size();
}

// Values of every header named |name| (case-insensitive).
inline std::vector<std::string> header_values(const FetchRequest& req, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& [k, v] : req.headers) {
    if (k.size() == name.size() && std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
          return std::tolower(a) == std::tolower(b);
        })) {
      out.push_back(v);
    }
  }
  return out;
}

// An unsigned token-shaped string with |payload_json| as its claims ("eyJ...").
inline std::string fake_jwt(const std::string& payload_json) {
  return base64url_encode(R"({"typ":"JWT","alg":"RS256"})") + "." + base64url_encode(payload_json) +
         ".c2lnbmF0dXJl";
}

// A temporary directory removed with its contents.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "miproxy-auth-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    path_ = made ? made : "";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& contents, mode_t mode = 0600) {
    std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary | std::ios::trunc) << contents;
    ::chmod(file.c_str(), mode);
    return file;
  }

 private:
  std::string path_;
};

}  // namespace miproxy::auth::testing

namespace miproxy::auth::testing {

// Builds a source from |identity| with the harness' fakes; fails the test on a config error.
inline std::unique_ptr<TokenSource> build_source(Harness& h, const config::Identity& identity) {
  auto source = make_source(identity, h.deps());
  if (!source) {
    throw std::runtime_error("make_source failed: " + source.error());
  }
  return std::move(*source);
}

// One fetch, driven to completion. Checks that |done| did not run inside fetch() and ran
// exactly once afterwards.
struct FetchOutcome {
  int calls_inside_fetch = 0;
  int calls = 0;
  std::optional<SourceResult> result;
  bool ok() const { return result && result->has_value(); }
  const SourceError& error() const { return result->error(); }
  const TokenData& token() const { return result->value(); }
};

inline FetchOutcome fetch_once(Harness& h, TokenSource& source, const std::string& scope,
                               const std::string& claims = "") {
  auto outcome = std::make_shared<FetchOutcome>();
  source.fetch(scope, claims, [outcome](SourceResult r) {
    ++outcome->calls;
    outcome->result = std::move(r);
  });
  outcome->calls_inside_fetch = outcome->calls;
  h.run();
  return *outcome;
}

}  // namespace miproxy::auth::testing
