#include "proxy/worker.h"

#include "base/guard.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "proxy/metrics.h"
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
  uv_timer_init(&loop_, &accept_timer_);
  accept_timer_.data = this;
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

void Worker::apply_limits() {
  const auto& lim = snapshot_->config->limits;
  pool_->set_max_hosts(lim.max_pool_hosts);
  connector_->set_max_sessions(lim.max_tls_sessions);
}

void Worker::run() {
  apply_limits();
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
    lh->is_tcp = b.spec.kind == config::Listener::Kind::TCP;
    int fd = b.fd;
    if (lh->is_tcp && index_ > 0) {
      std::string error;
      fd = bind_tcp(b.spec.host, b.port, &error);
      if (fd < 0) {
        log::error("worker listener bind failed", {{"worker", index_}, {"error", error}});
        listen_handles_.push_back(std::move(lh));
        continue;
      }
    } else if (!lh->is_tcp && index_ > 0) {
      fd = ::dup(b.fd);
    }
    int rc = fd < 0 ? UV_EMFILE : uv_poll_init_socket(&loop_, &lh->poll, fd);
    if (rc != 0) {
      log::error("listen failed", {{"listener", b.display}, {"error", uv_strerror(rc)}});
      if (fd >= 0 && fd != b.fd) ::close(fd);
      listen_handles_.push_back(std::move(lh));
      continue;
    }
    lh->fd = fd;
    lh->poll.data = lh.get();
    uv_poll_start(&lh->poll, UV_READABLE, &Worker::on_listen_ready);
    lh->polling = true;
    listen_handles_.push_back(std::move(lh));
  }
}

void Worker::on_listen_ready(uv_poll_t* poll, int status, int) {
  auto* lh = static_cast<ListenHandle*>(poll->data);
  // A throw (say, out of memory building a connection) is logged; the listener stays armed.
  guard::run("worker: accept", [&] { lh->worker->accept_batch(lh, status); });
}

void Worker::accept_batch(ListenHandle* lh, int status) {
  Worker* w = this;
  if (status < 0 || w->draining_) return;
  // A bounded batch per wakeup keeps one busy listener from starving the loop; the poll is
  // level-triggered, so whatever is left wakes it again.
  for (int i = 0; i < 64; ++i) {
    if (w->at_connection_limit()) {
      w->pause_accepting(AcceptPause::CONNECTIONS, 0);
      return;
    }
    int fd = ::accept4(lh->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        w->accept_caught_up();
        return;
      }
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        w->pause_accepting(AcceptPause::DESCRIPTORS, err);
        return;
      }
      log::warn("accept failed", {{"listener", lh->bound->display}, {"error", std::strerror(err)}});
      return;
    }
    Transport* t = adopt_plain(&w->loop_, fd, lh->is_tcp);
    if (!t) continue;
    auto* conn = new ClientConn(*w, t, *lh->bound);
    w->add_conn(conn);
    conn->start();
  }
}

bool Worker::at_connection_limit() const {
  uint64_t limit = snapshot_->config->limits.max_connections;
  return server_.total(&WorkerStats::active_connections) >= limit;
}

void Worker::pause_accepting(AcceptPause why, int err) {
  for (auto& lh : listen_handles_) {
    if (lh->polling) {
      uv_poll_stop(&lh->poll);
      lh->polling = false;
    }
  }
  accept_pause_ = why;
  uint64_t delay = 100;
  if (why == AcceptPause::DESCRIPTORS) {
    count_limit_hit("file_descriptors");
    fd_backoff_ms_ = fd_backoff_ms_ == 0 ? 100 : std::min<uint64_t>(fd_backoff_ms_ * 2, 1000);
    delay = fd_backoff_ms_;
    if (!in_fd_episode_) {
      in_fd_episode_ = true;
      if (server_.fd_episode_workers_.fetch_add(1) == 0) {
        log::warn("out of file descriptors: not accepting connections until some close",
                  {{"error", std::strerror(err)}, {"retry_ms", "100..1000"}});
      }
    }
  } else {
    count_limit_hit("max_connections");
    if (!in_conn_episode_) {
      in_conn_episode_ = true;
      if (server_.conn_episode_workers_.fetch_add(1) == 0) {
        log::warn("limits.max_connections reached: not accepting connections until some close",
                  {{"max_connections", snapshot_->config->limits.max_connections}});
      }
    }
  }
  uv_timer_start(&accept_timer_, &Worker::on_accept_timer, delay, 0);
}

void Worker::on_accept_timer(uv_timer_t* timer) {
  guard::run("worker: accept timer", [&] { static_cast<Worker*>(timer->data)->resume_accepting(); });
}

void Worker::resume_accepting() {
  if (draining_ || accept_pause_ == AcceptPause::NONE) return;
  if (accept_pause_ == AcceptPause::CONNECTIONS) {
    if (at_connection_limit()) {
      uv_timer_start(&accept_timer_, &Worker::on_accept_timer, 100, 0);
      return;
    }
    in_conn_episode_ = false;
    if (server_.conn_episode_workers_.fetch_sub(1) == 1) {
      log::info("accepting connections again", {{"reason", "below limits.max_connections"}});
    }
  }
  accept_pause_ = AcceptPause::NONE;
  uv_timer_stop(&accept_timer_);
  for (auto& lh : listen_handles_) {
    if (lh->fd >= 0 && !lh->polling && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&lh->poll))) {
      uv_poll_start(&lh->poll, UV_READABLE, &Worker::on_listen_ready);
      lh->polling = true;
    }
  }
}

void Worker::accept_caught_up() {
  fd_backoff_ms_ = 0;
  if (!in_fd_episode_) return;
  in_fd_episode_ = false;
  if (server_.fd_episode_workers_.fetch_sub(1) == 1) {
    log::info("accepting connections again", {{"reason", "file descriptors available"}});
  }
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
  uv_check_stop(check);
  guard::run("worker: reap", [&] { static_cast<Worker*>(check->data)->reap(); });
}

void Worker::reap() {
  Worker* w = this;
  // Exchanges first: their destructors may touch their ClientConn.
  auto exchanges = std::move(w->dead_exchanges_);
  w->dead_exchanges_.clear();
  exchanges.clear();
  auto conns = std::move(w->graveyard_);
  w->graveyard_.clear();
  for (ClientConn* c : conns) delete c;
  if (!conns.empty() && w->accept_pause_ == AcceptPause::CONNECTIONS) w->resume_accepting();
  w->maybe_finish();
}

void Worker::publish(std::shared_ptr<const Snapshot> snapshot) {
  executor_->post([this, snapshot = std::move(snapshot)]() mutable {
    snapshot_ = std::move(snapshot);
    apply_limits();
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
  uv_timer_stop(&accept_timer_);
  for (auto& lh : listen_handles_) {
    if (lh->fd < 0) continue;
    lh->polling = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&lh->poll), nullptr);  // stops watching now
    ::close(lh->fd);
    lh->fd = -1;
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
    uv_close(reinterpret_cast<uv_handle_t*>(&accept_timer_), nullptr);
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
