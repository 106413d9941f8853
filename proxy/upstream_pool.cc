#include "proxy/upstream_pool.h"

#include "base/guard.h"

#include "proxy/metrics.h"

namespace miproxy::proxy {

struct UpstreamPool::IdleConn : Transport::Handler {
  UpstreamPool* pool;
  std::string key;
  Transport* transport;
  uint64_t expires_ms;
  void on_read(const char*, size_t) override { drop(); }  // unsolicited bytes: unusable
  void on_eof() override { drop(); }
  void on_error(int, const std::string&) override { drop(); }
  void on_drain() override {}
  void drop() {
    transport->set_handler(nullptr);
    pool->close_transport(transport);
    pool->remove(this);  // deletes this
  }
};

UpstreamPool::UpstreamPool(uv_loop_t* loop, std::atomic<uint64_t>* open_counter)
    : loop_(loop), open_(open_counter) {
  uv_timer_init(loop_, &sweep_);
  sweep_.data = this;
  uv_timer_start(&sweep_, &UpstreamPool::on_sweep, 1000, 1000);
  uv_unref(reinterpret_cast<uv_handle_t*>(&sweep_));
}

UpstreamPool::~UpstreamPool() { close_all(); }

Transport* UpstreamPool::checkout(const std::string& key) {
  auto it = hosts_.find(key);
  if (it == hosts_.end()) return nullptr;
  auto& list = it->second.conns;
  Transport* found = nullptr;
  while (!list.empty() && !found) {
    std::unique_ptr<IdleConn> c = std::move(list.back());
    list.pop_back();
    Transport* t = c->transport;
    t->set_handler(nullptr);
    if (!t->is_closing() && !t->stale()) {
      found = t;
    } else if (!t->is_closing()) {
      close_transport(t);
    }
  }
  if (list.empty()) {
    erase_host(it);
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
  }
  return found;
}

void UpstreamPool::checkin(const std::string& key, Transport* t, double idle_timeout_s) {
  auto c = std::make_unique<IdleConn>();
  c->pool = this;
  c->key = key;
  c->transport = t;
  c->expires_ms = uv_now(loop_) + static_cast<uint64_t>(idle_timeout_s * 1000);
  t->set_handler(c.get());
  t->read_start();
  auto [it, inserted] = hosts_.try_emplace(key);
  if (inserted) {
    lru_.push_front(key);
    it->second.lru_pos = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
  }
  it->second.conns.push_back(std::move(c));
  if (inserted) evict_to(max_hosts_);
}

void UpstreamPool::set_max_hosts(size_t max_hosts) {
  max_hosts_ = max_hosts;
  evict_to(max_hosts_);
}

void UpstreamPool::evict_to(size_t n) {
  while (hosts_.size() > n && !lru_.empty()) {
    auto it = hosts_.find(lru_.back());
    for (auto& c : it->second.conns) {
      c->transport->set_handler(nullptr);
      close_transport(c->transport);
    }
    erase_host(it);
    count_limit_hit("max_pool_hosts");
  }
}

void UpstreamPool::erase_host(std::unordered_map<std::string, Host>::iterator it) {
  lru_.erase(it->second.lru_pos);
  hosts_.erase(it);
}

void UpstreamPool::remove(IdleConn* conn) {
  auto it = hosts_.find(conn->key);
  if (it == hosts_.end()) return;
  auto& list = it->second.conns;
  for (auto li = list.begin(); li != list.end(); ++li) {
    if (li->get() == conn) {
      list.erase(li);  // deletes |conn|
      break;
    }
  }
  if (list.empty()) erase_host(it);
}

void UpstreamPool::on_sweep(uv_timer_t* timer) {
  guard::run("pool: sweep", [&] { static_cast<UpstreamPool*>(timer->data)->sweep(); });
}

void UpstreamPool::sweep() {
  UpstreamPool* pool = this;
  uint64_t now = uv_now(pool->loop_);
  for (auto hi = pool->hosts_.begin(); hi != pool->hosts_.end();) {
    auto& list = hi->second.conns;
    for (auto li = list.begin(); li != list.end();) {
      if ((*li)->expires_ms <= now) {
        (*li)->transport->set_handler(nullptr);
        pool->close_transport((*li)->transport);
        li = list.erase(li);
      } else {
        ++li;
      }
    }
    if (list.empty()) {
      pool->lru_.erase(hi->second.lru_pos);
      hi = pool->hosts_.erase(hi);
    } else {
      ++hi;
    }
  }
}

void UpstreamPool::close_all() {
  for (auto& [key, host] : hosts_) {
    for (auto& c : host.conns) {
      c->transport->set_handler(nullptr);
      close_transport(c->transport);
    }
  }
  hosts_.clear();
  lru_.clear();
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&sweep_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sweep_), nullptr);
  }
}

void UpstreamPool::close_transport(Transport* t) {
  open_->fetch_sub(1, std::memory_order_relaxed);
  t->close();
}

size_t UpstreamPool::idle_count() const {
  size_t n = 0;
  for (const auto& [key, host] : hosts_) n += host.conns.size();
  return n;
}

}  // namespace miproxy::proxy
