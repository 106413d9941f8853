#pragma once
// Scope "auto": the token slots a route learned from its upstreams' challenges, one per
// upstream host. With "https://{host}" every host answers its own challenge, so a scope learned
// from one host is never used for another. Shared by all workers: lookups take no lock (an
// immutable map behind an atomic pointer, replaced on learning, which is rare); the map holds
// at most |limit| hosts and forgets the least recently used one to make room.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "auth/token.h"

namespace miproxy::proxy {

class LearnedScope {
 public:
  // Hosts forgotten to stay within |limit| (at least 1) count in
  // miproxy_limit_hits_total{limit="max_learned_scopes"}.
  explicit LearnedScope(size_t limit = 1024);

  // Any thread: the slot learned for |host| (an upstream authority), or null.
  std::shared_ptr<auth::TokenSlot> find(std::string_view host) const;
  // Any thread: remembers |slot| for |host|, replacing what it had.
  void store(const std::string& host, std::shared_ptr<auth::TokenSlot> slot);
  size_t size() const;
  size_t limit() const { return limit_; }

 private:
  struct Entry {
    std::shared_ptr<auth::TokenSlot> slot;
    mutable std::atomic<int64_t> used_ms{0};  // steady-clock milliseconds of the last find()
  };
  using Map = std::map<std::string, std::shared_ptr<Entry>, std::less<>>;
  static int64_t now_ms();

  size_t limit_;
  std::atomic<std::shared_ptr<const Map>> map_;
  std::mutex store_mu_;  // serialises store(); find() never takes it
};

}  // namespace miproxy::proxy
