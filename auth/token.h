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
#include <string_view>

#include "base/executor.h"
#include "base/secret.h"

namespace miproxy::auth {

using Clock = std::chrono::system_clock;

// True when |token| is an RFC 6750 §2.1 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
// "+" / "/" ) *"=". Anything else (CR LF above all) would let a token endpoint write into the
// upstream request, so such a token is refused, never sent.
inline bool is_b64token(std::string_view token) {
  size_t i = 0;
  auto tchar = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
  };
  while (i < token.size() && tchar(token[i])) ++i;
  if (i == 0) return false;
  while (i < token.size() && token[i] == '=') ++i;
  return i == token.size();
}

struct AccessToken {
  SecretString value;             // the bearer token itself
  Clock::time_point expires_at;   // never sent at or after this instant
  // Served until here: expires_at less a safety margin that scales with the lifetime
  // (min(expiry_margin, lifetime / 10)), so short-lived tokens are usable too.
  Clock::time_point usable_until;
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
