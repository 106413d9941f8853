#include "auth/token_manager.h"

#include "auth/jwt.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <string_view>
#include <tuple>
#include <utility>

#include "base/log.h"

namespace miproxy::auth {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Every field of config::Identity: a change to any of them makes a new cache entry.
// Keep in step with config/config.h.
auto identity_fields(const config::Identity& i) {
  return std::tie(i.name, i.type, i.source, i.endpoint, i.client_id, i.object_id, i.resource_id,
                  i.tenant_id, i.authority_host, i.federated_token_file, i.secret_file,
                  i.certificate_file, i.send_certificate_chain, i.path);
}

// A trip-wire for the list above: a field it misses would let a reload keep serving tokens of
// the old identity. Adjust both when config::Identity changes (sizes are for LP64 libstdc++).
static_assert(sizeof(config::Identity) == 12 * sizeof(std::string) + 16,
              "config::Identity changed: update identity_fields() in token_manager.cc");

bool same_identity(const config::Identity& a, const config::Identity& b) {
  return identity_fields(a) == identity_fields(b);
}

const char* type_name(config::Identity::Type type) {
  switch (type) {
    case config::Identity::Type::MANAGED_IDENTITY:
      return "managed_identity";
    case config::Identity::Type::WORKLOAD_IDENTITY:
      return "workload_identity";
    case config::Identity::Type::CLIENT_SECRET:
      return "client_secret";
    case config::Identity::Type::CLIENT_CERTIFICATE:
      return "client_certificate";
    case config::Identity::Type::AZURE_CLI:
      return "azure_cli";
    case config::Identity::Type::DEFAULT:
      return "default";
    case config::Identity::Type::TOKEN_FILE:
      return "token_file";
  }
  return "unknown";
}

// Fills the unverified oid/tid/appid/aud claims; leaves them empty when |token| is no JWT.
void fill_claims(AccessToken& token) {
  auto claims = decode_jwt_claims(token.value.reveal());
  if (!claims) {
    return;
  }
  token.object_id = claims->oid;
  token.tenant_id = claims->tid;
  token.client_id = claims->client_id;
  token.audience = claims->aud;
}

double default_random() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

milliseconds ceil_ms(Clock::duration d) {
  return d <= Clock::duration::zero() ? milliseconds(0) : std::chrono::ceil<milliseconds>(d);
}

// "2", "1.5": seconds to a tenth, for messages.
std::string seconds_text(Clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g",
                std::round(std::chrono::duration<double>(d).count() * 10) / 10);
  return buf;
}

}  // namespace

struct TokenManager::Shared {
  Shared(Executor& c, Scheduler& s, SourceFactory f, TokenManagerOptions o)
      : control(c), scheduler(s), factory(std::move(f)), options(std::move(o)) {
    if (!options.random) {
      options.random = &default_random;
    }
  }
  Executor& control;
  Scheduler& scheduler;
  SourceFactory factory;
  TokenManagerOptions options;
  std::function<void(const AcquisitionEvent&)> observer;  // control thread
};

struct TokenManager::Source {
  explicit Source(config::Identity i) : identity(std::move(i)) {}
  const config::Identity identity;
  // Control thread only.
  std::shared_ptr<TokenSource> source;
  std::string error;  // the factory's configuration error
  bool made = false;
};

class TokenManager::Slot final : public TokenSlot, public std::enable_shared_from_this<Slot> {
 public:
  Slot(std::shared_ptr<Shared> shared, std::shared_ptr<Source> source, std::string scope)
      : shared_(std::move(shared)),
        identity_(source->identity),
        scope_(std::move(scope)),
        source_(std::move(source)) {}

  // --- TokenSlot, any thread ---

  std::shared_ptr<const AccessToken> current() const override {
    std::shared_ptr<const AccessToken> token = published_.load(std::memory_order_acquire);
    if (token && valid(*token, shared_->scheduler.now())) {
      return token;
    }
    return nullptr;
  }

  void acquire(Executor& reply_to, std::function<void(TokenResult)> done) override {
    shared_->control.post([self = shared_from_this(), r = &reply_to,
                           d = std::move(done)]() mutable { self->on_acquire(r, std::move(d)); });
  }

  void invalidate(const std::shared_ptr<const AccessToken>& rejected,
                  const std::string& claims) override {
    // Unpublished here, on the caller's thread, before the rejection is answered: the app's next
    // request must not find the rejected token while the control thread has yet to run.
    std::shared_ptr<const AccessToken> expected = rejected;
    if (!rejected || !published_.compare_exchange_strong(expected, nullptr,
                                                         std::memory_order_acq_rel)) {
      return;  // already replaced or dropped: a repeated rejection must not refetch again
    }
    shared_->control.post([self = shared_from_this(), claims] { self->on_invalidate(claims); });
  }

  const std::string& identity_name() const override { return identity_.name; }
  const std::string& scope() const override { return scope_; }

  Status status() const override {
    Status s;
    std::shared_ptr<const AccessToken> token = published_.load(std::memory_order_acquire);
    s.has_valid_token = token && valid(*token, shared_->scheduler.now());
    if (token) {
      s.expires_at = token->expires_at;
    }
    std::lock_guard lock(status_mu_);
    s.source = status_source_;
    s.last_error = last_error_;
    s.acquisitions_ok = ok_;
    s.acquisitions_failed = failed_;
    return s;
  }

  // --- for the manager ---

  // Any thread: immutable fields only.
  bool matches(const config::Identity& identity, const std::string& scope) const {
    return scope == scope_ && same_identity(identity, identity_);
  }
  const config::Identity& identity() const { return identity_; }

  // Control thread.
  void prefetch() {
    if (retired_ || in_flight_ || current() || (timer_ != 0 && timer_is_retry_)) {
      return;
    }
    start_fetch();
  }

  // Control thread: stops timers, fails waiters with |why| and releases the source.
  void retire(const std::string& why) {
    if (retired_) {
      return;
    }
    retired_ = true;
    retired_reason_ = why;
    cancel_timer();
    cancel_wait_timer();
    std::vector<Waiter> waiters = std::move(waiters_);
    waiters_.clear();
    for (Waiter& w : waiters) {
      reply(w, std::unexpected(make_error(why)));
    }
    source_.reset();
  }

  // Control thread.
  nlohmann::json to_json() const {
    Clock::time_point now = shared_->scheduler.now();
    Status s = status();
    nlohmann::json j;
    j["identity"] = identity_.name;
    j["scope"] = scope_;
    j["source"] = s.source;
    j["has_valid_token"] = s.has_valid_token;
    std::shared_ptr<const AccessToken> token = published_.load(std::memory_order_acquire);
    if (token && token->expires_at > now) {
      j["expires_in"] = duration_cast<seconds>(token->expires_at - now).count();
    } else {
      j["expires_in"] = nullptr;
    }
    if (timer_ != 0 && !timer_is_retry_) {
      j["refresh_in"] = duration_cast<seconds>(timer_at_ - now).count();
    } else {
      j["refresh_in"] = nullptr;
    }
    if (timer_ != 0 && timer_is_retry_) {
      j["retry_in"] = duration_cast<seconds>(timer_at_ - now).count();
    } else {
      j["retry_in"] = nullptr;
    }
    j["last_error"] = s.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(s.last_error);
    j["acquisitions_ok"] = s.acquisitions_ok;
    j["acquisitions_failed"] = s.acquisitions_failed;
    j["fetching"] = in_flight_;
    return j;
  }

 private:
  struct Waiter {
    Executor* reply_to = nullptr;
    std::function<void(TokenResult)> done;
    Clock::time_point deadline;
    int attempts = 0;  // failed attempts seen while waiting
    Clock::time_point arrived;
  };

  const TokenManagerOptions& opts() const { return shared_->options; }

  bool valid(const AccessToken& token, Clock::time_point now) const {
    return now < token.usable_until;
  }

  // The safety margin before a token's expiry: the configured one, but at most a tenth of the
  // lifetime — a token endpoint that issues 15 s tokens gets them served for 13.5 s.
  Clock::duration margin_for(Clock::duration lifetime) const {
    return std::min<Clock::duration>(opts().expiry_margin, lifetime / 10);
  }

  std::string source_name() const {
    if (source_ && source_->source) {
      return source_->source->name();
    }
    return type_name(identity_.type);
  }

  TokenError make_error(const std::string& message) const {
    return TokenError{identity_.name, source_name(), message};
  }

  void reply(Waiter& w, TokenResult result) {
    w.reply_to->post([done = std::move(w.done), result = std::move(result)]() mutable {
      done(std::move(result));
    });
  }

  Clock::time_point effective_deadline(const Waiter& w) const {
    if (retry_window_end_ && *retry_window_end_ > w.deadline) {
      return *retry_window_end_;
    }
    return w.deadline;
  }

  // When the wait timer fails |w| whatever happens: its deadline, or inside an open retry_for
  // window the window's end plus one request timeout (the window's last attempt may finish).
  Clock::time_point hard_deadline(const Waiter& w) const {
    if (retry_window_end_ && *retry_window_end_ > w.deadline) {
      return *retry_window_end_ + opts().request_timeout;
    }
    return w.deadline;
  }

  // Keeps the wait timer at the earliest hard deadline among the waiters (none: stopped). Call
  // after every change to waiters_ or to the retry window.
  void arm_wait_timer() {
    if (waiters_.empty() || retired_) {
      cancel_wait_timer();
      return;
    }
    Clock::time_point earliest = hard_deadline(waiters_.front());
    for (const Waiter& w : waiters_) {
      earliest = std::min(earliest, hard_deadline(w));
    }
    if (wait_timer_ != 0 && wait_timer_at_ == earliest) {
      return;
    }
    cancel_wait_timer();
    std::weak_ptr<Slot> weak = weak_from_this();
    wait_timer_at_ = earliest;
    wait_timer_ =
        shared_->scheduler.start_timer(ceil_ms(earliest - shared_->scheduler.now()), [weak] {
          if (std::shared_ptr<Slot> self = weak.lock()) {
            self->on_wait_timer();
          }
        });
  }

  void cancel_wait_timer() {
    if (wait_timer_ != 0) {
      shared_->scheduler.cancel_timer(wait_timer_);
      wait_timer_ = 0;
    }
  }

  // Fails the waiters whose hard deadline has come; the fetch in flight (if any) goes on.
  void on_wait_timer() {
    wait_timer_ = 0;
    Clock::time_point now = shared_->scheduler.now();
    std::vector<Waiter> keep;
    std::vector<Waiter> expired;
    for (Waiter& w : waiters_) {
      (hard_deadline(w) <= now ? expired : keep).push_back(std::move(w));
    }
    waiters_ = std::move(keep);
    if (!expired.empty()) {
      std::string why;
      if (in_flight_) {
        why = "the token endpoint has not answered a request sent " +
              seconds_text(now - flight_started_) + " s ago";
      }
      if (last_failure_) {
        why += (why.empty() ? "last error: " : "; last error: ") + last_failure_->message;
      }
      log::warn("requests waited too long for a token", {{"identity", identity_.name},
                                                         {"scope", scope_},
                                                         {"requests", expired.size()},
                                                         {"fetching", in_flight_},
                                                         {"limit", "limits.token_wait_timeout"}});
      for (Waiter& w : expired) {
        limit_hit("token_wait_timeout");
        std::string message = "no token within " + seconds_text(now - w.arrived) +
                              " s (limits.token_wait_timeout)";
        if (!why.empty()) {
          message += ": " + why;
        }
        reply(w, std::unexpected(make_error(message)));
      }
    }
    arm_wait_timer();
  }

  void limit_hit(const char* limit) const {
    if (shared_->options.limit_hit) {
      shared_->options.limit_hit(limit);
    }
  }

  void on_acquire(Executor* reply_to, std::function<void(TokenResult)> done) {
    Clock::time_point now = shared_->scheduler.now();
    Waiter w{reply_to, std::move(done), now + opts().waiter_budget, 0, now};
    if (std::shared_ptr<const AccessToken> token = current()) {
      reply(w, token);
      return;
    }
    if (retired_) {
      reply(w, std::unexpected(make_error(retired_reason_)));
      return;
    }
    if (in_flight_) {
      waiters_.push_back(std::move(w));
      arm_wait_timer();
      return;
    }
    if (timer_ != 0 && timer_is_retry_ && last_failure_) {
      // Backing off: join the scheduled attempt if it is near and worth waiting for; never pull
      // it forward (that is what would turn a burst of requests into a burst of fetches).
      bool retryable = last_failure_->retryable || last_failure_->retry_for.count() > 0;
      if (retryable && timer_at_ <= effective_deadline(w)) {
        waiters_.push_back(std::move(w));
        arm_wait_timer();
      } else {
        reply(w, std::unexpected(make_error(last_failure_->message)));
      }
      return;
    }
    waiters_.push_back(std::move(w));
    start_fetch();
    arm_wait_timer();
  }

  void on_invalidate(const std::string& claims) {
    if (retired_) return;
    claims_ = claims;
    if (in_flight_) {
      flight_stale_ = true;  // its result may predate the rejection: fetch again when it lands
      return;
    }
    start_fetch();
  }

  TokenSource* ensure_source() {
    if (!source_) {
      return nullptr;
    }
    if (!source_->made) {
      source_->made = true;
      auto made = shared_->factory(identity_);
      if (made) {
        source_->source = std::shared_ptr<TokenSource>(std::move(*made));
      } else {
        source_->error = made.error();
      }
    }
    return source_->source.get();
  }

  void start_fetch() {
    cancel_timer();
    bool first_try = source_ && !source_->made;
    TokenSource* source = ensure_source();
    if (source == nullptr) {
      // A configuration error: there is nothing to retry until the config changes. Recorded
      // (logged, counted) once; later requests just get the same answer.
      std::string message = source_ ? source_->error : retired_reason_;
      if (first_try || !last_failure_) {
        record(false, message, source_name(), Clock::duration::zero(), false);
      }
      last_failure_ = SourceError{message, 0, false, std::nullopt, seconds(0), false};
      std::vector<Waiter> waiters = std::move(waiters_);
      waiters_.clear();
      for (Waiter& w : waiters) {
        reply(w, std::unexpected(make_error(message)));
      }
      cancel_wait_timer();
      return;
    }
    in_flight_ = true;
    flight_stale_ = false;
    uint64_t flight = ++flight_;
    bool refresh = current() != nullptr;
    Clock::time_point started = shared_->scheduler.now();
    flight_started_ = started;
    std::weak_ptr<Slot> weak = weak_from_this();
    std::shared_ptr<TokenSource> keep = source_->source;
    std::shared_ptr<Shared> shared = shared_;
    source->fetch(scope_, source->supports_claims() ? claims_ : std::string(),
                  [weak, keep, shared, flight, started, refresh](SourceResult result) mutable {
                    // Drop our reference to the source on a later turn: if it is the last one,
                    // the source must not be destroyed from inside its own callback.
                    shared->control.post([keep = std::move(keep)] {});
                    if (std::shared_ptr<Slot> self = weak.lock()) {
                      self->on_fetched(flight, started, refresh, std::move(result));
                    }
                  });
  }

  void on_fetched(uint64_t flight, Clock::time_point started, bool refresh, SourceResult result) {
    if (flight != flight_ || !in_flight_) {
      return;
    }
    in_flight_ = false;
    Clock::time_point now = shared_->scheduler.now();
    Clock::duration latency = now - started;
    TokenSource* source = source_ ? source_->source.get() : nullptr;
    std::string name = source_name();
    if (result && source != nullptr) {
      name = source->last_source();
    }
    bool timed_out = !result && result.error().timed_out;
    if (retired_) {
      record(result.has_value(), result ? "" : result.error().message, name, latency, refresh,
             timed_out);
      return;
    }
    if (flight_stale_) {
      // The token was rejected while this fetch was in flight; its result may be the rejected
      // token again. Fetch once more (invalidate() is deduplicated, so this cannot repeat).
      flight_stale_ = false;
      record(result.has_value(), result ? "" : result.error().message, name, latency, refresh,
             timed_out);
      start_fetch();
      return;
    }
    if (result) {
      on_success(std::move(*result), name, now, latency, refresh);
    } else {
      on_failure(std::move(result.error()), name, now, latency, refresh);
    }
  }

  void on_success(TokenData data, const std::string& name, Clock::time_point now,
                  Clock::duration latency, bool refresh) {
    // A token the endpoint sent but miproxy will not serve: a retryable failure like any other.
    auto refuse = [&](std::string why) {
      SourceError error{name + " returned " + why, 0, true, std::nullopt, seconds(0), false};
      on_failure(std::move(error), name, now, latency, refresh);
    };
    if (!is_b64token(data.access_token.reveal())) {
      refuse("an access_token with characters outside the bearer-token set (RFC 6750 b64token); "
             "refused, nothing was sent");
      return;
    }
    Clock::duration lifetime = data.expires_at - now;
    if (lifetime <= Clock::duration::zero() || now >= data.expires_at - margin_for(lifetime)) {
      auto left = duration_cast<seconds>(data.expires_at - now).count();
      refuse("a token that expires in " + std::to_string(left) +
             " s, already expired or within its safety margin");
      return;
    }
    auto token = std::make_shared<AccessToken>();
    token->value = std::move(data.access_token);
    token->expires_at = data.expires_at;
    token->usable_until = data.expires_at - margin_for(lifetime);
    token->refresh_at = refresh_time(data, now);
    token->source = name;
    fill_claims(*token);
    std::shared_ptr<const AccessToken> published = token;
    published_.store(published, std::memory_order_release);

    record(true, "", name, latency, refresh);
    failures_ = 0;
    last_failure_.reset();
    retry_window_end_.reset();
    claims_.clear();
    std::vector<Waiter> waiters = std::move(waiters_);
    waiters_.clear();
    for (Waiter& w : waiters) {
      reply(w, published);
    }
    cancel_wait_timer();
    schedule(published->refresh_at, /*retry=*/false);
  }

  Clock::time_point refresh_time(const TokenData& data, Clock::time_point now) const {
    Clock::duration lifetime = data.expires_at - now;
    Clock::time_point at;
    if (data.refresh_at) {
      at = *data.refresh_at;
    } else if (lifetime >= opts().half_life_threshold) {
      at = now + lifetime / 2;
    } else {
      at = std::max(data.expires_at - opts().refresh_before_expiry, now + lifetime / 2);
    }
    // Refresh while the token is still served, and never in a tight loop.
    at = std::min(at, data.expires_at - margin_for(lifetime));
    at = std::max(at, now + seconds(1));
    return at;
  }

  void on_failure(SourceError error, const std::string& name, Clock::time_point now,
                  Clock::duration latency, bool refresh) {
    record(false, error.message, name, latency, refresh, error.timed_out);
    ++failures_;
    bool retryable = error.retryable || error.retry_for.count() > 0;
    if (error.retry_for.count() > 0 && !retry_window_end_) {
      retry_window_end_ = now + error.retry_for;
    }
    bool window_open = retry_window_end_ && now < *retry_window_end_;

    Clock::duration delay;
    if (error.retry_for.count() > 0 && window_open) {
      delay = opts().retry_for_pace;
    } else {
      double factor = std::ldexp(1.0, std::min(failures_ - 1, 30)) * (1.0 + opts().random());
      auto ms = static_cast<double>(opts().backoff_base.count()) * factor;
      ms = std::min(ms, static_cast<double>(opts().backoff_cap.count()));
      delay = milliseconds(static_cast<int64_t>(ms));
    }
    if (!retryable) {
      delay = std::max<Clock::duration>(delay, opts().non_retryable_pace);
      claims_.clear();  // the endpoint refused them: next time, a plain fetch
    }
    if (error.retry_after) {
      delay =
          std::max<Clock::duration>(delay, std::min(*error.retry_after, opts().retry_after_cap));
    }
    Clock::time_point next = now + delay;

    std::vector<Waiter> keep;
    for (Waiter& w : waiters_) {
      ++w.attempts;
      bool out_of_attempts = w.attempts >= opts().waiter_max_attempts && !window_open;
      if (!retryable || out_of_attempts || next > effective_deadline(w)) {
        reply(w, std::unexpected(TokenError{identity_.name, name, error.message}));
      } else {
        keep.push_back(std::move(w));
      }
    }
    waiters_ = std::move(keep);
    last_failure_ = std::move(error);
    schedule(next, /*retry=*/true);
    arm_wait_timer();  // the waiters changed, and the retry window may have opened
  }

  void record(bool ok, const std::string& error, const std::string& name, Clock::duration latency,
              bool refresh, bool timed_out = false) {
    if (timed_out) {
      limit_hit("token_request_timeout");
    }
    bool recovered = false;
    {
      std::lock_guard lock(status_mu_);
      if (ok) {
        recovered = ok_ == 0 || !last_error_.empty();
        ++ok_;
        last_error_.clear();
        status_source_ = name;
      } else {
        ++failed_;
        last_error_ = error;
      }
    }
    // Never the token: identity, scope, source and the endpoint's words only.
    auto ms = duration_cast<milliseconds>(latency).count();
    if (!ok) {
      log::warn("token acquisition failed", {{"identity", identity_.name},
                                             {"scope", scope_},
                                             {"source", name},
                                             {"error", error},
                                             {"refresh", refresh},
                                             {"timed_out", timed_out},
                                             {"latency_ms", ms}});
    } else if (recovered) {
      log::info(
          "token acquired",
          {{"identity", identity_.name}, {"scope", scope_}, {"source", name}, {"latency_ms", ms}});
    } else {
      log::debug(
          "token refreshed",
          {{"identity", identity_.name}, {"scope", scope_}, {"source", name}, {"latency_ms", ms}});
    }
    if (shared_->observer) {
      shared_->observer(
          AcquisitionEvent{identity_.name, scope_, name, ok, latency, error, refresh, timed_out});
    }
  }

  void schedule(Clock::time_point when, bool retry) {
    cancel_timer();
    std::weak_ptr<Slot> weak = weak_from_this();
    timer_at_ = when;
    timer_is_retry_ = retry;
    timer_ = shared_->scheduler.start_timer(ceil_ms(when - shared_->scheduler.now()), [weak] {
      if (std::shared_ptr<Slot> self = weak.lock()) {
        self->on_timer();
      }
    });
  }

  void cancel_timer() {
    if (timer_ != 0) {
      shared_->scheduler.cancel_timer(timer_);
      timer_ = 0;
    }
  }

  void on_timer() {
    timer_ = 0;
    if (retired_ || in_flight_) {
      return;
    }
    start_fetch();
  }

  const std::shared_ptr<Shared> shared_;
  const config::Identity identity_;
  const std::string scope_;

  // Any thread.
  std::atomic<std::shared_ptr<const AccessToken>> published_;
  mutable std::mutex status_mu_;
  std::string status_source_;  // guarded by status_mu_
  std::string last_error_;     // guarded by status_mu_
  uint64_t ok_ = 0;            // guarded by status_mu_
  uint64_t failed_ = 0;        // guarded by status_mu_

  // Control thread only.
  std::shared_ptr<Source> source_;  // null once retired
  bool retired_ = false;
  std::string retired_reason_;
  bool in_flight_ = false;
  bool flight_stale_ = false;
  uint64_t flight_ = 0;
  std::vector<Waiter> waiters_;
  Scheduler::TimerId timer_ = 0;
  Clock::time_point timer_at_{};
  bool timer_is_retry_ = false;
  Clock::time_point flight_started_{};
  Scheduler::TimerId wait_timer_ = 0;  // fails waiters at their deadline (arm_wait_timer)
  Clock::time_point wait_timer_at_{};
  int failures_ = 0;  // consecutive
  std::optional<SourceError> last_failure_;
  std::optional<Clock::time_point> retry_window_end_;
  std::string claims_;
};

TokenManager::TokenManager(Executor& control, Scheduler& scheduler, SourceFactory factory,
                           TokenManagerOptions options)
    : shared_(
          std::make_shared<Shared>(control, scheduler, std::move(factory), std::move(options))) {}

TokenManager::~TokenManager() {
  retire_where([](const Slot&) { return true; });
}

std::shared_ptr<TokenSlot> TokenManager::slot(const config::Identity& identity,
                                              const std::string& scope) {
  std::lock_guard lock(mu_);
  for (const auto& s : slots_) {
    if (s->matches(identity, scope)) {
      return s;
    }
  }
  std::shared_ptr<Source> source;
  for (const auto& src : sources_) {
    if (same_identity(src->identity, identity)) {
      source = src;
      break;
    }
  }
  if (!source) {
    source = std::make_shared<Source>(identity);
    sources_.push_back(source);
  }
  auto s = std::make_shared<Slot>(shared_, std::move(source), scope);
  slots_.push_back(s);
  return s;
}

void TokenManager::prefetch() {
  std::vector<std::shared_ptr<Slot>> slots;
  {
    std::lock_guard lock(mu_);
    slots = slots_;
  }
  for (const auto& s : slots) {
    s->prefetch();
  }
}

void TokenManager::retire_where(const std::function<bool(const Slot&)>& drop) {
  std::vector<std::shared_ptr<Slot>> retired;
  std::vector<std::shared_ptr<Source>> unused;
  {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<Slot>> kept;
    for (auto& s : slots_) {
      (drop(*s) ? retired : kept).push_back(std::move(s));
    }
    slots_ = std::move(kept);
    std::vector<std::shared_ptr<Source>> sources;
    for (auto& src : sources_) {
      bool used = std::any_of(slots_.begin(), slots_.end(), [&](const auto& s) {
        return same_identity(s->identity(), src->identity);
      });
      (used ? sources : unused).push_back(std::move(src));
    }
    sources_ = std::move(sources);
  }
  // Outside the lock: retiring posts replies and may destroy sources.
  for (const auto& s : retired) {
    s->retire("identity \"" + s->identity_name() + "\" (scope " + s->scope() +
              ") is no longer configured");
  }
}

void TokenManager::retain(const std::map<std::string, config::Identity>& identities) {
  retire_where([&](const Slot& s) {
    auto it = identities.find(s.identity().name);
    return it == identities.end() || !same_identity(it->second, s.identity());
  });
}

void TokenManager::retain(const std::vector<std::shared_ptr<TokenSlot>>& live) {
  retire_where([&](const Slot& s) {
    return std::none_of(live.begin(), live.end(), [&](const auto& l) {
      return l.get() == static_cast<const TokenSlot*>(&s);
    });
  });
}

bool TokenManager::ready() const {
  std::lock_guard lock(mu_);
  return std::all_of(slots_.begin(), slots_.end(),
                     [](const auto& s) { return s->current() != nullptr; });
}

nlohmann::json TokenManager::status_json() const {
  std::vector<std::shared_ptr<Slot>> slots;
  {
    std::lock_guard lock(mu_);
    slots = slots_;
  }
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : slots) {
    out.push_back(s->to_json());
  }
  return out;
}

void TokenManager::set_observer(std::function<void(const AcquisitionEvent&)> observer) {
  shared_->observer = std::move(observer);
}

void TokenManager::set_wait_limits(std::chrono::milliseconds waiter_budget,
                                   std::chrono::milliseconds request_timeout) {
  shared_->options.waiter_budget = waiter_budget;
  shared_->options.request_timeout = request_timeout;
}

size_t TokenManager::size() const {
  std::lock_guard lock(mu_);
  return slots_.size();
}

}  // namespace miproxy::auth
