#include <unistd.h>

#include "proxy/transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

#include "base/guard.h"
#include "base/log.h"
#include "proxy/tls_stream.h"

namespace miproxy::proxy {
namespace detail {

char* thread_read_buffer() {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  return buffer.get();
}

char* thread_plain_buffer() {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  return buffer.get();
}

TransportStats& mutable_stats() {
  thread_local TransportStats stats;
  return stats;
}

// ---- StreamTransport -----------------------------------------------------------------------

StreamTransport::StreamTransport(uv_loop_t* loop) : loop_(loop) {
  std::memset(&h_, 0, sizeof(h_));
  write_req_.data = this;
}

StreamTransport::~StreamTransport() = default;

int StreamTransport::init_tcp() {
  int r = uv_tcp_init(loop_, &h_.tcp);
  if (r == 0) {
    handle_init_ = true;
    h_.tcp.data = this;
  }
  return r;
}

int StreamTransport::init_pipe() {
  int r = uv_pipe_init(loop_, &h_.pipe, 0);
  if (r == 0) {
    handle_init_ = true;
    h_.pipe.data = this;
  }
  return r;
}

void StreamTransport::alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf) {
  *buf = uv_buf_init(thread_read_buffer(), kReadBufferSize);
}

void StreamTransport::read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<StreamTransport*>(stream->data);
  if (self->closing_) {
    return;
  }
  // |self| outlives this call even if the handler closes it (freed only by close_cb).
  if (!guard::run("transport read", [&] { self->on_stream_read(nread, buf); })) {
    self->callback_threw();
  }
}

void StreamTransport::write_cb(uv_write_t* req, int status) {
  auto* self = static_cast<StreamTransport*>(req->data);
  self->writing_ = false;
  self->inflight_.clear();
  if (status == UV_ECANCELED || self->closing_) {
    return;
  }
  if (!guard::run("transport write done", [&] { self->on_write_done(status); })) {
    self->callback_threw();
    return;
  }
  if (!self->writing_ && self->inflight_.capacity() > kShrinkAbove) {
    std::string().swap(self->inflight_);  // a burst is over: give the memory back
  }
}

void StreamTransport::close_cb(uv_handle_t* handle) {
  auto* self = static_cast<StreamTransport*>(handle->data);
  if (--self->open_handles_ == 0) {
    delete self;
  }
}

void StreamTransport::defer_cb(uv_timer_t* timer) {
  auto* self = static_cast<StreamTransport*>(timer->data);
  if (self->closing_) {
    return;
  }
  bool ok = guard::run("transport deferred event", [self] {
    if (self->pending_error_ != 0) {
      if (self->handler_ == nullptr) {
        return;  // held until set_handler()
      }
      int code = self->pending_error_;
      self->pending_error_ = 0;
      self->handler_->on_error(code, self->pending_error_what_);
      return;
    }
    self->on_deferred();
  });
  if (!ok) {
    self->callback_threw();
  }
}

void StreamTransport::callback_threw() {
  if (closing_) {
    return;  // the handler closed us before (or while) throwing
  }
  // Stop reading first: whatever threw must not be fed again from this socket.
  uv_read_stop(stream());
  reading_ = false;
  bool first = !failed_;
  failed_ = true;
  pending_error_ = 0;
  if (handler_ == nullptr) {
    stale_ = true;  // parked: the pool discards it
    return;
  }
  if (!first) {
    return;  // on_error was already delivered once: never a second time
  }
  // The handler's failure path closes this connection (and answers, where it still can). If
  // that throws too, the handler's state is unknown: leave the transport to it, read-stopped,
  // rather than free memory it may still point at.
  Handler* handler = handler_;
  guard::run("transport error handler", [&] {
    handler->on_error(UV_EINVAL, "internal error (exception caught)");
  });
}

void StreamTransport::set_handler(Handler* handler) {
  handler_ = handler;
  if (handler != nullptr && !closing_ && has_held_events()) {
    defer();
  }
}

int StreamTransport::raw_read_start() { return uv_read_start(stream(), alloc_cb, read_cb); }

void StreamTransport::read_start() {
  if (closing_ || reading_) {
    return;
  }
  reading_ = true;
  int r = raw_read_start();
  if (r != 0 && r != UV_EALREADY) {
    fail_later(r, std::string("read start: ") + uv_strerror(r));
  }
}

void StreamTransport::read_stop() {
  if (closing_) {
    return;
  }
  reading_ = false;
  uv_read_stop(stream());
}

void StreamTransport::defer() {
  if (closing_) {
    return;
  }
  if (!defer_init_) {
    uv_timer_init(loop_, &defer_timer_);
    defer_timer_.data = this;
    defer_init_ = true;
  }
  uv_timer_start(&defer_timer_, defer_cb, 0, 0);
}

void StreamTransport::fail_later(int uv_code, std::string what) {
  if (failed_) {
    return;
  }
  failed_ = true;
  pending_error_ = uv_code;
  pending_error_what_ = std::move(what);
  defer();
}

void StreamTransport::fail_now(int uv_code, const std::string& what) {
  if (failed_ && pending_error_ == 0) {
    return;  // already reported
  }
  failed_ = true;
  if (handler_ == nullptr) {
    stale_ = true;  // parked: hold the error for the next handler
    pending_error_ = uv_code;
    pending_error_what_ = what;
    return;
  }
  pending_error_ = 0;
  handler_->on_error(uv_code, what);
}

bool StreamTransport::send_now(const char* data, size_t len) {
  uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
  TransportStats& stats = mutable_stats();
  stats.try_writes++;
  int r = uv_try_write(stream(), &b, 1);
  if (r < 0 && r != UV_EAGAIN) {
    fail_later(r, std::string("write: ") + uv_strerror(r));
    return false;
  }
  size_t sent = r > 0 ? static_cast<size_t>(r) : 0;
  if (sent == len) {
    return true;
  }
  stats.try_write_short++;
  stats.bytes_copied += len - sent;
  inflight_.assign(data + sent, len - sent);
  return start_write();
}

bool StreamTransport::start_write() {
  uv_buf_t b = uv_buf_init(inflight_.data(), static_cast<unsigned>(inflight_.size()));
  mutable_stats().uv_writes++;
  int r = uv_write(&write_req_, stream(), &b, 1, write_cb);
  if (r != 0) {
    inflight_.clear();
    fail_later(r, std::string("write: ") + uv_strerror(r));
    return false;
  }
  writing_ = true;
  return true;
}

void StreamTransport::close() {
  if (closing_) {
    return;
  }
  closing_ = true;
  handler_ = nullptr;
  reading_ = false;
  if (!handle_init_) {
    // Never initialised: nothing to wait for.
    if (!defer_init_) {
      delete this;
      return;
    }
  } else {
    uv_read_stop(stream());
    h_.tcp.data = this;
    ++open_handles_;
    uv_close(reinterpret_cast<uv_handle_t*>(&h_), close_cb);
  }
  if (defer_init_) {
    uv_timer_stop(&defer_timer_);
    ++open_handles_;
    uv_close(reinterpret_cast<uv_handle_t*>(&defer_timer_), close_cb);
  }
}

int StreamTransport::fd() const {
  if (!handle_init_) {
    return -1;
  }
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<const uv_handle_t*>(&h_), &fd) != 0) {
    return -1;
  }
  return fd;
}

// ---- PlainTransport ------------------------------------------------------------------------

void PlainTransport::write(const uv_buf_t* bufs, size_t count) {
  if (closing_ || failed_) {
    return;
  }
  TransportStats& stats = mutable_stats();
  size_t skip = 0;
  size_t total = 0;
  for (size_t i = 0; i < count; ++i) {
    total += bufs[i].len;
  }
  if (!writing_) {
    stats.try_writes++;
    int r = uv_try_write(stream(), bufs, static_cast<unsigned>(count));
    if (r < 0 && r != UV_EAGAIN) {
      fail_later(r, std::string("write: ") + uv_strerror(r));
      return;
    }
    skip = r > 0 ? static_cast<size_t>(r) : 0;
    if (skip == total) {
      return;
    }
    stats.try_write_short++;
  }
  stats.bytes_copied += total - skip;
  // Whatever the kernel did not take is copied: callers may reuse their buffers at once.
  std::string& queue = writing_ ? pending_ : inflight_;
  for (size_t i = 0; i < count; ++i) {
    size_t len = bufs[i].len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    queue.append(bufs[i].base + skip, len - skip);
    skip = 0;
  }
  if (!writing_ && !inflight_.empty()) {
    drain_owed_ = true;
    start_write();
  } else if (writing_) {
    drain_owed_ = true;
  }
}

void PlainTransport::on_write_done(int status) {
  if (status < 0) {
    pending_.clear();
    fail_now(status, std::string("write: ") + uv_strerror(status));
    return;
  }
  if (!pending_.empty()) {
    inflight_.swap(pending_);
    start_write();
    return;
  }
  if (drain_owed_) {
    drain_owed_ = false;
    if (handler_ != nullptr) {
      handler_->on_drain();
    }
  }
}

void PlainTransport::on_stream_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    if (handler_ != nullptr) {
      handler_->on_read(buf->base, static_cast<size_t>(nread));
    } else {
      // Parked: keep the bytes and pause until someone takes them.
      stale_ = true;
      held_.append(buf->base, static_cast<size_t>(nread));
      uv_read_stop(stream());
    }
    return;
  }
  if (nread == 0) {
    return;
  }
  uv_read_stop(stream());
  if (nread == UV_EOF) {
    if (handler_ != nullptr) {
      reading_ = false;
      handler_->on_eof();
    } else {
      stale_ = true;
      held_eof_ = true;
    }
    return;
  }
  reading_ = false;
  fail_now(static_cast<int>(nread), std::string("read: ") + uv_strerror(static_cast<int>(nread)));
}

bool PlainTransport::has_held_events() const {
  return StreamTransport::has_held_events() || !held_.empty() || held_eof_;
}

void PlainTransport::read_start() {
  if (closing_ || reading_) {
    return;
  }
  if (!held_.empty() || held_eof_) {
    reading_ = true;
    defer();  // held bytes first, on a later turn; the socket resumes after them
    return;
  }
  StreamTransport::read_start();
}

void PlainTransport::on_deferred() {
  if (handler_ == nullptr || !reading_) {
    return;
  }
  if (!held_.empty()) {
    std::string data = std::move(held_);
    held_.clear();
    handler_->on_read(data.data(), data.size());
    if (closing_ || handler_ == nullptr || !reading_) {
      return;
    }
  }
  if (held_eof_) {
    held_eof_ = false;
    reading_ = false;
    handler_->on_eof();
    return;
  }
  int r = raw_read_start();
  if (r != 0 && r != UV_EALREADY) {
    fail_now(r, std::string("read start: ") + uv_strerror(r));
  }
}

}  // namespace detail

const TransportStats& transport_stats() { return detail::mutable_stats(); }

using detail::PlainTransport;
using detail::StreamTransport;
using detail::TlsTransport;

Transport* accept_plain(uv_loop_t* loop, uv_stream_t* server) {
  auto* t = new PlainTransport(loop);
  bool tcp = server->type == UV_TCP;
  int r = tcp ? t->init_tcp() : t->init_pipe();
  if (r == 0) {
    r = uv_accept(server, t->stream());
  }
  if (r != 0) {
    log::warn("accept failed", {{"error", uv_strerror(r)}});
    t->close();
    return nullptr;
  }
  if (tcp) {
    uv_tcp_nodelay(t->tcp(), 1);
  }
  return t;
}

Transport* adopt_plain(uv_loop_t* loop, int fd, bool tcp) {
  auto* t = new PlainTransport(loop);
  int r = tcp ? t->init_tcp() : t->init_pipe();
  if (r == 0) {
    r = tcp ? uv_tcp_open(t->tcp(), fd)
            : uv_pipe_open(reinterpret_cast<uv_pipe_t*>(t->stream()), fd);
  }
  if (r != 0) {
    log::warn("accept failed", {{"error", uv_strerror(r)}});
    ::close(fd);  // not owned by the handle when opening it failed
    t->close();
    return nullptr;
  }
  if (tcp) {
    uv_tcp_nodelay(t->tcp(), 1);
  }
  return t;
}

// ---- Connector -----------------------------------------------------------------------------

namespace {

struct CtxEntry {
  SSL_CTX* ctx = nullptr;
  std::shared_ptr<detail::SessionCache> sessions;
};

// "[::1]" → "::1"; other strings unchanged.
std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    return host.substr(1, host.size() - 2);
  }
  return host;
}

bool parse_ip_literal(const std::string& host, uint16_t port, sockaddr_storage* out) {
  std::memset(out, 0, sizeof(*out));
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return true;
  }
  return false;
}

}  // namespace

struct Connector::Impl {
  struct Attempt;

  Connector* self;
  uv_loop_t* loop;
  uint64_t next_id = 1;
  std::unordered_map<uint64_t, Attempt*> attempts;
  std::map<std::string, CtxEntry> ctxs;
  size_t max_sessions = detail::SessionCache::kDefaultMaxEntries;

  Impl(Connector* s, uv_loop_t* l) : self(s), loop(l) {}
  ~Impl();

  const CtxEntry* get_ctx(const TlsClientOptions& options, const std::string& pin,
                          std::string* error);
};

struct Connector::Impl::Attempt final : TlsTransport::HandshakeListener {
  enum class State { RUNNING, DELIVERING, FINISHED };

  Impl* owner;
  uint64_t id;
  std::string host;  // without brackets
  uint16_t port;
  bool use_tls = false;
  TlsClientOptions tls;
  const CtxEntry* ctx = nullptr;
  std::string session_key;
  Done done;
  State state = State::RUNNING;
  std::optional<std::expected<Transport*, ConnectError>> result;

  uv_timer_t timer;
  bool timer_open = false;
  uv_getaddrinfo_t gai;
  bool gai_pending = false;
  uv_connect_t creq;
  bool connect_pending = false;
  std::vector<sockaddr_storage> addrs;
  size_t next_addr = 0;
  int last_error = 0;
  StreamTransport* transport = nullptr;

  Attempt(Impl* o, uint64_t i) : owner(o), id(i) {
    gai.data = this;
    creq.data = this;
    timer.data = this;
  }

  void start(std::chrono::milliseconds timeout) {
    uv_timer_init(owner->loop, &timer);
    timer_open = true;
    if (timeout.count() > 0) {
      uv_timer_start(&timer, on_timeout, static_cast<uint64_t>(timeout.count()), 0);
    }
    sockaddr_storage literal;
    if (parse_ip_literal(host, port, &literal)) {
      addrs.push_back(literal);
      try_next();
      return;
    }
    addrinfo hints;
    std::memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    std::string service = std::to_string(port);
    int r = uv_getaddrinfo(owner->loop, &gai, on_resolved, host.c_str(), service.c_str(), &hints);
    if (r != 0) {
      complete(std::unexpected(
          ConnectError{ConnectError::Kind::DNS, "resolve " + host + ": " + uv_strerror(r)}));
      return;
    }
    gai_pending = true;
  }

  static void on_resolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* a = static_cast<Attempt*>(req->data);
    if (!guard::run("connect: resolved", [&] { a->resolved(status, res); })) {
      a->threw();
    }
  }

  void resolved(int status, addrinfo* res) {
    Attempt* a = this;
    a->gai_pending = false;
    if (a->state != State::RUNNING) {
      uv_freeaddrinfo(res);
      a->maybe_delete();
      return;
    }
    if (status < 0) {
      uv_freeaddrinfo(res);
      a->complete(std::unexpected(ConnectError{ConnectError::Kind::DNS,
                                               "resolve " + a->host + ": " + uv_strerror(status)}));
      return;
    }
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) {
        continue;
      }
      sockaddr_storage ss;
      std::memset(&ss, 0, sizeof(ss));
      std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
      a->addrs.push_back(ss);
    }
    uv_freeaddrinfo(res);
    if (a->addrs.empty()) {
      a->complete(std::unexpected(
          ConnectError{ConnectError::Kind::DNS, "resolve " + a->host + ": no addresses"}));
      return;
    }
    a->try_next();
  }

  void try_next() {
    while (next_addr < addrs.size()) {
      const sockaddr* addr = reinterpret_cast<const sockaddr*>(&addrs[next_addr++]);
      StreamTransport* t;
      if (use_tls) {
        t = new TlsTransport(owner->loop, ctx->ctx, ctx->sessions, session_key, tls, host);
      } else {
        t = new PlainTransport(owner->loop);
      }
      int r = t->init_tcp();
      if (r == 0) {
        uv_tcp_nodelay(t->tcp(), 1);
        r = uv_tcp_connect(&creq, t->tcp(), addr, on_connected);
      }
      if (r == 0) {
        transport = t;
        connect_pending = true;
        return;
      }
      last_error = r;
      t->close();
    }
    complete(std::unexpected(
        ConnectError{ConnectError::Kind::CONNECT,
                     "connect to " + host_port() + ": " + uv_strerror(last_error)}));
  }

  std::string host_port() const {
    if (host.find(':') != std::string::npos) {
      return "[" + host + "]:" + std::to_string(port);
    }
    return host + ":" + std::to_string(port);
  }

  static void on_connected(uv_connect_t* req, int status) {
    auto* a = static_cast<Attempt*>(req->data);
    if (!guard::run("connect: connected", [&] { a->connected(status); })) {
      a->threw();
    }
  }

  void connected(int status) {
    Attempt* a = this;
    a->connect_pending = false;
    if (a->state != State::RUNNING) {
      a->maybe_delete();
      return;
    }
    if (status < 0) {
      a->last_error = status;
      a->transport->close();
      a->transport = nullptr;
      a->try_next();
      return;
    }
    if (!a->use_tls) {
      Transport* t = a->transport;
      a->transport = nullptr;
      a->complete(t);
      return;
    }
    static_cast<TlsTransport*>(a->transport)->start_handshake(a);
  }

  void on_handshake(TlsTransport* t, const ConnectError* error) override {
    if (state != State::RUNNING) {
      return;
    }
    transport = nullptr;
    if (error != nullptr) {
      t->close();
      complete(std::unexpected(*error));
      return;
    }
    if (owner != nullptr) {
      owner->self->handshakes_++;
      if (t->session_reused()) {
        owner->self->resumed_++;
      }
    }
    complete(static_cast<Transport*>(t));
  }

  static void on_timeout(uv_timer_t* timer) {
    auto* a = static_cast<Attempt*>(timer->data);
    if (a->state == State::DELIVERING) {
      // The owner's callback is the last thing deliver() does: nothing to clean up after it.
      guard::run("connect: deliver", [a] { a->deliver(); });
      return;
    }
    if (!guard::run("connect: timeout", [a] { a->timed_out(); })) {
      a->threw();
    }
  }

  void timed_out() {
    Attempt* a = this;
    if (a->state != State::RUNNING) {
      return;
    }
    a->abort_work();
    a->result = std::unexpected(
        ConnectError{ConnectError::Kind::TIMEOUT, "connect to " + a->host_port() + ": timed out"});
    a->state = State::DELIVERING;
    a->deliver();
  }

  // Something in this attempt's own callbacks threw (logged): fail the connect with what it
  // is, unless an outcome is already on its way.
  void threw() {
    if (state != State::RUNNING) {
      return;
    }
    guard::run("connect: failing", [this] {
      abort_work();
      complete(std::unexpected(
          ConnectError{ConnectError::Kind::CONNECT,
                       "connect to " + host_port() + ": internal error"}));
    });
  }

  // Stops whatever is in progress; callbacks still owed by libuv arrive later and are ignored.
  void abort_work() {
    if (gai_pending) {
      uv_cancel(reinterpret_cast<uv_req_t*>(&gai));
    }
    if (transport != nullptr) {
      transport->close();
      transport = nullptr;
    }
  }

  // Records the outcome and delivers it on a later loop turn (never inside connect()).
  void complete(std::expected<Transport*, ConnectError> r) {
    if (state != State::RUNNING) {
      if (r.has_value()) {
        (*r)->close();
      }
      return;
    }
    state = State::DELIVERING;
    result = std::move(r);
    uv_timer_stop(&timer);
    uv_timer_start(&timer, on_timeout, 0, 0);
  }

  void deliver() {
    state = State::FINISHED;
    if (owner != nullptr) {
      owner->attempts.erase(id);
    }
    Done cb = std::move(done);
    auto r = std::move(*result);
    result.reset();
    close_timer();
    maybe_delete();  // safe: nothing below touches |this|
    cb(std::move(r));
  }

  void cancel() {
    if (state == State::FINISHED) {
      return;
    }
    if (state == State::DELIVERING && result && result->has_value()) {
      (**result)->close();
    }
    result.reset();
    state = State::FINISHED;
    abort_work();
    done = nullptr;
    close_timer();
    maybe_delete();
  }

  void close_timer() {
    if (timer_open) {
      timer_open = false;
      uv_timer_stop(&timer);
      uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_timer_closed);
    }
  }

  static void on_timer_closed(uv_handle_t* h) {
    auto* a = static_cast<Attempt*>(h->data);
    a->timer.data = nullptr;
    a->maybe_delete();
  }

  void maybe_delete() {
    if (state == State::FINISHED && !gai_pending && !connect_pending && !timer_open &&
        timer.data == nullptr) {
      delete this;
    }
  }
};

Connector::Impl::~Impl() {
  for (auto& [id, attempt] : attempts) {
    attempt->owner = nullptr;
    attempt->cancel();
  }
  attempts.clear();
  for (auto& [key, entry] : ctxs) {
    SSL_CTX_free(entry.ctx);
  }
}

const CtxEntry* Connector::Impl::get_ctx(const TlsClientOptions& options, const std::string& pin,
                                         std::string* error) {
  std::string key = options.ca_file + '\n' + std::to_string(options.min_version) + '\n' + pin;
  auto it = ctxs.find(key);
  if (it != ctxs.end()) {
    return &it->second;
  }
  SSL_CTX* ctx = detail::make_client_ctx(options.ca_file, options.min_version, pin, error);
  if (ctx == nullptr) {
    return nullptr;  // not cached: the file may be fixed later
  }
  CtxEntry entry{ctx, std::make_shared<detail::SessionCache>(max_sessions)};
  return &ctxs.emplace(key, std::move(entry)).first->second;
}

Connector::Connector(uv_loop_t* loop) : impl_(std::make_unique<Impl>(this, loop)) {}

Connector::~Connector() = default;

void Connector::set_max_sessions(size_t max_sessions) {
  impl_->max_sessions = max_sessions;
  for (auto& [key, entry] : impl_->ctxs) {
    entry.sessions->set_max_entries(max_sessions);
  }
}

size_t Connector::cached_sessions() const {
  size_t n = 0;
  for (const auto& [key, entry] : impl_->ctxs) {
    n += entry.sessions->size();
  }
  return n;
}

uint64_t Connector::connect(const std::string& host, uint16_t port, const TlsClientOptions* tls,
                            std::chrono::milliseconds timeout, Done done) {
  uint64_t id = impl_->next_id++;
  auto* a = new Impl::Attempt(impl_.get(), id);
  a->host = strip_brackets(host);
  a->port = port;
  a->done = std::move(done);
  impl_->attempts.emplace(id, a);
  if (tls != nullptr) {
    a->use_tls = true;
    a->tls = *tls;
    if (a->tls.server_name.empty()) {
      a->tls.server_name = a->host;
    } else {
      a->tls.server_name = strip_brackets(a->tls.server_name);
    }
    std::string pin;
    if (!tls->pinned_sha1.empty()) {
      pin = detail::normalize_pin(tls->pinned_sha1);
      if (pin.empty()) {
        uv_timer_init(impl_->loop, &a->timer);
        a->timer_open = true;
        a->complete(std::unexpected(
            ConnectError{ConnectError::Kind::TLS_VERIFY,
                         "certificate verify failed: pinned SHA-1 is not 40 hex digits (" +
                             a->tls.server_name + ")"}));
        return id;
      }
    }
    a->tls.pinned_sha1 = pin;
    std::string error;
    a->ctx = impl_->get_ctx(*tls, pin, &error);
    if (a->ctx == nullptr) {
      uv_timer_init(impl_->loop, &a->timer);
      a->timer_open = true;
      a->complete(std::unexpected(ConnectError{ConnectError::Kind::TLS_HANDSHAKE, error}));
      return id;
    }
    // The session key names the peer as verified, not just the address: a session proves
    // only what was checked when it was made.
    a->session_key = a->tls.server_name + '\n' + a->host + '\n' + std::to_string(port);
  }
  a->start(timeout);
  return id;
}

void Connector::cancel(uint64_t id) {
  auto it = impl_->attempts.find(id);
  if (it == impl_->attempts.end()) {
    return;
  }
  Impl::Attempt* a = it->second;
  impl_->attempts.erase(it);
  a->cancel();
}

}  // namespace miproxy::proxy
