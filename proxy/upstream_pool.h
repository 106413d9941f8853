#pragma once
// Idle upstream connections of one worker, keyed by "host:port|ca_file" (internal to proxy/).
// Newest first within a key; an idle connection that the server closes (or that sends
// anything) is dropped at once; a sweep closes those idle longer than their route's idle
// timeout. Bounded: a "https://{host}" route adds a key for every host the apps name, so at
// most max_hosts keys are kept and the least recently used key's connections are closed to
// make room (counted as limits.max_pool_hosts).

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "proxy/transport.h"

namespace miproxy::proxy {

class UpstreamPool {
 public:
  static constexpr size_t kDefaultMaxHosts = 256;
  UpstreamPool(uv_loop_t* loop, std::atomic<uint64_t>* open_counter);
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // A parked connection for |key|, or nullptr. The caller sets its handler and reads.
  Transport* checkout(const std::string& key);
  void checkin(const std::string& key, Transport* transport, double idle_timeout_s);
  void close_all();
  // Keys (hosts) kept at most; lowering it closes the oldest keys' connections now.
  void set_max_hosts(size_t max_hosts);
  size_t idle_count() const;
  size_t host_count() const { return hosts_.size(); }

 private:
  struct IdleConn;
  struct Host {
    std::list<std::unique_ptr<IdleConn>> conns;  // oldest first
    std::list<std::string>::iterator lru_pos;
  };
  void remove(IdleConn* conn);
  void erase_host(std::unordered_map<std::string, Host>::iterator it);
  void evict_to(size_t n);
  static void on_sweep(uv_timer_t* timer);
  void sweep();
  void close_transport(Transport* t);
  uv_loop_t* loop_;
  std::atomic<uint64_t>* open_;
  uv_timer_t sweep_;
  size_t max_hosts_ = kDefaultMaxHosts;
  std::unordered_map<std::string, Host> hosts_;
  std::list<std::string> lru_;  // keys, most recently used first
};

}  // namespace miproxy::proxy
