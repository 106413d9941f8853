#include "proxy/worker.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"
#include "proxy/conn.h"

namespace miproxy::proxy {
namespace {

// A TCP socket bound to |host|:|port| with SO_REUSEPORT so every worker can bind the same port
// and the kernel spreads connections across them.
int bind_tcp(const std::string& host, uint16_t port, std::string* error) {
  sockaddr_storage ss{};
  socklen_t sl = 0;
  if (host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    if (uv_ip6_addr(host.c_str(), port, a) != 0) {
      *error = "invalid IPv6 address " + host;
      return -1;
    }
    sl = sizeof(sockaddr_in6);
  } else {
    std::string h = host == "localhost" ? "127.0.0.1" : host;
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    if (uv_ip4_addr(h.c_str(), port, a) != 0) {
      *error = "invalid IPv4 address " + host;
      return -1;
    }
    sl = sizeof(sockaddr_in);
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    *error = "bind " + host + ":" + std::to_string(port) + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  if (::listen(fd, 1024) != 0) {
    *error = std::string("listen: ") + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::expected<std::vector<BoundListener>, std::string> bind_listeners(const config::Config& cfg) {
  std::vector<BoundListener> out;
  for (const auto& l : cfg.listeners) {
    BoundListener b;
    b.spec = l;
    std::string error;
    if (l.kind == config::Listener::Kind::TCP) {
      b.fd = bind_tcp(l.host, l.port, &error);
      if (b.fd < 0) return std::unexpected(error);
      sockaddr_storage ss{};
      socklen_t sl = sizeof ss;
      getsockname(b.fd, reinterpret_cast<sockaddr*>(&ss), &sl);
      b.port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      b.display = (l.host.find(':') != std::string::npos ? "[" + l.host + "]" : l.host) + ":" +
                  std::to_string(b.port);
    } else {
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      if (l.unix_path.size() >= sizeof sa.sun_path) return std::unexpected("unix path too long");
      std::memcpy(sa.sun_path, l.unix_path.c_str(), l.unix_path.size() + 1);
      struct stat st {};
      if (::lstat(l.unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        ::unlink(l.unix_path.c_str());  // a stale socket from an earlier run
      }
      if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        std::string e = "bind " + l.unix_path + ": " + std::strerror(errno);
        ::close(fd);
        return std::unexpected(e);
      }
      ::chmod(l.unix_path.c_str(), l.mode);
      if (::listen(fd, 1024) != 0) {
        ::close(fd);
        return std::unexpected(std::string("listen: ") + std::strerror(errno));
      }
      b.fd = fd;
      b.display = "unix:" + l.unix_path;
    }
    out.push_back(std::move(b));
  }
  return out;
}

// ---- Worker ----

Worker::Worker(Server& server, unsigned index) : server_(server), index_(index) {
  uv_loop_init(&loop_);
  executor_ = std::make_unique<UvExecutor>(&loop_);
  pool_ = std::make_unique<UpstreamPool>(&loop_, &stats_.upstream_open);
  connector_ = std::make_unique<Connector>(&loop_);
  uv_check_init(&loop_, &reaper_);
  reaper_.data = this;
  uv_idle_init(&loop_, &kick_);
}

Worker::~Worker() {
  if (thread_.joinable()) thread_.join();
}

void Worker::start(std::shared_ptr<const Snapshot> snapshot) {
  snapshot_ = std::move(snapshot);
  thread_ = std::thread([this] { run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run() {
  open_listeners();
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Everything is closed: run once more so close callbacks complete, then tear down.
  uv_run(&loop_, UV_RUN_NOWAIT);
  connector_.reset();
  uv_run(&loop_, UV_RUN_NOWAIT);
  int rc = uv_loop_close(&loop_);
  if (rc != 0) {
    uv_walk(&loop_, [](uv_handle_t* h, void*) {
      if (!uv_is_closing(h)) uv_close(h, nullptr);
    }, nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
  server_.worker_stopped();
}

void Worker::open_listeners() {
  for (const auto& b : server_.listeners_) {
    auto lh = std::make_unique<ListenHandle>();
    lh->worker = this;
    lh->bound = &b;
    int rc = 0;
    if (b.spec.kind == config::Listener::Kind::TCP) {
      lh->is_tcp = true;
      uv_tcp_init(&loop_, &lh->h.tcp);
      int fd = b.fd;
      if (index_ > 0) {
        std::string error;
        fd = bind_tcp(b.spec.host, b.port, &error);
        if (fd < 0) {
          log::error("worker listener bind failed", {{"worker", index_}, {"error", error}});
          uv_close(reinterpret_cast<uv_handle_t*>(&lh->h.tcp), nullptr);
          listen_handles_.push_back(std::move(lh));
          continue;
        }
      }
      rc = uv_tcp_open(&lh->h.tcp, fd);
    } else {
      lh->is_tcp = false;
      uv_pipe_init(&loop_, &lh->h.pipe, 0);
      rc = uv_pipe_open(&lh->h.pipe, index_ == 0 ? b.fd : ::dup(b.fd));
    }
    auto* stream = reinterpret_cast<uv_stream_t*>(&lh->h);
    stream->data = lh.get();
    if (rc == 0) rc = uv_listen(stream, 1024, &Worker::on_connection);
    if (rc != 0) log::error("listen failed", {{"listener", b.display}, {"error", uv_strerror(rc)}});
    listen_handles_.push_back(std::move(lh));
  }
}

void Worker::on_connection(uv_stream_t* server, int status) {
  auto* lh = static_cast<ListenHandle*>(server->data);
  Worker* w = lh->worker;
  if (status < 0 || w->draining_) return;
  Transport* t = accept_plain(&w->loop_, server);
  if (!t) return;
  auto* conn = new ClientConn(*w, t, *lh->bound);
  w->add_conn(conn);
  conn->start();
}

void Worker::add_conn(ClientConn* conn) { conns_.push_back(conn); }

void Worker::remove_conn(ClientConn* conn) {
  conns_.remove(conn);
  graveyard_.push_back(conn);
  schedule_reap();
}

void Worker::close_upstream(Transport* t) {
  stats_.upstream_open.fetch_sub(1, std::memory_order_relaxed);
  t->close();
}

void Worker::retire(std::unique_ptr<Exchange> ex) {
  dead_exchanges_.push_back(std::move(ex));
  schedule_reap();
}

void Worker::schedule_reap() {
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&reaper_)) &&
      !uv_is_closing(reinterpret_cast<uv_handle_t*>(&reaper_))) {
    uv_check_start(&reaper_, &Worker::on_reap);
    // An active idle handle keeps the next poll from blocking, so the reaper runs promptly.
    uv_idle_start(&kick_, [](uv_idle_t* h) { uv_idle_stop(h); });
  }
}

void Worker::on_reap(uv_check_t* check) {
  auto* w = static_cast<Worker*>(check->data);
  uv_check_stop(check);
  // Exchanges first: their destructors may touch their ClientConn.
  auto exchanges = std::move(w->dead_exchanges_);
  w->dead_exchanges_.clear();
  exchanges.clear();
  auto conns = std::move(w->graveyard_);
  w->graveyard_.clear();
  for (ClientConn* c : conns) delete c;
  w->maybe_finish();
}

void Worker::publish(std::shared_ptr<const Snapshot> snapshot) {
  executor_->post([this, snapshot = std::move(snapshot)]() mutable {
    snapshot_ = std::move(snapshot);
  });
}

void Worker::drain() {
  executor_->post([this] {
    if (draining_) return;
    draining_ = true;
    close_listeners();
    std::vector<ClientConn*> conns(conns_.begin(), conns_.end());
    for (ClientConn* c : conns) c->drain();
    maybe_finish();
  });
}

void Worker::force_close() {
  executor_->post([this] {
    draining_ = true;
    close_listeners();
    std::vector<ClientConn*> conns(conns_.begin(), conns_.end());
    for (ClientConn* c : conns) c->close();
    maybe_finish();
  });
}

void Worker::close_listeners() {
  for (auto& lh : listen_handles_) {
    auto* h = reinterpret_cast<uv_handle_t*>(&lh->h);
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
}

void Worker::maybe_finish() {
  if (!draining_ || finished_ || !conns_.empty() || !graveyard_.empty() ||
      !dead_exchanges_.empty()) {
    return;
  }
  finished_ = true;
  pool_->close_all();
  executor_->close();
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&reaper_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&reaper_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&kick_), nullptr);
  }
}

// ---- Server ----

Server::Server(std::vector<BoundListener> listeners, unsigned workers)
    : listeners_(std::move(listeners)) {
  if (workers == 0) workers = 1;
  for (unsigned i = 0; i < workers; ++i) workers_.push_back(std::make_unique<Worker>(*this, i));
}

Server::~Server() {
  join();
  for (auto& b : listeners_) {
    if (b.spec.kind == config::Listener::Kind::UNIX) ::unlink(b.spec.unix_path.c_str());
  }
}

void Server::start(std::shared_ptr<const Snapshot> snapshot) {
  running_ = static_cast<unsigned>(workers_.size());
  for (auto& w : workers_) w->start(snapshot);
}

void Server::publish(std::shared_ptr<const Snapshot> snapshot) {
  for (auto& w : workers_) w->publish(snapshot);
}

void Server::drain() {
  for (auto& w : workers_) w->drain();
}

void Server::force_close() {
  for (auto& w : workers_) w->force_close();
}

void Server::join() {
  for (auto& w : workers_) w->join();
}

void Server::worker_stopped() {
  if (running_.fetch_sub(1) == 1 && on_stopped_) on_stopped_();
}

uint64_t Server::total(std::atomic<uint64_t> WorkerStats::*field) const {
  uint64_t sum = 0;
  for (const auto& w : workers_) sum += (w->stats_.*field).load(std::memory_order_relaxed);
  return sum;
}

}  // namespace miproxy::proxy
