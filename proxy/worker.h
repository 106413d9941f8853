#pragma once
// Internals of the data plane (not part of proxy/'s face; see server.h): the worker thread,
// the downstream connection and the upstream exchange (the per-worker upstream pool is in
// upstream_pool.h).

#include <llhttp.h>
#include <uv.h>

#include <chrono>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "auth/uv_executor.h"
#include "proxy/http1.h"
#include "proxy/server.h"
#include "proxy/conn.h"
#include "proxy/transport.h"
#include "proxy/upstream_pool.h"

namespace miproxy::proxy {

class ClientConn;
class Exchange;

// Bytes queued towards a peer above which the other side stops reading (backpressure).
inline constexpr size_t kHighWatermark = 256 * 1024;

class Worker {
 public:
  Worker(Server& server, unsigned index);
  ~Worker();
  void start(std::shared_ptr<const Snapshot> snapshot);
  void join();

  // Called from other threads; each posts to this worker's loop.
  void publish(std::shared_ptr<const Snapshot> snapshot);
  void drain();
  void force_close();

  uv_loop_t* loop() { return &loop_; }
  Executor& executor() { return *executor_; }
  UpstreamPool& pool() { return *pool_; }
  Connector& connector() { return *connector_; }
  // Tests and fuzzers (tests/fuzz/fuzz_downstream.cc): replaces the connector before any
  // request runs, e.g. with one whose connections are fakes. Such a harness drives loop()
  // itself (uv_run) instead of start(), after publish() and a loop turn to set the snapshot.
  void set_connector(std::unique_ptr<Connector> connector) { connector_ = std::move(connector); }
  const std::shared_ptr<const Snapshot>& snapshot() const { return snapshot_; }
  WorkerStats& stats() { return stats_; }
  bool draining() const { return draining_; }

  void add_conn(ClientConn* conn);
  // Deletes |conn| on a later loop turn (it may be on the stack now).
  void remove_conn(ClientConn* conn);
  // Deletes a finished exchange on a later loop turn.
  void retire(std::unique_ptr<Exchange> ex);
  // Closes an upstream transport this worker opened (keeps the open-connections gauge right).
  void close_upstream(Transport* t);

 private:
  // A listening socket watched with uv_poll (not uv_listen): miproxy runs accept4 itself so
  // it can stop watching when it must not accept (max_connections, out of descriptors)
  // instead of libuv retrying a failing accept in a loop.
  struct ListenHandle {
    Worker* worker;
    const BoundListener* bound;
    uv_poll_t poll;
    int fd = -1;
    bool is_tcp = false;
    bool polling = false;
  };
  enum class AcceptPause { NONE, CONNECTIONS, DESCRIPTORS };
  void run();
  void apply_limits();  // the snapshot's pool and session-cache bounds
  void open_listeners();
  void close_listeners();
  void maybe_finish();
  void schedule_reap();
  static void on_reap(uv_check_t* check);
  static void on_listen_ready(uv_poll_t* poll, int status, int events);
  void accept_batch(ListenHandle* lh, int status);
  void reap();
  static void on_accept_timer(uv_timer_t* timer);
  bool at_connection_limit() const;
  void pause_accepting(AcceptPause why, int err);
  void resume_accepting();
  void accept_caught_up();

  Server& server_;
  unsigned index_;
  uv_loop_t loop_;
  std::thread thread_;
  std::unique_ptr<UvExecutor> executor_;
  std::unique_ptr<UpstreamPool> pool_;
  std::unique_ptr<Connector> connector_;
  std::shared_ptr<const Snapshot> snapshot_;
  std::vector<std::unique_ptr<ListenHandle>> listen_handles_;
  std::list<ClientConn*> conns_;
  std::vector<ClientConn*> graveyard_;
  std::vector<std::unique_ptr<Exchange>> dead_exchanges_;
  uv_check_t reaper_;
  uv_idle_t kick_;
  uv_timer_t accept_timer_;      // retries accepting while paused
  AcceptPause accept_pause_ = AcceptPause::NONE;
  uint64_t fd_backoff_ms_ = 0;   // 100 ms doubling to 1 s while descriptors stay exhausted
  bool in_fd_episode_ = false;   // between the first EMFILE/ENFILE and catching up
  bool in_conn_episode_ = false; // between reaching max_connections and accepting again
  WorkerStats stats_;
  bool draining_ = false;
  bool finished_ = false;
  friend class Server;
};

}  // namespace miproxy::proxy
