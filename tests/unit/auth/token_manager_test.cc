#include "auth/token_manager.h"

#include <uv.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "auth/scheduler.h"
#include "auth/uv_executor.h"
#include "base/log.h"

namespace {

using namespace miproxy;
using namespace miproxy::auth;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

// An Executor whose tasks wait in a queue until the test drains it (thread-safe post()).
class QueueExecutor : public Executor {
 public:
  void post(std::function<void()> task) override {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(task));
  }
  // Runs tasks until the queue is empty; returns how many ran.
  size_t drain() {
    size_t ran = 0;
    for (;;) {
      std::function<void()> task;
      {
        std::lock_guard lock(mu_);
        if (queue_.empty()) {
          return ran;
        }
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
      ++ran;
    }
  }

 private:
  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
};

// A TokenSource that records each fetch; the test completes them in order.
class FakeSource : public TokenSource {
 public:
  struct Call {
    std::string scope;
    std::string claims;
    std::function<void(SourceResult)> done;
  };
  FakeSource(std::string name, bool claims, std::set<FakeSource*>* live)
      : name_(std::move(name)), claims_(claims), live_(live) {
    live_->insert(this);
  }
  ~FakeSource() override { live_->erase(this); }

  // Like a fetcher that is shut down: drops the callbacks of fetches that never completed.
  std::vector<std::function<void(SourceResult)>> take_pending() {
    std::vector<std::function<void(SourceResult)>> out;
    for (auto& call : calls) {
      if (call.done) {
        out.push_back(std::move(call.done));
      }
    }
    pending = 0;
    return out;
  }

  const std::string& name() const override { return name_; }
  bool supports_claims() const override { return claims_; }
  void fetch(const std::string& scope, const std::string& claims,
             std::function<void(SourceResult)> done) override {
    calls.push_back(Call{scope, claims, std::move(done)});
    ++pending;
    max_pending = std::max(max_pending, pending);
  }

  // Completes the oldest uncompleted fetch with |result|.
  void complete(SourceResult result) {
    REQUIRE(pending > 0);
    size_t index = calls.size() - static_cast<size_t>(pending);
    --pending;
    auto done = std::move(calls[index].done);
    calls[index].done = nullptr;
    done(std::move(result));
  }

  std::vector<Call> calls;
  int pending = 0;
  int max_pending = 0;

 private:
  std::string name_;
  bool claims_;
  std::set<FakeSource*>* live_;
};

std::string base64url(const std::string& in) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(alphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) {
    out.push_back(alphabet[(acc << (6 - bits)) & 63]);
  }
  return out;
}

// A JWT-shaped fake (unsigned) with the claims the cache decodes.
std::string fake_jwt(int serial) {
  nlohmann::json payload = {{"aud", "https://storage.azure.com"},
                            {"oid", "22222222-0000-0000-0000-000000000002"},
                            {"tid", "33333333-0000-0000-0000-000000000003"},
                            {"appid", "11111111-0000-0000-0000-000000000001"},
                            {"serial", serial}};
  return base64url(R"({"alg":"RS256","typ":"JWT"})") + "." + base64url(payload.dump()) + ".sig";
}

config::Identity mi_identity(
    const std::string& client_id = "11111111-0000-0000-0000-000000000001") {
  config::Identity identity;
  identity.name = "orders";
  identity.type = config::Identity::Type::MANAGED_IDENTITY;
  identity.client_id = client_id;
  return identity;
}

const std::string kScope = "https://storage.azure.com/.default";

SourceError error_of(int status, std::string message, bool retryable) {
  SourceError e;
  e.message = std::move(message);
  e.http_status = status;
  e.retryable = retryable;
  return e;
}

struct Fixture {
  explicit Fixture(bool claims = false, TokenManagerOptions options = fixed_jitter())
      : saved_level(log::level()) {
    log::set_level(log::Level::OFF);  // failures are expected here; keep the output readable
    manager = std::make_unique<TokenManager>(
        control, scheduler,
        [this, claims](const config::Identity& identity)
            -> std::expected<std::unique_ptr<TokenSource>, std::string> {
          ++factory_calls;
          if (!factory_error.empty()) {
            return std::unexpected(factory_error);
          }
          auto source = std::make_unique<FakeSource>("imds", claims, &live);
          sources.push_back(source.get());
          return source;
        },
        std::move(options));
  }

  ~Fixture() {
    manager.reset();
    run();
    // A fetch left hanging holds its source; drop those callbacks as a closing fetcher would.
    std::vector<std::function<void(SourceResult)>> dropped;
    for (FakeSource* source : std::set<FakeSource*>(live)) {
      for (auto& done : source->take_pending()) {
        dropped.push_back(std::move(done));
      }
    }
    dropped.clear();
    run();
    CHECK(live.empty());
    log::set_level(saved_level);
  }

  static TokenManagerOptions fixed_jitter() {
    TokenManagerOptions options;
    options.random = [] { return 0.0; };
    return options;
  }

  // Drains the control and worker queues until both are quiet.
  void run() {
    while (control.drain() + worker.drain() > 0) {
    }
  }

  TokenData token(Clock::duration lifetime, std::optional<Clock::duration> refresh_in = {}) {
    TokenData data;
    data.access_token = SecretString(fake_jwt(++serial));
    data.expires_at = scheduler.now() + lifetime;
    if (refresh_in) {
      data.refresh_at = scheduler.now() + *refresh_in;
    }
    return data;
  }

  // Acquires on the worker executor and stores the answer in |out|.
  void acquire(TokenSlot& slot, std::optional<TokenResult>* out) {
    slot.acquire(worker, [out](TokenResult r) { *out = std::move(r); });
  }

  FakeSource& source() {
    REQUIRE(sources.size() == 1);
    return *sources[0];
  }

  log::Level saved_level;
  ManualScheduler scheduler;
  QueueExecutor control;
  QueueExecutor worker;
  std::set<FakeSource*> live;  // sources not yet destroyed
  std::vector<FakeSource*> sources;
  int factory_calls = 0;
  std::string factory_error;
  int serial = 0;
  std::unique_ptr<TokenManager> manager;
};

std::string value_of(const std::shared_ptr<const AccessToken>& token) {
  return token ? std::string(token->value.reveal()) : std::string("<none>");
}

TEST_CASE("first acquire triggers exactly one fetch and later ones are served from the cache",
          "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  CHECK(slot->current() == nullptr);

  std::optional<TokenResult> first;
  std::optional<TokenResult> second;
  f.acquire(*slot, &first);
  f.acquire(*slot, &second);
  f.run();
  REQUIRE(f.source().calls.size() == 1);
  CHECK(f.source().calls[0].scope == kScope);
  CHECK(f.source().calls[0].claims.empty());
  CHECK_FALSE(first.has_value());  // parked until the fetch completes

  f.source().complete(f.token(1h));
  f.run();
  REQUIRE(first.has_value());
  REQUIRE(first->has_value());
  REQUIRE(second.has_value());
  REQUIRE(second->has_value());
  CHECK(first->value() == second->value());
  CHECK(slot->current() == first->value());
  CHECK(value_of(first->value()) == fake_jwt(1));
  // Claims decoded from the JWT payload, for logs and doctor.
  CHECK(first->value()->object_id == "22222222-0000-0000-0000-000000000002");
  CHECK(first->value()->tenant_id == "33333333-0000-0000-0000-000000000003");
  CHECK(first->value()->client_id == "11111111-0000-0000-0000-000000000001");
  CHECK(first->value()->audience == "https://storage.azure.com");
  CHECK(first->value()->source == "imds");

  std::optional<TokenResult> third;
  f.acquire(*slot, &third);
  CHECK_FALSE(third.has_value());  // never answered inside acquire()
  f.run();
  REQUIRE(third.has_value());
  CHECK(third->value() == first->value());
  CHECK(f.source().calls.size() == 1);

  auto status = slot->status();
  CHECK(status.has_valid_token);
  CHECK(status.acquisitions_ok == 1);
  CHECK(status.acquisitions_failed == 0);
  CHECK(status.source == "imds");
  CHECK(status.last_error.empty());
}

TEST_CASE("1000 concurrent acquires from several threads share one fetch", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  std::atomic<int> answered{0};
  std::atomic<int> failed{0};
  std::mutex seen_mu;
  std::set<const AccessToken*> seen;
  auto on_token = [&](TokenResult r) {
    if (!r) {
      ++failed;
      return;
    }
    std::lock_guard lock(seen_mu);
    seen.insert(r->get());
    ++answered;
  };

  // Either the fetch completes only after every acquire() has joined it, or it completes while
  // the other threads are still calling acquire() (later callers are served from the cache).
  bool complete_early = GENERATE(false, true);
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        slot->acquire(f.worker, on_token);
      }
      ++finished;
    });
  }
  // This thread plays the control thread (and the workers' loops) while the others post.
  bool completed = false;
  while (finished < kThreads) {
    f.run();
    if (complete_early && !completed && !f.sources.empty() && f.sources[0]->pending == 1) {
      f.source().complete(f.token(1h));
      completed = true;
    }
    std::this_thread::yield();
  }
  for (auto& t : threads) {
    t.join();
  }
  f.run();
  if (!completed) {
    REQUIRE(f.source().calls.size() == 1);
    CHECK(answered + failed == 0);
    f.source().complete(f.token(1h));
  }
  f.run();
  CHECK(f.source().calls.size() == 1);
  CHECK(answered == kThreads * kPerThread);
  CHECK(failed == 0);
  CHECK(seen.size() == 1);
}

TEST_CASE("a 24 h token is refreshed at half-life while it keeps being served", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  REQUIRE(f.source().calls.size() == 1);
  f.source().complete(f.token(24h));
  auto old_token = slot->current();
  REQUIRE(old_token);
  CHECK(old_token->refresh_at == f.scheduler.now() + 12h);

  f.scheduler.advance(12h - 1s);
  CHECK(f.source().calls.size() == 1);
  f.scheduler.advance(1s);
  REQUIRE(f.source().calls.size() == 2);
  // The refresh is in flight: requests keep using the valid token without waiting.
  CHECK(slot->current() == old_token);
  std::optional<TokenResult> during;
  f.acquire(*slot, &during);
  f.run();
  REQUIRE(during.has_value());
  CHECK(during->value() == old_token);

  f.source().complete(f.token(24h));
  auto new_token = slot->current();
  REQUIRE(new_token);
  CHECK(new_token != old_token);
  CHECK(value_of(new_token) == fake_jwt(2));
  CHECK(f.source().calls.size() == 2);
}

TEST_CASE("a 1 h token is refreshed 5 minutes before it expires", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(3599s));
  f.scheduler.advance(3599s - 5min - 1s);
  CHECK(f.source().calls.size() == 1);
  f.scheduler.advance(1s);
  CHECK(f.source().calls.size() == 2);
}

TEST_CASE("the endpoint's refresh_in decides when to refresh", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(24h, 10min));
  f.scheduler.advance(10min - 1s);
  CHECK(f.source().calls.size() == 1);
  f.scheduler.advance(1s);
  CHECK(f.source().calls.size() == 2);
}

TEST_CASE("a failing refresh keeps serving the token until it expires, then fails requests",
          "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(1h));
  auto token = slot->current();
  Clock::time_point expires_at = token->expires_at;

  const std::string message = "IMDS answered 500: unknown: Failed to retrieve token";
  // Fail every attempt until the token is within the safety margin of its expiry.
  while (f.scheduler.now() < expires_at - 30s - 60s) {
    REQUIRE(f.scheduler.fire_next());
    if (f.source().pending == 1) {
      CHECK(slot->current() == token);
      f.source().complete(std::unexpected(error_of(500, message, true)));
      CHECK(f.source().max_pending == 1);
    }
  }
  CHECK(f.source().calls.size() > 3);  // kept trying
  CHECK(slot->current() == token);
  CHECK(slot->status().last_error == message);
  CHECK(slot->status().has_valid_token);

  // Let the next attempts hang: the token is served up to the margin, and not a moment after.
  f.scheduler.advance(expires_at - 30s - 1ms - f.scheduler.now());
  CHECK(slot->current() == token);
  while (f.source().pending > 0) {
    f.source().complete(std::unexpected(error_of(500, message, true)));
  }
  f.scheduler.advance(1ms);
  CHECK(slot->current() == nullptr);
  CHECK_FALSE(slot->status().has_valid_token);
  f.scheduler.advance(1h);
  CHECK(slot->current() == nullptr);
}

TEST_CASE("a non-retryable refresh failure is retried slowly, and after expiry requests get it",
          "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(1h));
  auto token = slot->current();
  const std::string message =
      "IMDS answered 400: invalid_request: Identity not found (client_id 11111111-...)";

  f.scheduler.advance(55min);
  REQUIRE(f.source().calls.size() == 2);
  f.source().complete(std::unexpected(error_of(400, message, false)));
  // Retried at a slow pace while the token is still valid.
  auto delays = f.scheduler.started_delays();
  CHECK(delays.back() >= milliseconds(30s));
  f.scheduler.advance(30s);
  REQUIRE(f.source().calls.size() == 3);
  CHECK(slot->current() == token);
  f.source().complete(std::unexpected(error_of(400, message, false)));

  f.scheduler.advance(token->expires_at - 30s - f.scheduler.now());
  CHECK(slot->current() == nullptr);
  while (f.source().pending > 0) {
    f.source().complete(std::unexpected(error_of(400, message, false)));
  }
  size_t fetches = f.source().calls.size();
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  REQUIRE(result.has_value());
  REQUIRE_FALSE(result->has_value());
  CHECK(result->error().message == message);
  CHECK(result->error().identity == "orders");
  CHECK(result->error().source == "imds");
  CHECK(f.source().calls.size() == fetches);  // the request did not pull an attempt forward
}

TEST_CASE("a refresh that never answers does not let an expired token out", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(1h));
  auto token = slot->current();
  f.scheduler.advance(55min);
  REQUIRE(f.source().pending == 1);  // hangs
  CHECK(slot->current() == token);
  f.scheduler.advance(5min - 30s);
  CHECK(slot->current() == nullptr);
  f.scheduler.advance(2h);
  CHECK(slot->current() == nullptr);

  // A request now waits for the hung fetch; an answer that is already expired is refused.
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  CHECK_FALSE(result.has_value());
  TokenData stale;
  stale.access_token = SecretString(fake_jwt(99));
  stale.expires_at = f.scheduler.now() - 1s;
  f.source().complete(stale);
  f.run();
  CHECK(slot->current() == nullptr);
  CHECK(f.source().calls.size() == 2);
  // The waiter is kept for the retry (1-2 s away) rather than given the stale token.
  CHECK_FALSE(result.has_value());
  f.scheduler.fire_next();
  REQUIRE(f.source().calls.size() == 3);
  f.source().complete(f.token(1h));
  f.run();
  REQUIRE(result.has_value());
  REQUIRE(result->has_value());
  CHECK(value_of(result->value()) == fake_jwt(2));
}

TEST_CASE("retry delays grow exponentially up to 60 s", "[token]") {
  SECTION("with the jitter fixed at its low end") {
    Fixture f;
    auto slot = f.manager->slot(mi_identity(), kScope);
    f.manager->prefetch();
    for (int i = 0; i < 9; ++i) {
      REQUIRE(f.source().pending == 1);
      f.source().complete(std::unexpected(error_of(503, "IMDS answered 503", true)));
      REQUIRE(f.scheduler.fire_next());
    }
    std::vector<milliseconds> expected = {1s, 2s, 4s, 8s, 16s, 32s, 60s, 60s, 60s};
    CHECK(f.scheduler.started_delays() == expected);
  }
  SECTION("with random jitter, each delay stays within its doubling band") {
    TokenManagerOptions options;  // default random jitter
    Fixture f(false, options);
    auto slot = f.manager->slot(mi_identity(), kScope);
    f.manager->prefetch();
    for (int i = 0; i < 9; ++i) {
      f.source().complete(std::unexpected(error_of(503, "IMDS answered 503", true)));
      REQUIRE(f.scheduler.fire_next());
    }
    auto delays = f.scheduler.started_delays();
    REQUIRE(delays.size() == 9);
    for (size_t n = 0; n < delays.size(); ++n) {
      milliseconds low = std::min<milliseconds>(milliseconds(1000 << n), 60s);
      milliseconds high = std::min<milliseconds>(milliseconds(2000 << n), 60s);
      CHECK(delays[n] >= low);
      CHECK(delays[n] <= high);
    }
    CHECK(f.source().max_pending == 1);
  }
}

TEST_CASE("Retry-After is honoured as the minimum wait", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  SourceError throttled = error_of(429, "IMDS answered 429: too many requests", true);
  throttled.retry_after = 45s;
  f.source().complete(std::unexpected(throttled));
  f.run();
  CHECK(f.scheduler.started_delays().back() == milliseconds(45s));
  // 45 s is past the request's 10 s budget: it gets the 429 now instead of waiting.
  REQUIRE(result.has_value());
  REQUIRE_FALSE(result->has_value());
  CHECK(result->error().message == "IMDS answered 429: too many requests");
  f.scheduler.advance(45s - 1ms);
  CHECK(f.source().calls.size() == 1);
  f.scheduler.advance(1ms);
  CHECK(f.source().calls.size() == 2);

  // A short Retry-After does not shorten the exponential backoff.
  throttled.retry_after = 1s;
  f.source().complete(std::unexpected(throttled));
  CHECK(f.scheduler.started_delays().back() == milliseconds(2s));
}

TEST_CASE("IMDS 410 keeps a request waiting while it retries every 10 s for 70 s", "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  SourceError updating = error_of(410, "IMDS answered 410: updating", true);
  updating.retry_for = 70s;
  Clock::time_point start = f.scheduler.now();

  SECTION("IMDS comes back within the window") {
    for (int i = 0; i < 7; ++i) {
      f.source().complete(std::unexpected(updating));
      f.run();
      CHECK_FALSE(result.has_value());  // beyond 3 attempts and 10 s, still waiting
      REQUIRE(f.scheduler.fire_next());
    }
    CHECK(f.scheduler.now() - start == 70s);
    f.source().complete(f.token(24h));
    f.run();
    REQUIRE(result.has_value());
    CHECK(result->has_value());
    // The request's wait timer starts at its 15 s deadline and moves to the window's end plus
    // one request timeout (80 s) when the 410 opens the window; the retries come every 10 s.
    auto delays = f.scheduler.started_delays();
    REQUIRE(delays.size() >= 9);
    CHECK(delays[0] == milliseconds(15s));
    CHECK(delays[2] == milliseconds(80s));
    for (size_t i : {1, 3, 4, 5, 6, 7, 8}) {
      CHECK(delays[i] == milliseconds(10s));
    }
    CHECK(f.source().calls.size() == 8);
  }
  SECTION("IMDS stays away: the request fails after the window, with the 410") {
    while (!result.has_value()) {
      REQUIRE(f.source().pending == 1);
      f.source().complete(std::unexpected(updating));
      f.run();
      if (!result.has_value()) {
        REQUIRE(f.scheduler.fire_next());
      }
    }
    CHECK(f.scheduler.now() - start >= 70s);
    REQUIRE_FALSE(result->has_value());
    CHECK(result->error().message == "IMDS answered 410: updating");
    CHECK(f.source().calls.size() >= 8);
    CHECK(f.source().max_pending == 1);
  }
}

TEST_CASE("a non-retryable error fails every waiter at once with the endpoint's message",
          "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> a;
  std::optional<TokenResult> b;
  f.acquire(*slot, &a);
  f.acquire(*slot, &b);
  f.run();
  REQUIRE(f.source().calls.size() == 1);
  const std::string message =
      "IMDS answered 400: invalid_request: Identity not found (client_id 11111111-...)";
  f.source().complete(std::unexpected(error_of(400, message, false)));
  f.run();
  for (auto* r : {&a, &b}) {
    REQUIRE(r->has_value());
    REQUIRE_FALSE((*r)->has_value());
    CHECK((*r)->error().message == message);
    CHECK((*r)->error().identity == "orders");
    CHECK((*r)->error().source == "imds");
  }
  CHECK(slot->status().last_error == message);
  CHECK(slot->status().acquisitions_failed == 1);

  // Requests meanwhile fail fast without hammering the endpoint...
  for (int i = 0; i < 50; ++i) {
    std::optional<TokenResult> r;
    f.acquire(*slot, &r);
    f.run();
    REQUIRE(r.has_value());
    CHECK_FALSE(r->has_value());
  }
  CHECK(f.source().calls.size() == 1);
  // ...and the slot tries again by itself at a slow pace, so it recovers once fixed.
  f.scheduler.advance(30s);
  REQUIRE(f.source().calls.size() == 2);
  f.source().complete(f.token(24h));
  CHECK(slot->current() != nullptr);
  CHECK(slot->status().last_error.empty());
}

TEST_CASE("a retryable failure is retried for a waiting request, a bounded number of times",
          "[token]") {
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  const std::string message = "connect to 127.0.0.1:40000: connection refused";
  f.source().complete(std::unexpected(error_of(0, message, true)));
  f.run();
  CHECK_FALSE(result.has_value());
  f.scheduler.fire_next();
  f.source().complete(std::unexpected(error_of(0, message, true)));
  f.run();
  CHECK_FALSE(result.has_value());
  f.scheduler.fire_next();
  f.source().complete(std::unexpected(error_of(0, message, true)));
  f.run();
  REQUIRE(result.has_value());  // third failed attempt: the request is answered
  REQUIRE_FALSE(result->has_value());
  CHECK(result->error().message == message);

  // The slot goes on in the background; a burst of new requests does not add fetches.
  CHECK(f.scheduler.pending() == 1);
  std::vector<std::optional<TokenResult>> burst(100);
  for (auto& r : burst) {
    f.acquire(*slot, &r);
  }
  f.run();
  CHECK(f.source().calls.size() == 3);
  f.scheduler.fire_next();
  REQUIRE(f.source().calls.size() == 4);
  f.source().complete(f.token(1h));
  f.run();
  for (auto& r : burst) {
    REQUIRE(r.has_value());
    CHECK(r->has_value());  // they joined the attempt 4 s away instead of failing
  }
  CHECK(f.source().max_pending == 1);
}

TEST_CASE("invalidate() drops the rejected token and fetches with the claims", "[token]") {
  const std::string claims = R"({"access_token":{"nbf":{"essential":true,"value":"1603742800"}}})";
  Fixture f(/*claims=*/true);
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(1h));
  auto rejected = slot->current();
  REQUIRE(rejected);

  slot->invalidate(rejected, claims);
  // Gone at once, before the control thread runs: the app's next request, which may follow the
  // passed-through 401 within microseconds, must not be sent with the rejected token (seen in
  // CI: a CAE-challenged POST's follow-up got 401 again).
  CHECK(slot->current() == nullptr);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  REQUIRE(f.source().calls.size() == 2);
  CHECK(f.source().calls[1].claims == claims);
  CHECK(slot->current() == nullptr);
  f.source().complete(f.token(1h));
  f.run();
  REQUIRE(result.has_value());
  REQUIRE(result->has_value());
  CHECK(result->value() != rejected);

  // The same rejection arriving again (another request that used the old token) is a no-op.
  slot->invalidate(rejected, claims);
  f.run();
  CHECK(f.source().calls.size() == 2);
  CHECK(slot->current() == result->value());

  // Claims are not sent again once satisfied.
  f.scheduler.advance(55min);
  REQUIRE(f.source().calls.size() == 3);
  CHECK(f.source().calls[2].claims.empty());
}

TEST_CASE("invalidate() on a source without claims support plainly refetches", "[token]") {
  Fixture f(/*claims=*/false);
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(24h));
  slot->invalidate(slot->current(), R"({"access_token":{"acrs":{"essential":true}}})");
  f.run();
  REQUIRE(f.source().calls.size() == 2);
  CHECK(f.source().calls[1].claims.empty());
}

TEST_CASE("a token rejected while a refresh is in flight is not replaced by that refresh",
          "[token]") {
  Fixture f(/*claims=*/true);
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(1h));
  auto rejected = slot->current();
  f.scheduler.advance(55min);
  REQUIRE(f.source().pending == 1);  // refresh in flight, started without claims
  slot->invalidate(rejected, R"({"x":1})");
  f.run();
  f.source().complete(f.token(1h));  // result of the pre-rejection refresh: discarded
  CHECK(slot->current() == nullptr);
  REQUIRE(f.source().calls.size() == 3);
  CHECK(f.source().calls[2].claims == R"({"x":1})");
  f.source().complete(f.token(1h));
  CHECK(slot->current() != nullptr);
  CHECK(f.source().max_pending == 1);
}

TEST_CASE("reload keeps the slot of an unchanged identity and replaces a changed one", "[token]") {
  Fixture f;
  auto identity = mi_identity();
  auto slot = f.manager->slot(identity, kScope);
  auto vault = f.manager->slot(identity, "https://vault.azure.net/.default");
  CHECK(vault != slot);
  f.manager->prefetch();
  REQUIRE(f.factory_calls == 1);  // one source per identity, shared by its scopes
  REQUIRE(f.source().calls.size() == 2);
  f.source().complete(f.token(24h));
  f.source().complete(f.token(24h));
  auto token = slot->current();

  // Reload with the identity unchanged: same slot, same token, no fetch.
  config::Identity same = mi_identity();
  CHECK(f.manager->slot(same, kScope) == slot);
  f.manager->retain(std::map<std::string, config::Identity>{{"orders", same}});
  f.manager->prefetch();
  CHECK(f.source().calls.size() == 2);
  CHECK(slot->current() == token);
  CHECK(f.manager->size() == 2);

  // Reload with a different client_id: a new slot; the old one is retired.
  config::Identity changed = mi_identity("44444444-0000-0000-0000-000000000004");
  auto replacement = f.manager->slot(changed, kScope);
  CHECK(replacement != slot);
  f.manager->retain(std::map<std::string, config::Identity>{{"orders", changed}});
  CHECK(f.manager->size() == 1);
  f.manager->prefetch();
  REQUIRE(f.factory_calls == 2);
  REQUIRE(f.sources.size() == 2);
  CHECK(f.sources[1]->calls.size() == 1);
  // A request still on the old config keeps the old, valid token...
  CHECK(slot->current() == token);
  // ...and once it is gone, the retired slot fails instead of fetching.
  f.sources[1]->complete(f.token(24h));
  f.scheduler.advance(25h);
  CHECK(slot->current() == nullptr);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  REQUIRE(result.has_value());
  REQUIRE_FALSE(result->has_value());
  CHECK(result->error().message.find("no longer configured") != std::string::npos);
}

TEST_CASE("a change to any identity field makes a new cache entry", "[token]") {
  Fixture f;
  auto base = f.manager->slot(mi_identity(), kScope);
  using Change = std::function<void(config::Identity&)>;
  std::vector<std::pair<const char*, Change>> changes = {
      {"name", [](auto& i) { i.name = "billing"; }},
      {"type", [](auto& i) { i.type = config::Identity::Type::WORKLOAD_IDENTITY; }},
      {"source", [](auto& i) { i.source = "imds"; }},
      {"endpoint", [](auto& i) { i.endpoint = "http://127.0.0.1:40000/token"; }},
      {"client_id", [](auto& i) { i.client_id = "x"; }},
      {"object_id", [](auto& i) { i.object_id = "x"; }},
      {"resource_id", [](auto& i) { i.resource_id = "x"; }},
      {"tenant_id", [](auto& i) { i.tenant_id = "x"; }},
      {"authority_host", [](auto& i) { i.authority_host = "https://login.example"; }},
      {"federated_token_file", [](auto& i) { i.federated_token_file = "/x"; }},
      {"secret_file", [](auto& i) { i.secret_file = "/x"; }},
      {"certificate_file", [](auto& i) { i.certificate_file = "/x"; }},
      {"send_certificate_chain", [](auto& i) { i.send_certificate_chain = true; }},
      {"path", [](auto& i) { i.path = "/x"; }},
  };
  for (auto& [field, change] : changes) {
    INFO(field);
    config::Identity changed = mi_identity();
    change(changed);
    CHECK(f.manager->slot(changed, kScope) != base);
  }
  CHECK(f.manager->slot(mi_identity(), kScope) == base);
  CHECK(f.manager->slot(mi_identity(), kScope + " ") != base);
}

TEST_CASE("retain() by slot list retires exactly the slots not listed", "[token]") {
  Fixture f;
  auto a = f.manager->slot(mi_identity(), kScope);
  auto b = f.manager->slot(mi_identity(), "https://vault.azure.net/.default");
  f.manager->retain(std::vector<std::shared_ptr<TokenSlot>>{a});
  CHECK(f.manager->size() == 1);
  CHECK(f.manager->slot(mi_identity(), kScope) == a);
  CHECK(f.manager->slot(mi_identity(), "https://vault.azure.net/.default") != b);
}

TEST_CASE("a source that cannot be built fails acquisitions with the configuration error",
          "[token]") {
  Fixture f;
  f.factory_error = "Azure Arc cannot select a user-assigned identity (client_id given)";
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  REQUIRE(result.has_value());
  REQUIRE_FALSE(result->has_value());
  CHECK(result->error().message == f.factory_error);
  CHECK(result->error().source == "managed_identity");
  CHECK(slot->status().last_error == f.factory_error);

  // Asking again gives the same answer without building the source again.
  std::optional<TokenResult> again;
  f.acquire(*slot, &again);
  f.run();
  REQUIRE(again.has_value());
  REQUIRE_FALSE(again->has_value());
  CHECK(again->error().message == f.factory_error);
  CHECK(f.factory_calls == 1);
  CHECK(slot->status().acquisitions_failed == 1);
  CHECK_FALSE(f.manager->ready());
}

TEST_CASE("ready() and status_json() report each slot", "[token]") {
  Fixture f;
  std::vector<AcquisitionEvent> events;
  f.manager->set_observer([&](const AcquisitionEvent& e) { events.push_back(e); });
  CHECK(f.manager->ready());  // nothing to wait for
  auto slot = f.manager->slot(mi_identity(), kScope);
  CHECK_FALSE(f.manager->ready());
  f.manager->prefetch();
  f.scheduler.advance(250ms);
  f.source().complete(std::unexpected(error_of(500, "IMDS answered 500", true)));
  auto json = f.manager->status_json();
  REQUIRE(json.size() == 1);
  CHECK(json[0]["identity"] == "orders");
  CHECK(json[0]["scope"] == kScope);
  CHECK(json[0]["has_valid_token"] == false);
  CHECK(json[0]["expires_in"].is_null());
  CHECK(json[0]["last_error"] == "IMDS answered 500");
  CHECK(json[0]["acquisitions_failed"] == 1);
  CHECK(json[0]["retry_in"] == 1);

  f.scheduler.fire_next();
  f.source().complete(f.token(1h));
  CHECK(f.manager->ready());
  json = f.manager->status_json();
  CHECK(json[0]["has_valid_token"] == true);
  CHECK(json[0]["source"] == "imds");
  CHECK(json[0]["expires_in"] == 3600);
  CHECK(json[0]["refresh_in"] == 3300);
  CHECK(json[0]["last_error"].is_null());
  CHECK(json[0]["acquisitions_ok"] == 1);
  // Nothing secret in the status.
  CHECK(json.dump().find(fake_jwt(1)) == std::string::npos);

  REQUIRE(events.size() == 2);
  CHECK_FALSE(events[0].ok);
  CHECK(events[0].identity == "orders");
  CHECK(events[0].source == "imds");
  CHECK(events[0].latency == 250ms);
  CHECK(events[0].error == "IMDS answered 500");
  CHECK(events[1].ok);

  // The refresh hangs; once the token is past its margin the manager is no longer ready.
  f.scheduler.advance(1h);
  CHECK(f.source().pending == 1);
  CHECK_FALSE(f.manager->ready());
}

// A source that answers from a timer on the control loop, like a real endpoint would.
class LoopSource : public TokenSource {
 public:
  explicit LoopSource(Scheduler& scheduler) : scheduler_(scheduler) {}
  const std::string& name() const override { return name_; }
  void fetch(const std::string& scope, const std::string& claims,
             std::function<void(SourceResult)> done) override {
    ++fetches;
    scheduler_.start_timer(milliseconds(1), [this, done = std::move(done)] {
      TokenData data;
      data.access_token = SecretString(fake_jwt(fetches));
      data.expires_at = scheduler_.now() + 1h;
      done(std::move(data));
    });
  }
  int fetches = 0;

 private:
  Scheduler& scheduler_;
  std::string name_ = "app_service";
};

TEST_CASE("on real loops, a worker thread's acquire is answered on its own loop", "[token]") {
  log::Level saved_level = log::level();
  log::set_level(log::Level::OFF);
  uv_loop_t control_loop;
  REQUIRE(uv_loop_init(&control_loop) == 0);
  auto control = std::make_unique<UvExecutor>(&control_loop);
  auto scheduler = std::make_unique<UvScheduler>(&control_loop);
  LoopSource* source = nullptr;
  auto manager = std::make_unique<TokenManager>(
      *control, *scheduler,
      [&](const config::Identity&) -> std::expected<std::unique_ptr<TokenSource>, std::string> {
        auto s = std::make_unique<LoopSource>(*scheduler);
        source = s.get();
        return s;
      });
  auto slot = manager->slot(mi_identity(), kScope);
  int fetches = 0;

  std::thread::id answered_on;
  std::thread::id worker_id;
  std::optional<TokenResult> result;
  std::thread worker([&] {
    worker_id = std::this_thread::get_id();
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    auto executor = std::make_unique<UvExecutor>(&loop);
    slot->acquire(*executor, [&](TokenResult r) {
      answered_on = std::this_thread::get_id();
      result = std::move(r);
      executor->close();
      // Shut the control side down from its own thread.
      control->post([&] {
        fetches = source->fetches;
        manager.reset();
        scheduler->close();
        control->close();
      });
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    executor.reset();
    CHECK(uv_loop_close(&loop) == 0);
  });
  uv_run(&control_loop, UV_RUN_DEFAULT);
  worker.join();
  // A retired slot still serves its valid token (while the scheduler, its clock, lives).
  REQUIRE(result.has_value());
  REQUIRE(result->has_value());
  CHECK(slot->current() == result->value());
  slot.reset();
  control.reset();
  scheduler.reset();
  CHECK(uv_loop_close(&control_loop) == 0);

  CHECK(answered_on == worker_id);
  REQUIRE(result.has_value());
  REQUIRE(result->has_value());
  CHECK(result->value()->source == "app_service");
  CHECK(value_of(result->value()) == fake_jwt(1));
  CHECK(fetches == 1);
  log::set_level(saved_level);
}

}  // namespace

TEST_CASE("a 15 s token is served, with a margin of a tenth of its life, and refreshed before it",
          "[token]") {
  // A token endpoint issuing 15 s tokens used to get every request refused ("within the 30 s
  // safety margin").
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> got;
  f.acquire(*slot, &got);
  f.run();
  f.source().complete(f.token(15s));
  f.run();
  REQUIRE(got.has_value());
  REQUIRE(got->has_value());
  CHECK(slot->current() == got->value());
  // Refresh ahead happens at half the life, while the token is still served.
  f.scheduler.advance(7s);
  CHECK(f.source().calls.size() == 1);
  f.scheduler.advance(1s);
  CHECK(f.source().calls.size() == 2);
  // With the refresh unanswered the token is served up to 13.5 s, never after.
  f.scheduler.advance(5s);
  CHECK(slot->current() != nullptr);
  f.scheduler.advance(1s);
  CHECK(slot->current() == nullptr);
}

TEST_CASE("an access_token outside the bearer-token character set is refused", "[token]") {
  std::optional<TokenResult> got;
  Fixture f;
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.acquire(*slot, &got);
  f.run();
  TokenData data = f.token(1h);
  data.access_token = SecretString("abc\r\nX-Injected: yes");
  f.source().complete(std::move(data));
  f.run();
  CHECK(slot->current() == nullptr);
  auto status = slot->status();
  CHECK(status.acquisitions_failed == 1);
  CHECK(status.last_error.find("b64token") != std::string::npos);
  CHECK(status.last_error.find("X-Injected") == std::string::npos);  // never echoed
  // The request still waits (the failure is retryable); it is answered with an error when the
  // manager goes away, which is why |got| outlives the fixture.
  CHECK_FALSE(got.has_value());
}

TEST_CASE("is_b64token follows RFC 6750", "[token]") {
  using miproxy::auth::is_b64token;
  CHECK(is_b64token("eyJ0eXAi.eyJhdWQi.c2ln-_~+/"));
  CHECK(is_b64token("abc=="));
  CHECK_FALSE(is_b64token(""));
  CHECK_FALSE(is_b64token("=abc"));
  CHECK_FALSE(is_b64token("ab=c"));
  CHECK_FALSE(is_b64token("abc\r\nX: y"));
  CHECK_FALSE(is_b64token("a b"));
  CHECK_FALSE(is_b64token("a\"b"));
}

namespace {

// The fixture's options with the limit hits recorded in |hits|.
TokenManagerOptions counting(std::vector<std::string>* hits) {
  TokenManagerOptions options = Fixture::fixed_jitter();
  options.limit_hit = [hits](const char* limit) { hits->emplace_back(limit); };
  return options;
}

}  // namespace

TEST_CASE("a request waiting on a hung fetch is failed at its deadline; the fetch goes on",
          "[token]") {
  std::vector<std::string> hits;
  Fixture f(false, counting(&hits));
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> first;
  f.acquire(*slot, &first);
  f.run();
  REQUIRE(f.source().pending == 1);  // the endpoint never answers

  f.scheduler.advance(15s - 1ms);
  f.run();
  CHECK_FALSE(first.has_value());
  f.scheduler.advance(1ms);
  f.run();
  REQUIRE(first.has_value());
  REQUIRE_FALSE(first->has_value());
  CHECK(first->error().identity == "orders");
  CHECK(first->error().source == "imds");
  CHECK(first->error().message ==
        "no token within 15 s (limits.token_wait_timeout): the token endpoint has not answered a "
        "request sent 15 s ago");
  CHECK(hits == std::vector<std::string>{"token_wait_timeout"});

  // Still one fetch: a later request joins it, gets its own deadline, and the token the fetch
  // finally brings.
  CHECK(f.source().calls.size() == 1);
  f.scheduler.advance(5s);
  std::optional<TokenResult> second;
  f.acquire(*slot, &second);
  f.run();
  CHECK(f.source().calls.size() == 1);
  f.source().complete(f.token(1h));
  f.run();
  REQUIRE(second.has_value());
  REQUIRE(second->has_value());
  CHECK(second->value() == slot->current());
  CHECK(f.source().max_pending == 1);
  // Its wait timer is gone with it: only the refresh timer is left.
  CHECK(f.scheduler.pending() == 1);
}

TEST_CASE("the wait deadline follows set_wait_limits, and names the last error", "[token]") {
  std::vector<std::string> hits;
  Fixture f(false, counting(&hits));
  f.manager->set_wait_limits(2s, 1s);
  auto slot = f.manager->slot(mi_identity(), kScope);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  // The first attempt times out after the 1 s request timeout (counted); the retry is due 1 s
  // later, at the request's deadline: the request is answered then, with what went wrong.
  f.scheduler.advance(1s);
  SourceError timed_out = error_of(0, "IMDS request failed: request timed out after 1000 ms", true);
  timed_out.timed_out = true;
  f.source().complete(std::unexpected(timed_out));
  f.run();
  CHECK_FALSE(result.has_value());
  CHECK(hits == std::vector<std::string>{"token_request_timeout"});
  f.scheduler.advance(1s);
  f.run();
  REQUIRE(f.source().calls.size() == 2);
  REQUIRE(result.has_value());
  REQUIRE_FALSE(result->has_value());
  CHECK(result->error().message ==
        "no token within 2 s (limits.token_wait_timeout): last error: IMDS request failed: "
        "request timed out after 1000 ms");
  CHECK(hits == std::vector<std::string>{"token_request_timeout", "token_wait_timeout"});
}

TEST_CASE("a valid token is served through an outage of its token endpoint", "[token]") {
  std::vector<std::string> hits;
  Fixture f(false, counting(&hits));
  auto slot = f.manager->slot(mi_identity(), kScope);
  f.manager->prefetch();
  f.source().complete(f.token(1h));
  auto token = slot->current();
  REQUIRE(token);
  // The refresh at 55 min hangs; requests keep getting the cached token, at once.
  f.scheduler.advance(56min);
  REQUIRE(f.source().pending == 1);
  std::optional<TokenResult> result;
  f.acquire(*slot, &result);
  f.run();
  REQUIRE(result.has_value());
  REQUIRE(result->has_value());
  CHECK(result->value() == token);
  CHECK(hits.empty());
}
