#pragma once
// What the data path sees of auth/: a TokenSlot per (identity, scope). Workers read the current
// token lock-free; when there is none they ask once and park the request until the answer is
// posted back to their own loop. Acquisition, caching, refresh-ahead, single flight and retries
// all happen on the control thread behind this interface.

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <string>

#include "base/executor.h"
#include "base/secret.h"

namespace miproxy::auth {

using Clock = std::chrono::system_clock;

struct AccessToken {
  SecretString value;             // the bearer token itself
  Clock::time_point expires_at;   // never sent at or after this instant
  Clock::time_point refresh_at;   // refresh ahead from here on
  std::string source;             // "imds", "app_service", "workload_identity", "token_file", ...
  // Unverified claims, for logs and doctor (empty when the token is not a JWT).
  std::string object_id;          // oid
  std::string tenant_id;          // tid
  std::string client_id;          // appid / azp
  std::string audience;           // aud
};

struct TokenError {
  std::string identity;           // identity name from config
  std::string source;             // source that was tried (or "default: a, b, c")
  std::string message;            // what the endpoint said, in words; never a secret
};

using TokenResult = std::expected<std::shared_ptr<const AccessToken>, TokenError>;

class TokenSlot {
 public:
  virtual ~TokenSlot() = default;

  // Any thread, lock-free: the published token if it is valid now (not expired, with a small
  // safety margin), else nullptr. Never returns an expired token.
  virtual std::shared_ptr<const AccessToken> current() const = 0;

  // Any thread: get a token. If one is valid, |done| is still posted (never run inline). All
  // concurrent callers across all threads share one acquisition. |done| runs on |reply_to|.
  virtual void acquire(Executor& reply_to, std::function<void(TokenResult)> done) = 0;

  // Any thread: the upstream rejected |rejected| (CAE claims challenge or invalid_token).
  // Drops it if it is still the published token, so the next acquire() fetches a new one,
  // with |claims| (raw JSON) where the source supports them.
  virtual void invalidate(const std::shared_ptr<const AccessToken>& rejected,
                          const std::string& claims) = 0;

  virtual const std::string& identity_name() const = 0;
  virtual const std::string& scope() const = 0;

  struct Status {
    bool has_valid_token = false;
    Clock::time_point expires_at{};
    std::string source;
    std::string last_error;       // "" when the last attempt succeeded
    uint64_t acquisitions_ok = 0;
    uint64_t acquisitions_failed = 0;
  };
  virtual Status status() const = 0;
};

}  // namespace miproxy::auth
