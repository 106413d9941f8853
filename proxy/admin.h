#pragma once
// The admin listener (interface.md "Admin listener"): GET /healthz, GET /readyz, GET /metrics,
// POST /quitquitquit (only with admin.allow_quit). It runs on the control thread's loop and is
// never reachable from the proxy listeners. Bodies are small and built on demand.

#include <uv.h>

#include <expected>
#include <functional>
#include <list>
#include <string>

namespace miproxy::proxy {

class AdminServer {
 public:
  struct Handlers {
    // Returns (ready, JSON body).
    std::function<std::pair<bool, std::string>()> readiness;
    // Prometheus text.
    std::function<std::string()> metrics;
    // Starts a graceful shutdown; called only when allow_quit.
    std::function<void()> quit;
    bool allow_quit = false;
  };

  AdminServer(uv_loop_t* loop, Handlers handlers);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds |host|:|port| (port 0: any). Returns "host:port" as bound, or an error in words.
  std::expected<std::string, std::string> listen(const std::string& host, uint16_t port);
  // Closes the listener and every admin connection. Idempotent.
  void close();

  class Conn;

 private:
  friend class Conn;
  static void on_connection(uv_stream_t* server, int status);
  uv_loop_t* loop_;
  Handlers handlers_;
  uv_tcp_t* listener_ = nullptr;
  std::string host_;  // the bound address (an IP literal), for the Host check
  std::list<Conn*> conns_;
};

}  // namespace miproxy::proxy
