#pragma once
// Shared by fuzz_downstream and fuzz_upstream: one real Worker (its loop driven here, no thread),
// a real config, router and snapshot, and fakes for everything outside the process: transports
// (downstream and upstream, proxy/transport.h's contract), the connector (Worker::set_connector)
// and token slots (auth/token.h). Events reach handlers only from pump(), between loop turns,
// never from inside a call the handler made.
//
// Invariant checks abort() with a message on stderr, so libFuzzer records the input.

#include <llhttp.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "config/config.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/worker.h"

namespace fuzzh {

using namespace miproxy;
using namespace miproxy::proxy;

[[noreturn]] inline void fail(const std::string& what, std::string_view detail = {}) {
  std::fprintf(stderr, "INVARIANT: %s\n", what.c_str());
  if (!detail.empty()) {
    // Printable bytes as they are, the rest escaped.
    std::string shown;
    for (char c : detail.substr(0, 4000)) {
      auto u = static_cast<unsigned char>(c);
      if (c == '\n' || (u >= 0x20 && u < 0x7f)) {
        shown.push_back(c);
      } else {
        char esc[8];
        std::snprintf(esc, sizeof esc, c == '\r' ? "\\r" : "\\x%02x", u);
        shown += esc;
      }
    }
    std::fprintf(stderr, "--- detail (%zu bytes) ---\n%s\n---\n", detail.size(), shown.c_str());
  }
  std::abort();
}

inline bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

class Harness;

// RFC 9110 §5.6.2 tchar, and field-vchar / SP / HTAB / obs-text (§5.5).
inline bool token_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}
inline bool field_char(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == '\t' || u >= 0x20 && u != 0x7f;
}

// One event a fake peer sends: bytes, end of stream, or a reset.
struct Event {
  enum class Kind { BYTES, END, RESET } kind = Kind::BYTES;
  std::string bytes;
};

class FakeTransport final : public Transport {
 public:
  FakeTransport(Harness* h, bool upstream, int fd) : h_(h), upstream_(upstream), fd_(fd) {}

  void set_handler(Handler* handler) override { handler_ = handler; }
  void read_start() override { reading_ = true; }
  void read_stop() override { reading_ = false; }
  void write(const uv_buf_t* bufs, size_t count) override;
  size_t write_queue_bytes() const override { return queued_; }
  void close() override {
    closed_ = true;
    handler_ = nullptr;
  }
  bool is_closing() const override { return closed_; }
  bool stale() const override { return stale_; }
  int fd() const override { return fd_; }

  // Delivers at most one event; true when something happened.
  bool deliver() {
    if (closed_) return false;
    if (queued_ > 0 && release_queue_) {
      queued_ = 0;
      if (handler_) handler_->on_drain();
      return true;
    }
    if (inbox_.empty()) return false;
    const Event& e = inbox_.front();
    if (!handler_) {
      if (reading_ || e.kind == Event::Kind::RESET) stale_ = true;
      return false;
    }
    if (e.kind != Event::Kind::RESET && !reading_) return false;
    Event ev = std::move(inbox_.front());
    inbox_.pop_front();
    Handler* handler = handler_;
    switch (ev.kind) {
      case Event::Kind::BYTES:
        handler->on_read(ev.bytes.data(), ev.bytes.size());
        break;
      case Event::Kind::END:
        eof_delivered_ = true;
        handler->on_eof();
        break;
      case Event::Kind::RESET:
        handler->on_error(UV_ECONNRESET, "connection reset by peer");
        break;
    }
    return true;
  }

  Harness* h_;
  bool upstream_;
  int fd_;
  Handler* handler_ = nullptr;
  bool reading_ = false;
  bool closed_ = false;
  bool stale_ = false;
  bool eof_delivered_ = false;
  // Downstream "slow client": writes stay queued (write_queue_bytes) until the next pump round.
  bool hold_writes_ = false;
  bool release_queue_ = false;
  size_t queued_ = 0;
  std::string written_;
  std::deque<Event> inbox_;
  // Upstream side: the fake server's view of what miproxy sent (see Harness::on_upstream_write).
  llhttp_t req_parser_{};
  size_t parsed_ = 0;
  struct Request {
    std::string method, url;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string field;
    bool in_value = false;
    size_t client_index = 0;  // which downstream response it belongs to
    bool complete = false;
    bool answered = false;
    std::string body;
  };
  std::vector<Request> requests_;
};

class FakeSlot final : public auth::TokenSlot {
 public:
  enum class Mode { READY, ACQUIRE_OK, ACQUIRE_FAIL };
  FakeSlot(Harness* h, std::string identity, std::string scope)
      : h_(h), identity_(std::move(identity)), scope_(std::move(scope)) {}
  std::shared_ptr<const auth::AccessToken> current() const override;
  void acquire(Executor& reply_to, std::function<void(auth::TokenResult)> done) override;
  void invalidate(const std::shared_ptr<const auth::AccessToken>&, const std::string&) override {
    invalidated_ = true;
  }
  const std::string& identity_name() const override { return identity_; }
  const std::string& scope() const override { return scope_; }
  Status status() const override { return {}; }

  Harness* h_;
  std::string identity_, scope_;
  bool invalidated_ = false;
};

class FakeConnector final : public Connector {
 public:
  FakeConnector(uv_loop_t* loop, Harness* h) : Connector(loop), h_(h) {}
  uint64_t connect(const std::string& host, uint16_t port, const TlsClientOptions* tls,
                   std::chrono::milliseconds timeout, Done done) override {
    uint64_t id = next_++;
    pending_[id] = Pending{host, std::move(done)};
    return id;
  }
  void cancel(uint64_t id) override { pending_.erase(id); }
  bool deliver();

  struct Pending {
    std::string host;
    Done done;
  };
  Harness* h_;
  uint64_t next_ = 1;
  std::map<uint64_t, Pending> pending_;
};

// How the fake upstream answers a request; chosen per request by the downstream fuzzer (header
// "x-fuzz-reply: <digit>"), or taken whole from the input by the upstream fuzzer.
using ReplyFn = std::function<void(Harness&, FakeTransport&, FakeTransport::Request&, bool head_done)>;

class Harness {
 public:
  Harness(const std::string& config_json, std::string listener_display) {
    log::set_level(log::Level::OFF);
    auto loaded = config::parse(config_json);
    if (!loaded) {
      for (const auto& d : loaded.error()) std::fprintf(stderr, "config: %s: %s\n", d.path.c_str(), d.message.c_str());
      std::abort();
    }
    cfg_ = loaded->config;
    server_ = std::make_unique<Server>(std::vector<BoundListener>{}, 1);
    worker_ = std::make_unique<Worker>(*server_, 0);
    worker_->set_connector(std::make_unique<FakeConnector>(worker_->loop(), this));
    listener_.spec = cfg_->listeners.at(0);
    listener_.display = std::move(listener_display);
    listener_.port = listener_.spec.port;
    // close_or_linger() shuts down the client's socket for writing: give it a real one.
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) std::abort();
    client_fd_ = sv[0];
    build_snapshot();
    worker_->publish(snap_);
    for (int i = 0; i < 4; ++i) uv_run(worker_->loop(), UV_RUN_NOWAIT);
    if (worker_->snapshot() != snap_) std::abort();
    baseline_handles_ = open_handles();
  }

  void build_snapshot() {
    auto snap = std::make_shared<Snapshot>(cfg_);
    snap->unrouted_metrics = metrics_.route("");
    snap->make_slot = [this](const std::string& identity, const std::string& scope) {
      return std::static_pointer_cast<auth::TokenSlot>(std::make_shared<FakeSlot>(this, identity, scope));
    };
    for (const auto& cr : snap->table.routes()) {
      RouteRuntime rt;
      const config::Route& r = *cr.route;
      if (r.scope != "auto") {
        rt.slot = std::make_shared<FakeSlot>(this, r.identity, r.scope);
      } else {
        rt.learned = std::make_shared<LearnedScope>(cfg_->limits.max_learned_scopes);
      }
      rt.metrics = metrics_.route(r.name);
      snap->routes.push_back(std::move(rt));
    }
    snap_ = snap;
  }

  // Open (not closing) handles of the loop.
  std::vector<uv_handle_t*> open_handles() {
    std::vector<uv_handle_t*> out;
    uv_walk(worker_->loop(), [](uv_handle_t* h, void* arg) {
      if (!uv_is_closing(h)) static_cast<std::vector<uv_handle_t*>*>(arg)->push_back(h);
    }, &out);
    return out;
  }

  // Per input: fresh fakes, forgotten learned scopes.
  void begin(FakeSlot::Mode token_mode, int connect_mode) {
    token_mode_ = token_mode;
    connect_mode_ = connect_mode;
    client_responses_ = 0;
    for (auto& rt : snap_->routes) {
      if (rt.learned) rt.learned = std::make_shared<LearnedScope>(cfg_->limits.max_learned_scopes);
    }
    client_ = new_transport(false);
    auto* conn = new ClientConn(*worker_, client_, listener_);
    worker_->add_conn(conn);
    conn->start();
  }

  FakeTransport* new_transport(bool upstream) {
    fakes_.push_back(std::make_unique<FakeTransport>(this, upstream, upstream ? -1 : client_fd_));
    FakeTransport* t = fakes_.back().get();
    if (upstream) {
      llhttp_init(&t->req_parser_, HTTP_REQUEST, &kUpstreamSettings);
      t->req_parser_.data = t;
    }
    return t;
  }

  bool conn_alive() const {
    return worker_->stats().active_connections.load(std::memory_order_relaxed) > 0;
  }

  // Runs the loop and delivers fake events until nothing moves.
  void pump() {
    int quiet = 0;
    for (int round = 0; round < 10000 && quiet < 3; ++round) {
      bool moved = false;
      for (size_t i = 0; i < fakes_.size(); ++i) {
        if (fakes_[i]->deliver()) moved = true;
      }
      if (static_cast<FakeConnector&>(worker_->connector()).deliver()) moved = true;
      if (client_ && client_->hold_writes_) client_->release_queue_ = !client_->release_queue_;
      uint64_t before = activity_;
      uv_run(worker_->loop(), UV_RUN_NOWAIT);
      if (activity_ != before || posts_ > 0) moved = true;
      quiet = moved ? 0 : quiet + 1;
      if (round == 9999) fail("pump never settled");
    }
  }

  // Time passes: every armed timer that is not the worker's own (the connection's idle, head,
  // response and lingering timers) fires now, as if its timeout had elapsed. Returns how many.
  int fire_timers() {
    std::vector<uv_timer_t*> due;
    for (uv_handle_t* handle : open_handles()) {
      if (handle->type != UV_TIMER || !uv_is_active(handle)) continue;
      if (std::find(baseline_handles_.begin(), baseline_handles_.end(), handle) != baseline_handles_.end()) continue;
      due.push_back(reinterpret_cast<uv_timer_t*>(handle));
    }
    for (uv_timer_t* t : due) {
      uv_timer_cb cb = t->timer_cb;
      uv_timer_stop(t);
      cb(t);
      pump();
    }
    return static_cast<int>(due.size());
  }

  // Ends the connection (EOF, then a reset if it is still open), empties the pool, and checks
  // that nothing is left: every fake closed, the loop back to its own handles.
  void finish() {
    if (conn_alive() && !client_->closed_) {
      client_->inbox_.push_back({Event::Kind::END, {}});
      pump();
    }
    if (conn_alive() && !client_->closed_) {
      client_->inbox_.push_back({Event::Kind::RESET, {}});
      pump();
    }
    // A peer's reset goes unseen while reading is stopped: the connection's timer ends it.
    for (int i = 0; i < 4 && conn_alive(); ++i) {
      if (fire_timers() == 0) break;
    }
    if (conn_alive()) {
      fail("client connection still open after its transport failed (transport closed " +
               std::to_string(client_->closed_) + ", reading " + std::to_string(client_->reading_) +
               ", events not delivered " + std::to_string(client_->inbox_.size()) + ")",
           client_->written_);
    }
    // Idle pooled connections: their server closes them (the pool drops them).
    for (auto& f : fakes_) {
      if (f->upstream_ && !f->closed_) f->inbox_.push_back({Event::Kind::RESET, {}});
    }
    pump();
    if (worker_->pool().idle_count() != 0) fail("the pool kept a connection its server reset");
    for (auto& f : fakes_) {
      if (!f->closed_) fail(f->upstream_ ? "an upstream transport was never closed" : "the client transport was never closed");
    }
    if (worker_->stats().upstream_open.load() != 0) {
      fail("upstream_open gauge is " + std::to_string(worker_->stats().upstream_open.load()) + " with no upstream open");
    }
    if (!static_cast<FakeConnector&>(worker_->connector()).pending_.empty()) fail("a connect is still pending");
    for (uv_handle_t* handle : open_handles()) {
      if (std::find(baseline_handles_.begin(), baseline_handles_.end(), handle) == baseline_handles_.end()) {
        fail(std::string("a ") + uv_handle_type_name(handle->type) + " handle was left open");
      }
    }
  }

  void end() {
    if (std::getenv("FUZZ_DEBUG")) {
      for (auto& f : fakes_) {
        std::fprintf(stderr, "=== %s wrote:\n%s\n", f->upstream_ ? "miproxy -> upstream" : "miproxy -> client",
                     f->written_.c_str());
      }
    }
    fakes_.clear();
    client_ = nullptr;
  }

  // The fake upstream: parses what miproxy sends and answers through |reply|.
  void on_upstream_write(FakeTransport& t);

  // Client-visible response heads so far (set by the target's own response parser).
  size_t client_responses_ = 0;
  std::function<void()> on_client_write;

  std::shared_ptr<const config::Config> cfg_;
  Metrics metrics_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Worker> worker_;
  BoundListener listener_;
  std::shared_ptr<Snapshot> snap_;
  std::vector<std::unique_ptr<FakeTransport>> fakes_;
  FakeTransport* client_ = nullptr;
  FakeSlot::Mode token_mode_ = FakeSlot::Mode::READY;
  int connect_mode_ = 0;   // 0: connects succeed; 1 DNS, 2 TLS verify, 3 timeout, 4 refused
  ReplyFn reply;
  uint64_t activity_ = 0;
  int posts_ = 0;
  int client_fd_ = -1;
  std::vector<uv_handle_t*> baseline_handles_;  // the worker's own
  std::string token_value_ = "fuzz.token-value_1";
  std::shared_ptr<const auth::AccessToken> token_ = [] {
    auto t = std::make_shared<auth::AccessToken>();
    t->value = SecretString(std::string("fuzz.token-value_1"));
    t->expires_at = auth::Clock::now() + std::chrono::hours(24 * 365);
    t->usable_until = t->expires_at;
    t->refresh_at = t->expires_at;
    t->source = "fuzz";
    return std::shared_ptr<const auth::AccessToken>(t);
  }();

  static const llhttp_settings_t kUpstreamSettings;
};

inline FakeTransport* req_owner(llhttp_t* p) { return static_cast<FakeTransport*>(p->data); }

inline const llhttp_settings_t Harness::kUpstreamSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    FakeTransport* t = req_owner(p);
    t->requests_.emplace_back();
    t->requests_.back().client_index = t->h_->client_responses_;
    return 0;
  };
  s.on_url = [](llhttp_t* p, const char* at, size_t n) {
    req_owner(p)->requests_.back().url.append(at, n);
    return 0;
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    auto& r = req_owner(p)->requests_.back();
    if (r.in_value || r.headers.empty()) {
      r.headers.emplace_back();
      r.in_value = false;
    }
    r.headers.back().first.append(at, n);
    return 0;
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    auto& r = req_owner(p)->requests_.back();
    r.in_value = true;
    r.headers.back().second.append(at, n);
    return 0;
  };
  s.on_headers_complete = [](llhttp_t* p) {
    FakeTransport* t = req_owner(p);
    auto& r = t->requests_.back();
    r.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(p)));
    int hosts = 0, auths = 0, te = 0, cl = 0;
    for (const auto& [name, value] : r.headers) {
      if (iequal(name, "host")) ++hosts;
      if (iequal(name, "authorization")) {
        ++auths;
        if (value != "Bearer " + t->h_->token_value_) fail("upstream got Authorization: " + value);
      }
      if (iequal(name, "transfer-encoding")) {
        ++te;
        if (!iequal(value, "chunked")) fail("upstream got Transfer-Encoding: " + value);
      }
      if (iequal(name, "content-length")) ++cl;
      if (name.empty()) fail("upstream got an empty header name");
    }
    if (hosts != 1) fail("upstream request with " + std::to_string(hosts) + " Host headers", t->written_);
    if (auths > 1) fail("upstream request with two Authorization headers", t->written_);
    if (te && cl) fail("upstream request with Transfer-Encoding and Content-Length", t->written_);
    if (cl > 1) fail("upstream request with two Content-Length headers", t->written_);
    if (r.url.empty() || r.url[0] != '/') fail("upstream request target " + r.url);
    if (t->h_->reply) t->h_->reply(*t->h_, *t, r, false);
    return 0;
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    req_owner(p)->requests_.back().body.append(at, n);
    return 0;
  };
  s.on_message_complete = [](llhttp_t* p) {
    FakeTransport* t = req_owner(p);
    auto& r = t->requests_.back();
    r.complete = true;
    if (t->h_->reply) t->h_->reply(*t->h_, *t, r, true);
    return 0;
  };
  return s;
}();

inline void FakeTransport::write(const uv_buf_t* bufs, size_t count) {
  if (closed_) return;
  ++h_->activity_;
  size_t n = 0;
  for (size_t i = 0; i < count; ++i) {
    written_.append(bufs[i].base, bufs[i].len);
    n += bufs[i].len;
  }
  if (upstream_) {
    h_->on_upstream_write(*this);
  } else {
    if (hold_writes_) {
      queued_ += n;
      release_queue_ = false;
    }
    if (h_->on_client_write) h_->on_client_write();
  }
}

inline void Harness::on_upstream_write(FakeTransport& t) {
  std::string_view fresh(t.written_.data() + t.parsed_, t.written_.size() - t.parsed_);
  t.parsed_ = t.written_.size();
  llhttp_errno_t err = llhttp_execute(&t.req_parser_, fresh.data(), fresh.size());
  if (err != HPE_OK) {
    fail(std::string("miproxy wrote an invalid HTTP request upstream: ") +
             llhttp_errno_name(err) + " " + (llhttp_get_error_reason(&t.req_parser_) ? llhttp_get_error_reason(&t.req_parser_) : ""),
         t.written_);
  }
}

inline std::shared_ptr<const auth::AccessToken> FakeSlot::current() const {
  return h_->token_mode_ == Mode::READY && !invalidated_ ? h_->token_ : nullptr;
}

inline void FakeSlot::acquire(Executor& reply_to, std::function<void(auth::TokenResult)> done) {
  Harness* h = h_;
  ++h->posts_;
  bool ok = h->token_mode_ != Mode::ACQUIRE_FAIL;
  reply_to.post([h, ok, done = std::move(done)] {
    --h->posts_;
    ++h->activity_;
    if (ok) {
      done(h->token_);
    } else {
      done(std::unexpected(auth::TokenError{"mi", "fuzz", "the token endpoint said \xff\xfe no"}));
    }
  });
}

inline bool FakeConnector::deliver() {
  if (pending_.empty()) return false;
  auto it = pending_.begin();
  Pending p = std::move(it->second);
  pending_.erase(it);
  ++h_->activity_;
  switch (h_->connect_mode_) {
    case 0: {
      FakeTransport* t = h_->new_transport(true);
      p.done(t);
      break;
    }
    case 1:
      p.done(std::unexpected(ConnectError{ConnectError::Kind::DNS, "no such host " + p.host}));
      break;
    case 2:
      p.done(std::unexpected(ConnectError{ConnectError::Kind::TLS_VERIFY, "certificate verify failed: self-signed (" + p.host + ")"}));
      break;
    case 3:
      p.done(std::unexpected(ConnectError{ConnectError::Kind::TIMEOUT, "timed out"}));
      break;
    default:
      p.done(std::unexpected(ConnectError{ConnectError::Kind::CONNECT, "connection refused"}));
      break;
  }
  return true;
}

// A client-side reader: llhttp in response mode over everything miproxy wrote to the client.
// HEAD requests are told apart by |head_at| (the requests' methods, in order).
struct ClientResponse {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool complete = false;
  std::string header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (iequal(n, name)) return v;
    }
    return "";
  }
  bool has(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (iequal(n, name)) return true;
    }
    return false;
  }
};

class ClientReader {
 public:
  explicit ClientReader(std::vector<bool> head_at) : head_at_(std::move(head_at)) {
    llhttp_settings_init(&s_);
    s_.on_message_begin = [](llhttp_t* p) {
      auto* r = static_cast<ClientReader*>(p->data);
      r->all_.emplace_back();
      r->in_value_ = false;
      return 0;
    };
    s_.on_status = [](llhttp_t* p, const char* at, size_t n) {
      static_cast<ClientReader*>(p->data)->all_.back().reason.append(at, n);
      return 0;
    };
    s_.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      auto* r = static_cast<ClientReader*>(p->data);
      auto& m = r->all_.back();
      if (r->in_value_ || m.headers.empty()) m.headers.emplace_back();
      r->in_value_ = false;
      m.headers.back().first.append(at, n);
      return 0;
    };
    s_.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
      auto* r = static_cast<ClientReader*>(p->data);
      r->in_value_ = true;
      r->all_.back().headers.back().second.append(at, n);
      return 0;
    };
    s_.on_headers_complete = [](llhttp_t* p) {
      auto* r = static_cast<ClientReader*>(p->data);
      auto& m = r->all_.back();
      m.status = llhttp_get_status_code(p);
      if (llhttp_get_http_major(p) != 1 || llhttp_get_http_minor(p) != 1) fail("response not HTTP/1.1");
      // What a strict RFC 9112 reader accepts, which llhttp 8.1 does not check for us.
      for (char c : m.reason) {
        if (!field_char(c)) fail("a control byte in the status line's reason", m.reason);
      }
      for (const auto& [name, value] : m.headers) {
        if (name.empty()) fail("an empty header name in a response");
        for (char c : name) {
          if (!token_char(c)) fail("a header name that is not a token: " + name);
        }
        for (char c : value) {
          if (!field_char(c)) fail("a control byte in the value of response header " + name, value);
        }
      }
      if (m.status < 200) return 1;  // a 1xx ends with its head
      size_t index = r->finals_++;
      if (r->on_head) r->on_head(index, m);
      bool head = index < r->head_at_.size() && r->head_at_[index];
      return head || m.status == 204 || m.status == 304 ? 1 : 0;
    };
    s_.on_body = [](llhttp_t* p, const char* at, size_t n) {
      static_cast<ClientReader*>(p->data)->all_.back().body.append(at, n);
      return 0;
    };
    s_.on_message_complete = [](llhttp_t* p) {
      auto* r = static_cast<ClientReader*>(p->data);
      r->all_.back().complete = true;
      return 0;
    };
    llhttp_init(&p_, HTTP_RESPONSE, &s_);
    p_.data = this;
  }
  ClientReader(const ClientReader&) = delete;

  void feed(std::string_view all) {
    std::string_view fresh = all.substr(parsed_);
    parsed_ = all.size();
    if (fresh.empty()) return;
    llhttp_errno_t err = llhttp_execute(&p_, fresh.data(), fresh.size());
    if (err != HPE_OK) {
      fail(std::string("miproxy wrote an invalid HTTP response to the client: ") + llhttp_errno_name(err) +
               " " + (llhttp_get_error_reason(&p_) ? llhttp_get_error_reason(&p_) : ""),
           all);
    }
  }
  // At the connection's close: true when the last response is cut short.
  bool truncated() {
    if (all_.empty() || all_.back().complete) return false;
    llhttp_errno_t err = llhttp_finish(&p_);
    return err != HPE_OK || !all_.back().complete;
  }
  // Final (>= 200) responses, in order.
  std::vector<const ClientResponse*> finals() const {
    std::vector<const ClientResponse*> out;
    for (const auto& m : all_) {
      if (m.status >= 200) out.push_back(&m);
    }
    return out;
  }

  std::function<void(size_t index, const ClientResponse&)> on_head;

 private:
  std::vector<bool> head_at_;
  llhttp_settings_t s_{};
  llhttp_t p_{};
  size_t parsed_ = 0;
  size_t finals_ = 0;
  bool in_value_ = false;
  std::deque<ClientResponse> all_;
};

// miproxy's own error: x-miproxy-error names the code and the JSON body says the same.
inline void check_own_error(const ClientResponse& r, bool head, std::string_view context) {
  std::string code = r.header("x-miproxy-error");
  bool found = false;
  for (const auto& e : error_table()) {
    if (e.code == code) {
      found = true;
      if (e.status != r.status) fail("error " + code + " with status " + std::to_string(r.status), context);
    }
  }
  if (!found) fail("unknown x-miproxy-error " + code, context);
  if (head) return;
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_discarded()) fail("error body is not JSON", r.body);
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object() ||
      !j["error"].contains("code") || j["error"]["code"] != code || !j["error"].contains("message")) {
    fail("error body does not name the code " + code, r.body);
  }
  if (!r.complete) fail("error response cut short", context);
}

}  // namespace fuzzh
