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
  struct ListenHandle {
    Worker* worker;
    const BoundListener* bound;
    union {
      uv_tcp_t tcp;
      uv_pipe_t pipe;
    } h;
    bool is_tcp;
  };
  void run();
  void open_listeners();
  void close_listeners();
  void maybe_finish();
  void schedule_reap();
  static void on_reap(uv_check_t* check);
  static void on_connection(uv_stream_t* server, int status);

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
  WorkerStats stats_;
  bool draining_ = false;
  bool finished_ = false;
  friend class Server;
};

}  // namespace miproxy::proxy
