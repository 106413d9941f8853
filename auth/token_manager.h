#pragma once
// The token cache: one TokenSlot per (identity config, scope), owned by the control thread.
// Workers read a slot's current token lock-free; the control thread fetches, publishes,
// refreshes ahead of expiry, coalesces concurrent requests into one fetch (single flight) and
// retries failures with backoff, so in steady state no proxied request waits on a token
// endpoint. token-sources.md §13-14 gives the rules followed here.
//
// Reading. current() takes no mutex: the token is published through
// std::atomic<std::shared_ptr<const AccessToken>> (libstdc++ guards it with a spin bit held for a
// few instructions), so readers on every worker never contend on a lock with each other.
//
// Validity. current() returns the published token only while now < expires_at - margin, where
// the margin is expiry_margin (30 s) or a tenth of the token's lifetime when that is shorter
// (a 15 s token is served for 13.5 s): a token that would expire while the request is on its way
// is never handed out, and an expired one never is. The clock is Scheduler::now(). A token that
// arrives already inside its margin counts as a retryable failure, and so does one whose value is
// not an RFC 6750 b64token (CR LF in it would write into the upstream request).
//
// Refresh ahead. For each new token: refresh_at = the endpoint's refresh_in when given; else
// lifetime >= 2 h: issue time + lifetime / 2 (MSAL, azure-identity); else the later of
// expires_at - 5 min (azcore, MSAL Python) and issue time + lifetime / 2 (so a short-lived token
// is not refreshed immediately). It is then clamped into [now + 1 s, expires_at - margin]. A
// timer starts the refresh; until it succeeds current() keeps serving the valid token.
//
// Retries. At most one fetch per slot is ever in flight. After the n-th consecutive failure
// the next attempt waits backoff(n) = min(60 s, base * 2^(n-1) * (1 + jitter)), jitter in [0, 1)
// and base 1 s (1-2 s, 2-4 s, 4-8 s, ...), and at least:
//   - the endpoint's Retry-After (capped at 1 h);
//   - 10 s while inside a retry_for window (IMDS 410: "back within 70 s"): the window opens at
//     the first such failure and lasts retry_for; inside it the pace is a fixed 10 s;
//   - 30 s for an error the source calls non-retryable (configuration errors are not hammered,
//     yet the slot recovers by itself once the operator fixes the cause).
// Background attempts never stop while the slot is alive: a refresh of a still-valid token
// keeps trying until it succeeds, and a slot without a token keeps trying so that readiness
// recovers without operator action.
//
// Waiting requests (acquire() with no valid token). A waiter is answered by the first
// successful fetch, or failed with the last error when: the error is non-retryable; or it has
// seen 3 failed attempts; or the next attempt would start after its deadline (arrival +
// waiter_budget, limits.token_wait_timeout, 15 s by default; extended to the end of an open
// retry_for window, so an IMDS 410 parks a request up to about 70 s instead of failing it). A
// waiter arriving while the slot is backing off joins the next scheduled attempt if that starts
// before its deadline and the last error was retryable, and is failed at once with the last error
// otherwise: new requests never pull attempts forward, so a failing endpoint sees no storm however
// many requests arrive.
//
// Waiting is bounded in time, whatever the endpoint does: a timer fails every waiter at its
// deadline (inside an open retry_for window: the window's end plus request_timeout, so the last
// attempt of the window may finish), with "no token within N s" and what is known (the fetch in
// flight and for how long, the last error). A hung token endpoint therefore costs a request
// waiter_budget, not the fetch's own timeout; the fetch goes on, and the token it brings serves
// later requests (still one fetch in flight per slot). Each waiter failed this way counts once
// as the limit hit "token_wait_timeout", and each fetch that timed out (SourceError::timed_out)
// as "token_request_timeout" (TokenManagerOptions::limit_hit).
//
// Claims (CAE). invalidate() drops the published token if it is still the rejected one and
// fetches again at once, passing the claims when the source supports them (the claims are kept
// for retries and dropped after success or a non-retryable failure). A second invalidate() of
// the same token is a no-op, so a rejection can never loop. A fetch that was in flight when
// the token was invalidated is discarded and started again. Claims do not make cache entries of
// their own: the token fetched with them simply replaces the slot's token.
//
// Lifetime. Slots live while the manager's map holds them or a route table does. retain()
// (after a reload) and the destructor retire unused slots on the control thread: timers are
// cancelled, waiters failed, the source released; a retired slot still serves its valid token
// to requests of the old config, and fails acquire() otherwise. A source is kept alive while one
// of its fetches is in flight, and is destroyed on the control thread, never inside one of its
// own callbacks (the reference a fetch holds is released from a posted task). The control executor
// must therefore outlive every fetch in flight: at shutdown, close the HttpFetcher and
// ProcessRunner (which drop their callbacks) before the executor. Once the control executor is
// closed, acquire() callbacks are dropped with it: stop the workers first.

#include <chrono>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "auth/scheduler.h"
#include "auth/source.h"
#include "auth/token.h"
#include "base/executor.h"
#include "config/config.h"

namespace miproxy::auth {

using SourceFactory = std::function<std::expected<std::unique_ptr<TokenSource>, std::string>(
    const config::Identity&)>;

struct TokenManagerOptions {
  std::chrono::seconds expiry_margin{30};
  std::chrono::seconds refresh_before_expiry{300};  // tokens under 2 h
  std::chrono::seconds half_life_threshold{7200};   // tokens from 2 h use half their lifetime
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_cap{60000};
  std::chrono::seconds retry_after_cap{3600};
  std::chrono::seconds non_retryable_pace{30};
  std::chrono::seconds retry_for_pace{10};
  int waiter_max_attempts = 3;
  // How long a request waits for a token (limits.token_wait_timeout).
  std::chrono::milliseconds waiter_budget{15000};
  // The token endpoint request timeout the sources use (limits.token_request_timeout); here only
  // to let the last attempt of a retry_for window finish.
  std::chrono::milliseconds request_timeout{10000};
  // Returns a number in [0, 1) for the backoff jitter; tests fix it.
  std::function<double()> random;
  // Called on the control thread with "token_wait_timeout" or "token_request_timeout" each time
  // such a limit is hit (main counts them in miproxy_limit_hits_total). May be empty.
  std::function<void(const char* limit)> limit_hit;
};

// One fetch attempt's outcome, for metrics and logs. Runs on the control thread.
struct AcquisitionEvent {
  std::string identity;
  std::string scope;
  std::string source;  // TokenSource::last_source() on success, name() on failure
  bool ok = false;
  Clock::duration latency{};  // by the Scheduler's clock
  std::string error;          // SourceError::message when !ok
  bool refresh = false;       // true when a valid token was being refreshed ahead
  bool timed_out = false;     // the endpoint did not answer within its request timeout
};

class TokenManager {
 public:
  // |control| and |scheduler| belong to the control thread and must outlive the manager and
  // every slot it hands out. |factory| is called on the control thread, once per distinct
  // identity config, when the first slot of that identity first needs its source.
  TokenManager(Executor& control, Scheduler& scheduler, SourceFactory factory,
               TokenManagerOptions options = {});
  // Control thread: retires every slot.
  ~TokenManager();
  TokenManager(const TokenManager&) = delete;
  TokenManager& operator=(const TokenManager&) = delete;

  // Any thread (takes a mutex; not for the per-request path). The slot for |identity| (compared
  // field by field, name included) and |scope| (compared as given): the same object as long as
  // both are unchanged, so a reload keeps the cache of unchanged identities.
  std::shared_ptr<TokenSlot> slot(const config::Identity& identity, const std::string& scope);

  // Control thread: starts a fetch for every slot that has no valid token and is neither
  // fetching nor waiting for a retry timer (start-up, and after a reload).
  void prefetch();

  // Control thread, after a reload: retires every slot whose identity config is not (field by
  // field) one of |identities| (Config::identities) and drops it from the map. Slots of unchanged
  // identities stay, including those a route learned at run time (scope "auto").
  void retain(const std::map<std::string, config::Identity>& identities);
  // Control thread: the precise form: retires every slot not in |live|. The caller must list the
  // slots that routes learned at run time too.
  void retain(const std::vector<std::shared_ptr<TokenSlot>>& live);

  // Any thread: every slot holds a valid token. True with no slots.
  bool ready() const;

  // Control thread (the admin listener's loop): one object per slot, in creation order, with
  // "identity", "scope", "source", "has_valid_token", "expires_in" (seconds, or null),
  // "refresh_in" / "retry_in" (seconds until the next planned attempt, or null), "last_error"
  // (or null), "acquisitions_ok", "acquisitions_failed" and "fetching". Never a token.
  nlohmann::json status_json() const;

  // Control thread, before prefetch(): called after every fetch attempt.
  void set_observer(std::function<void(const AcquisitionEvent&)> observer);

  // Control thread (after a reload): new waiter_budget and request_timeout for requests that
  // start waiting from now on.
  void set_wait_limits(std::chrono::milliseconds waiter_budget,
                       std::chrono::milliseconds request_timeout);

  // Any thread: number of live (not retired) slots.
  size_t size() const;

  class Slot;     // the TokenSlot implementation (token_manager.cc)
  struct Shared;  // what slots share with the manager: executor, scheduler, options, observer
  struct Source;  // one per distinct identity config: the lazily made TokenSource

 private:
  void retire_where(const std::function<bool(const Slot&)>& drop);

  std::shared_ptr<Shared> shared_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Slot>> slots_;      // guarded by mu_, creation order
  std::vector<std::shared_ptr<Source>> sources_;  // guarded by mu_
};

}  // namespace miproxy::auth
