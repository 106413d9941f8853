#pragma once
// The data plane's face: a Server owns N worker threads, each with its own libuv loop,
// listeners (SO_REUSEPORT for TCP, a shared descriptor for Unix sockets), downstream
// connections, upstream pools and TLS connector. Nothing on the per-request path takes a lock
// shared with another worker. The control thread (the caller) publishes config snapshots and
// asks for a drain; workers never call back into it except through TokenSlot.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "auth/token.h"
#include "config/config.h"
#include "proxy/learned_scope.h"
#include "proxy/metrics.h"
#include "routing/router.h"

namespace miproxy::proxy {

// Everything a request needs from one config generation, built on the control thread and
// shared read-only by all workers. A request keeps the snapshot it started with.
struct RouteRuntime {
  std::shared_ptr<auth::TokenSlot> slot;  // null for scope "auto" (see learned)
  std::shared_ptr<LearnedScope> learned;  // set for scope "auto" only: slots per upstream host
  std::shared_ptr<const RouteMetrics> metrics;
};

struct Snapshot {
  explicit Snapshot(std::shared_ptr<const config::Config> c) : config(c), table(c) {}
  std::shared_ptr<const config::Config> config;
  routing::Table table;
  std::vector<RouteRuntime> routes;  // parallel to table.routes()
  std::shared_ptr<const RouteMetrics> unrouted_metrics;  // requests that matched no route
  // Any thread: the token slot for (identity name, scope) — used when a route learns its scope.
  std::function<std::shared_ptr<auth::TokenSlot>(const std::string&, const std::string&)>
      make_slot;
  uint64_t generation = 0;
};

// A bound listening socket, created by the control thread before workers start.
struct BoundListener {
  config::Listener spec;
  int fd = -1;                 // the first socket; workers 1.. bind their own for TCP
  std::string display;         // "127.0.0.1:43123" or "unix:/run/miproxy/proxy.sock"
  uint16_t port = 0;           // TCP: the port actually bound
};

// Binds every listener of |config| (socket options, unlink of a stale Unix socket, mode).
// Returns the bound listeners or an error in words.
std::expected<std::vector<BoundListener>, std::string> bind_listeners(const config::Config& config);

// Counters the admin endpoint and tests read; each worker owns a slot, summed on read.
struct WorkerStats {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> active_connections{0};
  std::atomic<uint64_t> upstream_connects{0};
  std::atomic<uint64_t> upstream_reused{0};
  std::atomic<uint64_t> upstream_open{0};
  std::atomic<uint64_t> tls_handshakes{0};
  std::atomic<uint64_t> tls_resumed{0};
};

class Worker;

class Server {
 public:
  Server(std::vector<BoundListener> listeners, unsigned workers);
  ~Server();

  // Starts the worker threads serving |snapshot|.
  void start(std::shared_ptr<const Snapshot> snapshot);
  // Any thread: new requests use |snapshot| from now on.
  void publish(std::shared_ptr<const Snapshot> snapshot);
  // Any thread: stop accepting, let in-flight requests finish; idle connections close.
  void drain();
  // Any thread: close every connection now (grace period over).
  void force_close();
  // Blocks until every worker thread has exited (after drain, once idle).
  void join();
  // Calls |on_idle| (from a worker thread) when the last worker finished.
  void set_on_stopped(std::function<void()> on_stopped) { on_stopped_ = std::move(on_stopped); }

  const std::vector<BoundListener>& listeners() const { return listeners_; }
  uint64_t total(std::atomic<uint64_t> WorkerStats::*field) const;

 private:
  friend class Worker;
  void worker_stopped();
  std::vector<BoundListener> listeners_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<unsigned> running_{0};
  // Workers inside an accept-pause episode, so each episode is logged once per process.
  std::atomic<int> fd_episode_workers_{0};
  std::atomic<int> conn_episode_workers_{0};
  std::function<void()> on_stopped_;
};

}  // namespace miproxy::proxy
