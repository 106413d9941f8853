#include "proxy/learned_scope.h"

#include "proxy/metrics.h"

namespace miproxy::proxy {

LearnedScope::LearnedScope(size_t limit)
    : limit_(limit < 1 ? 1 : limit),
      map_(std::make_shared<const Map>()) {}

int64_t LearnedScope::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<auth::TokenSlot> LearnedScope::find(std::string_view host) const {
  std::shared_ptr<const Map> map = map_.load(std::memory_order_acquire);
  auto it = map->find(host);
  if (it == map->end()) return nullptr;
  // Recency for eviction: written at most every 100 ms, so busy hosts do not keep one cache
  // line bouncing between workers.
  int64_t now = now_ms();
  if (now - it->second->used_ms.load(std::memory_order_relaxed) > 100) {
    it->second->used_ms.store(now, std::memory_order_relaxed);
  }
  return it->second->slot;
}

void LearnedScope::store(const std::string& host, std::shared_ptr<auth::TokenSlot> slot) {
  std::lock_guard lock(store_mu_);
  std::shared_ptr<const Map> old = map_.load(std::memory_order_acquire);
  auto next = std::make_shared<Map>(*old);  // entries are shared: recency carries over
  next->erase(host);
  while (next->size() >= limit_) {
    auto lru = next->begin();
    for (auto it = next->begin(); it != next->end(); ++it) {
      if (it->second->used_ms.load(std::memory_order_relaxed) <
          lru->second->used_ms.load(std::memory_order_relaxed)) {
        lru = it;
      }
    }
    next->erase(lru);
    count_limit_hit("max_learned_scopes");
  }
  auto entry = std::make_shared<Entry>();
  entry->slot = std::move(slot);
  entry->used_ms.store(now_ms(), std::memory_order_relaxed);
  next->emplace(host, std::move(entry));
  map_.store(std::move(next), std::memory_order_release);
}

size_t LearnedScope::size() const { return map_.load(std::memory_order_acquire)->size(); }

}  // namespace miproxy::proxy
