#include <nlohmann/json.hpp>

#include "auth/challenge.h"
#include "base/guard.h"
#include "base/log.h"
#include "proxy/conn.h"
#include "proxy/metrics.h"
#include "proxy/worker.h"

namespace miproxy::proxy {
namespace {

Exchange* self(llhttp_t* p) { return static_cast<Exchange*>(p->data); }

// Every callback runs through base/guard.h: a throw ends the parse with an error for this
// connection (llhttp_execute returns it), never the process.
const llhttp_settings_t kResponseSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    return guard::parser_call("upstream: message begin",
                              [&] { return self(p)->on_message_begin(); });
  };
  s.on_status = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("upstream: status", [&] { return self(p)->on_status(at, n); });
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("upstream: header field",
                              [&] { return self(p)->on_header_field(at, n); });
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("upstream: header value",
                              [&] { return self(p)->on_header_value(at, n); });
  };
  s.on_header_value_complete = [](llhttp_t* p) {
    return guard::parser_call("upstream: header value complete",
                              [&] { return self(p)->on_header_value_complete(); });
  };
  s.on_headers_complete = [](llhttp_t* p) {
    return guard::parser_call("upstream: headers complete",
                              [&] { return self(p)->on_headers_complete(); });
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("upstream: body", [&] { return self(p)->on_body(at, n); });
  };
  s.on_message_complete = [](llhttp_t* p) {
    return guard::parser_call("upstream: message complete",
                              [&] { return self(p)->on_message_complete(); });
  };
  return s;
}();

constexpr std::string_view kCrlf = "\r\n";

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" ||
         method == "PUT" || method == "DELETE";
}

// RFC 9110 §5.6.2: token = 1*tchar
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    bool tchar = (u >= '0' && u <= '9') || (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
                 std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!tchar) return false;
  }
  return true;
}

// reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
bool is_reason_phrase(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u != '\t' && (u < 0x20 || u == 0x7f)) return false;
  }
  return true;
}

uv_buf_t buf_of(std::string_view s) {
  return uv_buf_init(const_cast<char*>(s.data()), static_cast<unsigned>(s.size()));
}

}  // namespace

Exchange::Exchange(ClientConn& client, Params params)
    : client_(client),
      p_(std::move(params)),
      alive_(std::make_shared<bool>(true)),
      rheaders_(client.response_headers()),
      reason_(client.response_reason()),
      out_head_(client.response_out()) {
  rheaders_.clear();
  reason_.clear();
  out_head_.clear();
  const config::Route& r = route();
  const config::Config& cfg = *p_.snapshot->config;
  tls_.server_name = p_.upstream.host;
  tls_.ca_file = r.tls_ca_file.empty() ? cfg.tls.ca_file : r.tls_ca_file;
  tls_.min_version = cfg.tls.min_version;
  pool_key_ = p_.upstream.authority();
  pool_key_.push_back('|');
  pool_key_.append(tls_.ca_file);
  llhttp_init(&rparser_, HTTP_RESPONSE, &kResponseSettings);
  rparser_.data = this;
}

Exchange::~Exchange() {
  *alive_ = false;
  if (connecting_) client_.worker().connector().cancel(connect_id_);
  if (up_) {
    up_->set_handler(nullptr);
    client_.worker().close_upstream(up_);
    up_ = nullptr;
  }
}

const config::Route& Exchange::route() const {
  return *p_.snapshot->table.routes()[p_.route_index].route;
}

double Exchange::upstream_ms() const {
  if (!head_sent_) return 0;
  auto end = response_started_ ? response_at_ : SteadyClock::now();
  return std::chrono::duration<double, std::milli>(end - head_sent_at_).count();
}

bool Exchange::start() {
  const auto& rt = p_.snapshot->routes[p_.route_index];
  slot_ = rt.slot;
  if (!slot_ && rt.learned) slot_ = rt.learned->find(p_.upstream.authority());
  if (!slot_) {
    // Scope "auto", not learned yet: ask the upstream with a bodiless, token-less probe (as the
    // Azure SDKs do). The client's body stays unread until the real request goes out, so
    // nothing has to be buffered for the replay.
    discovering_ = true;
  } else {
    token_ = slot_->current();
    if (!token_) {
      request_token();
    } else {
      token_source_ = token_->source;
    }
  }
  acquire_upstream();
  return try_send_head();
}

void Exchange::request_token() {
  waiting_token_ = true;
  std::weak_ptr<bool> alive = alive_;
  slot_->acquire(client_.worker().executor(), [this, alive](auth::TokenResult result) {
    auto a = alive.lock();
    if (!a || !*a) return;
    on_token(std::move(result));
  });
}

void Exchange::send_discovery_head() {
  // The head without its body framing, with an empty body and no Authorization.
  std::string h;
  h.reserve(p_.head_prefix.size() + 32);
  size_t pos = 0;
  while (pos < p_.head_prefix.size()) {
    size_t eol = p_.head_prefix.find("\r\n", pos);
    if (eol == std::string::npos) eol = p_.head_prefix.size();
    std::string_view line(p_.head_prefix.data() + pos, eol - pos);
    std::string_view name = line.substr(0, line.find(':'));
    if (!iequals(name, "content-length") && !iequals(name, "transfer-encoding") &&
        !iequals(name, "expect")) {
      h.append(line);
      h.append("\r\n");
    }
    pos = eol + 2;
  }
  if (p_.has_body) h.append("Content-Length: 0\r\n");
  h.append("\r\n");
  up_->write(h.data(), h.size());
  head_sent_ = true;
  head_sent_at_ = SteadyClock::now();
  start_response_timer();
}

void Exchange::acquire_upstream() {
  up_ = client_.worker().pool().checkout(pool_key_);
  if (up_) {
    reused_ = true;
    client_.worker().stats().upstream_reused.fetch_add(1, std::memory_order_relaxed);
    up_->set_handler(this);
    up_->read_start();
    return;
  }
  reused_ = false;
  connecting_ = true;
  client_.worker().stats().upstream_connects.fetch_add(1, std::memory_order_relaxed);
  std::weak_ptr<bool> alive = alive_;
  auto timeout = std::chrono::milliseconds(static_cast<int64_t>(route().timeouts.connect * 1000));
  connect_id_ = client_.worker().connector().connect(
      p_.upstream.host, p_.upstream.port, &tls_, timeout,
      [this, alive](std::expected<Transport*, ConnectError> result) {
        auto a = alive.lock();
        if (!a || !*a) {
          if (result) (*result)->close();
          return;
        }
        on_connected(std::move(result));
      });
}

void Exchange::on_token(auth::TokenResult result) {
  waiting_token_ = false;
  if (!result) {
    const auth::TokenError& e = result.error();
    std::string msg = e.message;
    if (!e.source.empty()) msg = e.source + ": " + msg;
    fail(Error::TOKEN_ACQUISITION_FAILED, msg);
    return;
  }
  token_ = *result;
  token_source_ = token_->source;
  if (try_send_head()) client_.resume_parsing();
}

void Exchange::on_connected(std::expected<Transport*, ConnectError> result) {
  connecting_ = false;
  if (!result) {
    const ConnectError& e = result.error();
    std::string where = " (" + p_.upstream.authority() + ")";
    switch (e.kind) {
      case ConnectError::Kind::TLS_VERIFY:
      case ConnectError::Kind::TLS_HANDSHAKE:
        fail(Error::UPSTREAM_TLS_FAILED, e.message + where);
        return;
      case ConnectError::Kind::TIMEOUT:
        fail(Error::UPSTREAM_TIMEOUT, "connect timed out: " + e.message + where);
        return;
      default:
        fail(Error::UPSTREAM_UNAVAILABLE, e.message + where);
        return;
    }
  }
  up_ = *result;
  client_.worker().stats().upstream_open.fetch_add(1, std::memory_order_relaxed);
  up_->set_handler(this);
  up_->read_start();
  if (try_send_head()) client_.resume_parsing();
}

bool Exchange::try_send_head() {
  if (discovering_) {
    if (!head_sent_ && !failed_ && up_) send_discovery_head();
    return false;  // the client stays paused until the scope is known
  }
  if (head_sent_ || failed_ || !token_ || !up_) return false;
  if (token_->expires_at <= auth::Clock::now()) {
    // Never send an expired token (it may have expired while we waited for a connection).
    token_ = route_slot_token();
    if (!token_) {
      fail(Error::TOKEN_ACQUISITION_FAILED, "the cached token expired and no new one is available");
      return false;
    }
  }
  // The token goes straight from the cache into the TLS layer: no copy of it is kept here.
  static constexpr std::string_view kAuth = "Authorization: Bearer ";
  uv_buf_t bufs[4] = {buf_of(p_.head_prefix), buf_of(kAuth), buf_of(token_->value.reveal()),
                      buf_of("\r\n\r\n")};
  up_->write(bufs, 4);
  head_sent_ = true;
  head_sent_at_ = SteadyClock::now();
  if (!p_.has_body) {
    request_done_ = true;
    start_response_timer();
  } else if (timer_ != Timer::CLIENT_READ) {
    start_stall_timer(Timer::REQUEST_BODY);
  }
  return true;
}

std::shared_ptr<const auth::AccessToken> Exchange::route_slot_token() {
  return slot_ ? slot_->current() : nullptr;
}

void Exchange::send_body(const char* data, size_t len) {
  if (!up_ || failed_ || len == 0) return;
  body_bytes_sent_ = true;
  if (p_.chunked_body) {
    std::string hdr;
    append_chunk_header(hdr, len);
    uv_buf_t bufs[3] = {buf_of(hdr), uv_buf_init(const_cast<char*>(data), len), buf_of(kCrlf)};
    up_->write(bufs, 3);
  } else {
    up_->write(data, len);
  }
  if (timer_ == Timer::REQUEST_BODY) start_stall_timer(Timer::REQUEST_BODY);  // progress
  if (up_->write_queue_bytes() > kHighWatermark) client_.set_body_backpressure(true);
}

void Exchange::end_body() {
  if (request_done_) return;
  request_done_ = true;
  if (up_ && !failed_ && p_.chunked_body) up_->write(kLastChunk.data(), kLastChunk.size());
  // A client that is not reading an early response keeps that deadline (client_drained moves
  // on to the response timeout).
  if (!response_done_ && timer_ != Timer::CLIENT_READ) start_response_timer();
}

void Exchange::on_drain() {
  // Upstream accepted everything queued: the client may send more body.
  client_.set_body_backpressure(false);
  if (timer_ == Timer::REQUEST_BODY) start_stall_timer(Timer::REQUEST_BODY);  // progress
}

void Exchange::client_drained() {
  if (upstream_paused_ && up_) {
    upstream_paused_ = false;
    up_->read_start();
  }
  if (timer_ == Timer::CLIENT_READ && !response_done_) {
    // The client took what was queued: upstream reads are timed again (or the request body,
    // when the answer came early).
    if (request_done_) {
      start_response_timer();
    } else {
      start_stall_timer(Timer::REQUEST_BODY);
    }
  }
}

void Exchange::start_response_timer() {
  // The connection's own timer (idle while a request is in flight) measures the response:
  // no timer handle is created or closed per request.
  timer_ = Timer::RESPONSE;
  client_.arm_response_timer(route().timeouts.response);
}

void Exchange::stop_response_timer() {
  if (timer_ == Timer::NONE) return;
  timer_ = Timer::NONE;
  client_.stop_timer();
}

void Exchange::start_stall_timer(Timer kind) {
  timer_ = kind;
  if (kind == Timer::CLIENT_READ) {
    Transport* down = client_.transport();
    stall_queue_bytes_ = down ? down->write_queue_bytes() : 0;
  }
  client_.arm_response_timer(p_.snapshot->config->limits.body_stall_timeout);
}

void Exchange::on_stall_timeout() {
  double limit = p_.snapshot->config->limits.body_stall_timeout;
  std::string secs = std::to_string(static_cast<int>(limit));
  if (timer_ == Timer::CLIENT_READ) {
    Transport* down = client_.transport();
    size_t queued = down ? down->write_queue_bytes() : 0;
    if (queued < stall_queue_bytes_) {
      start_stall_timer(Timer::CLIENT_READ);  // the client read some: still making progress
      return;
    }
    timer_ = Timer::NONE;
    count_limit_hit("body_stall_timeout");
    log::warn("client stopped reading the response: closing both sides",
              {{"route", route().name}, {"queued_bytes", queued},
               {"limit", "limits.body_stall_timeout"}, {"seconds", limit}});
    failed_ = true;
    release_upstream(false);
    client_.exchange_failed_midstream("RequestTimeout");  // may retire this exchange
    return;
  }
  timer_ = Timer::NONE;
  count_limit_hit("body_stall_timeout");
  // The upstream stopped taking the body (its queue holds bytes, the client is paused for it),
  // or the client stopped sending it.
  bool upstream_stalled = up_ && up_->write_queue_bytes() > 0;
  if (response_head_sent_) {
    log::warn("request body stalled after the response started: closing both sides",
              {{"route", route().name}, {"upstream_stalled", upstream_stalled},
               {"limit", "limits.body_stall_timeout"}, {"seconds", limit}});
    failed_ = true;
    release_upstream(false);
    client_.exchange_failed_midstream("RequestTimeout");  // may retire this exchange
    return;
  }
  if (upstream_stalled) {
    fail(Error::UPSTREAM_TIMEOUT,
         "upstream " + p_.upstream.authority() + " took no request body bytes for " + secs +
             " s (limits.body_stall_timeout)",
         true);
    return;
  }
  fail(Error::REQUEST_TIMEOUT,
       "request body stalled: no bytes for " + secs + " s (limits.body_stall_timeout)", true);
}

void Exchange::on_response_timeout() {
  Exchange* ex = this;
  if (timer_ == Timer::REQUEST_BODY || timer_ == Timer::CLIENT_READ) {
    on_stall_timeout();
    return;
  }
  timer_ = Timer::NONE;
  if (ex->response_done_) return;
  if (!ex->response_head_sent_) {
    if (ex->response_started_) count_limit_hit("response_head_timeout");
    ex->release_upstream(false);
    ex->fail(Error::UPSTREAM_TIMEOUT,
             "no response from " + ex->p_.upstream.authority() + " within " +
                 std::to_string(static_cast<int>(ex->route().timeouts.response)) + " s");
    return;
  }
  ex->release_upstream(false);
  ex->client_.exchange_failed_midstream();
}

void Exchange::fail(Error error, const std::string& message, bool close) {
  if (failed_) return;
  failed_ = true;
  release_upstream(!head_sent_);
  log::warn("request failed", {{"route", route().name}, {"identity", route().identity},
                               {"status", error_info(error).status}, {"code", error_info(error).code},
                               {"message", message}});
  // Last action: the client may retire (and later delete) this exchange.
  client_.respond_error(error, message, close);
}

void Exchange::release_upstream(bool reusable) {
  if (!up_) return;
  Transport* t = up_;
  up_ = nullptr;
  t->set_handler(nullptr);
  if (reusable && !t->is_closing()) {
    client_.worker().pool().checkin(pool_key_, t, route().timeouts.idle);
  } else {
    client_.worker().close_upstream(t);
  }
}

void Exchange::upstream_broken(const std::string& what) {
  if (failed_ || response_done_) return;
  // Replay only what can be replayed whole: no body byte read from the app yet, and a method
  // that is idempotent (RFC 9110 §9.2.2), so a request the server may have acted on is never
  // sent twice. Anything else fails visibly.
  bool can_retry = reused_ && !retried_ && !response_started_ && !body_bytes_sent_ &&
                   is_idempotent(p_.method);
  release_upstream(false);
  if (can_retry) {
    // A pooled connection the server had closed: replay the head once on a fresh one. Until
    // the new head is out the client's parser stays paused, so no body byte is read (and
    // dropped) while there is no upstream to take it.
    retried_ = true;
    head_sent_ = false;
    if (!request_done_) client_.pause_parsing();
    acquire_upstream();
    if (try_send_head()) client_.resume_parsing();
    return;
  }
  if (response_head_sent_) {
    failed_ = true;
    client_.exchange_failed_midstream();
    return;
  }
  fail(Error::UPSTREAM_PROTOCOL_ERROR,
       "upstream " + p_.upstream.authority() + " closed the connection: " + what);
}

void Exchange::on_read(const char* data, size_t len) {
  if (!response_started_) {
    response_started_ = true;
    response_at_ = SteadyClock::now();
  }
  if (timer_ == Timer::RESPONSE && !response_done_ && response_head_sent_) {
    // Once the head is complete, the response timeout bounds the gap between body reads. The
    // head itself has one deadline from the request's end: a trickling head is not re-armed.
    client_.arm_response_timer(route().timeouts.response);
  }
  llhttp_errno_t err = llhttp_execute(&rparser_, data, len);
  flush_head();
  if (done_pending_) {
    done_pending_ = false;
    finish();  // may retire this exchange: nothing after it
    return;
  }
  if (err == HPE_OK || err == HPE_PAUSED) return;
  std::string reason = llhttp_get_error_reason(&rparser_) ? llhttp_get_error_reason(&rparser_) : "";
  release_upstream(false);
  if (response_head_sent_) {
    failed_ = true;
    client_.exchange_failed_midstream();
    return;
  }
  fail(Error::UPSTREAM_PROTOCOL_ERROR, "malformed response from upstream: " + reason);
}

void Exchange::abandon() {
  *alive_ = false;
  failed_ = true;
  timer_ = Timer::NONE;
  if (connecting_) {
    client_.worker().connector().cancel(connect_id_);
    connecting_ = false;
  }
  if (up_) {
    up_->set_handler(nullptr);
    client_.worker().close_upstream(up_);
    up_ = nullptr;
  }
}

void Exchange::flush_head() {
  if (out_head_.empty()) return;
  if (Transport* down = client_.transport()) down->write(out_head_.data(), out_head_.size());
  out_head_.clear();
}

void Exchange::on_eof() {
  if (response_started_ && llhttp_message_needs_eof(&rparser_)) {
    llhttp_finish(&rparser_);
    flush_head();
    if (done_pending_) {
      done_pending_ = false;
      release_upstream(false);
      finish();
      return;
    }
  }
  upstream_broken("end of stream");
}

void Exchange::on_error(int code, const std::string& what) { upstream_broken(what); }

int Exchange::on_message_begin() {
  rheaders_.clear();
  reason_.clear();
  response_head_bytes_ = 0;
  return 0;
}

int Exchange::count_head_bytes(size_t len) {
  // Status line and header fields together, before they are stored: a huge status line or
  // head never grows memory past the limit.
  response_head_bytes_ += len;
  if (response_head_bytes_ <= p_.snapshot->config->limits.max_response_header_bytes) return 0;
  count_limit_hit("max_response_header_bytes");
  llhttp_set_error_reason(&rparser_, "response head exceeds limits.max_response_header_bytes");
  return HPE_USER;
}

int Exchange::on_status(const char* at, size_t len) {
  if (int rc = count_head_bytes(len)) return rc;
  reason_.append(at, len);
  return 0;
}

int Exchange::on_header_field(const char* at, size_t len) {
  if (int rc = count_head_bytes(len)) return rc;
  rheaders_.append_name(at, len);
  return 0;
}

int Exchange::on_header_value(const char* at, size_t len) {
  if (int rc = count_head_bytes(len)) return rc;
  rheaders_.append_value(at, len);
  return 0;
}

int Exchange::on_header_value_complete() {
  rheaders_.finish_value();
  return 0;
}

int Exchange::on_headers_complete() {
  int status = llhttp_get_status_code(&rparser_);
  // llhttp 8.1 accepts empty header names (and, after a bare CR, a line it reads from the
  // middle): such a field is refused, never forwarded.
  for (size_t i = 0; i < rheaders_.size(); ++i) {
    if (!is_token(rheaders_.name(i))) {
      llhttp_set_error_reason(&rparser_, "a response header name that is not a token");
      return HPE_USER;
    }
  }
  if (status < 200) {
    // Only an HTTP/1.1 client that asked for it gets "100 Continue" (RFC 9110 §10.1.1).
    if (status == 100 && client_.transport() && client_.http_minor() >= 1 &&
        client_.expects_continue()) {
      // Relay "100 Continue" so a client using Expect: 100-continue sends its body.
      static constexpr std::string_view k100 = "HTTP/1.1 100 Continue\r\n\r\n";
      client_.transport()->write(k100.data(), k100.size());
    }
    // A 1xx response ends with its head (RFC 9110 §15.2): a Content-Length or chunked framing
    // on it is not content. llhttp 8.1 would deliver such bytes as a body (except for 100),
    // and they would reach the client before any response head.
    return 1;
  }
  status_ = status;
  bool no_body = p_.head_request || status == 204 || status == 304;
  if ((discovering_ || status == 401) && handle_challenge(status)) {
    discard_ = true;
    return no_body ? 1 : 0;
  }
  bool has_length = (rparser_.flags & F_CONTENT_LENGTH) != 0;
  bool keep_client = client_.client_keep_alive();
  if (!no_body && !has_length) {
    if (client_.http_minor() >= 1) {
      rechunk_ = true;
    } else {
      close_delimited_ = true;
      keep_client = false;
    }
  }
  if (status == 401 || status == 403) {
    std::string_view code;
    if (rheaders_.find_name("x-ms-error-code", &code)) service_error_ = std::string(code);
    log::warn("upstream denied the request",
              {{"route", route().name}, {"identity", route().identity},
               {"object_id", token_ ? token_->object_id : ""}, {"status", status},
               {"service_error", service_error_}});
  }

  std::string& h = out_head_;  // built in place: the connection reuses its capacity
  h.clear();
  h.reserve(256 + rheaders_.bytes());
  h.append("HTTP/1.1 ");
  h.append(std::to_string(status));
  h.push_back(' ');
  // The upstream's reason phrase, unless it is empty or holds bytes RFC 9112 §4 does not
  // allow there (llhttp 8.1 lets NUL and other control bytes through): then the standard one.
  h.append(reason_.empty() || !is_reason_phrase(reason_) ? reason_phrase(status)
                                                         : std::string_view(reason_));
  h.append("\r\n");
  bool has_connection = rheaders_.count(HeaderToken::CONNECTION) > 0;
  for (size_t i = 0; i < rheaders_.size(); ++i) {
    HeaderToken t = rheaders_.token(i);
    if (is_hop_by_hop(t)) continue;
    // A 204 has no content, and says no Content-Length (RFC 9110 §8.6).
    if (t == HeaderToken::CONTENT_LENGTH && (rechunk_ || close_delimited_ || status == 204)) {
      continue;
    }
    if (has_connection && t == HeaderToken::OTHER && rheaders_.connection_lists_name(rheaders_.name(i))) {
      continue;
    }
    h.append(rheaders_.name(i));
    h.append(": ");
    h.append(rheaders_.value(i));
    h.append("\r\n");
  }
  if (rechunk_) h.append("Transfer-Encoding: chunked\r\n");
  // An answer that comes while the app is still uploading ends the connection (the rest of
  // the body is read and discarded, see ClientConn::close_or_linger).
  if (p_.has_body && !request_done_) keep_client = false;
  if (!keep_client || client_.worker().draining()) h.append("Connection: close\r\n");
  h.append("\r\n");
  // Held until the first body bytes (or the end of this read) so that a small response leaves
  // in one write.
  response_head_sent_ = true;
  return no_body ? 1 : 0;
}

int Exchange::on_body(const char* at, size_t len) {
  Transport* down = client_.transport();
  if (!down || discard_) return 0;
  bytes_out_ += len;
  uv_buf_t bufs[4];
  size_t n = 0;
  if (!out_head_.empty()) bufs[n++] = buf_of(out_head_);
  std::string hdr;
  if (rechunk_) {
    append_chunk_header(hdr, len);
    bufs[n++] = buf_of(hdr);
  }
  bufs[n++] = uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(len));
  if (rechunk_) bufs[n++] = buf_of(kCrlf);
  down->write(bufs, n);
  out_head_.clear();
  if (down->write_queue_bytes() > kHighWatermark && up_ && !upstream_paused_) {
    upstream_paused_ = true;
    up_->read_stop();
    // Not the upstream's delay from here: the client must take its bytes.
    start_stall_timer(Timer::CLIENT_READ);
  }
  return 0;
}

int Exchange::on_message_complete() {
  if (status_ == 0) return 0;  // the end of a 1xx interim response
  if (discard_) {
    stop_response_timer();
    done_pending_ = true;
    return HPE_PAUSED;
  }
  response_done_ = true;
  if (rechunk_) out_head_.append(kLastChunk);
  flush_head();
  stop_response_timer();
  done_pending_ = true;
  return HPE_PAUSED;  // finish() runs after llhttp_execute returns
}

bool Exchange::handle_challenge(int status) {
  std::string_view www;
  rheaders_.find_name("www-authenticate", &www);
  auto challenge = auth::parse_bearer_challenge(www);
  const config::Route& r = route();
  if (discovering_) {
    if (status == 401 && challenge) {
      std::string scope = auth::scope_from_challenge(*challenge, p_.upstream.host);
      if (scope.empty()) {
        deferred_error_ = Error::TOKEN_ACQUISITION_FAILED;
        deferred_message_ = "scope \"auto\": the upstream's challenge names resource '" +
                            (challenge->scope.empty() ? challenge->resource : challenge->scope) +
                            "', which is not in the domain of " + p_.upstream.host +
                            "; refused (no token sent)";
        log::warn("refused a challenge", {{"route", r.name}, {"message", deferred_message_}});
        return true;
      }
      auto slot = p_.snapshot->make_slot ? p_.snapshot->make_slot(r.identity, scope) : nullptr;
      if (!slot) {
        deferred_error_ = Error::TOKEN_ACQUISITION_FAILED;
        deferred_message_ = "scope \"auto\": no token source for the learned scope " + scope;
        return true;
      }
      p_.snapshot->routes[p_.route_index].learned->store(p_.upstream.authority(), slot);
      log::info("learned scope from the upstream's challenge",
                {{"route", r.name}, {"upstream", p_.upstream.authority()}, {"scope", scope},
                 {"tenant", challenge->tenant}});
      slot_ = std::move(slot);
      restart_ = true;
      return true;
    }
    if (!p_.has_body) {
      // The upstream answered without asking for a token: that is the answer.
      discovering_ = false;
      token_source_ = "none";
      return false;
    }
    deferred_error_ = Error::TOKEN_ACQUISITION_FAILED;
    deferred_message_ = "scope \"auto\": the upstream answered " + std::to_string(status) +
                        " without a Bearer challenge; set the route's scope explicitly";
    return true;
  }
  // A token was sent and refused. CAE (insufficient_claims) or a revoked token (invalid_token):
  // drop it from the cache so the next acquisition fetches a new one (with the claims), and
  // replay once when the request has no body to replay.
  if (!challenge || !token_ || !slot_) return false;
  if (challenge->error != "insufficient_claims" && challenge->error != "invalid_token") {
    return false;
  }
  slot_->invalidate(token_, challenge->claims);
  log::warn("upstream rejected the token",
            {{"route", r.name}, {"identity", r.identity}, {"error", challenge->error},
             {"object_id", token_->object_id}, {"replayed", !p_.has_body && !challenge_retried_}});
  if (p_.has_body || challenge_retried_) return false;  // pass the 401 through
  challenge_retried_ = true;
  restart_ = true;
  return true;
}

void Exchange::restart() {
  restart_ = false;
  discard_ = false;
  release_upstream(llhttp_should_keep_alive(&rparser_) && (request_done_ || discovering_));
  llhttp_init(&rparser_, HTTP_RESPONSE, &kResponseSettings);
  rparser_.data = this;
  status_ = 0;
  head_sent_ = false;
  response_started_ = false;
  response_head_sent_ = false;
  response_done_ = false;
  rechunk_ = false;
  close_delimited_ = false;
  upstream_paused_ = false;
  discovering_ = false;
  reused_ = false;
  retried_ = false;
  token_ = nullptr;
  stop_response_timer();
  // After a rejection, current() may still show the rejected token until the control thread
  // has processed invalidate(); acquire() is ordered after it, so it yields a fresh token.
  token_ = challenge_retried_ ? nullptr : slot_->current();
  if (!token_) {
    request_token();
  } else {
    token_source_ = token_->source;
  }
  acquire_upstream();
  if (try_send_head()) client_.resume_parsing();
}

void Exchange::finish() {
  if (discard_) {
    if (restart_) {
      restart();
      return;
    }
    discard_ = false;
    release_upstream(llhttp_should_keep_alive(&rparser_) && !p_.has_body);
    fail(deferred_error_, deferred_message_);
    return;
  }
  bool upstream_reusable = request_done_ && llhttp_should_keep_alive(&rparser_) && !close_delimited_;
  release_upstream(upstream_reusable);
  bool client_reusable = !close_delimited_;
  client_.exchange_done(client_reusable);  // may retire this exchange: nothing after it
}

}  // namespace miproxy::proxy
