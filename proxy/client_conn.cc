#include <sys/socket.h>

#include <cstring>

#include "base/guard.h"
#include "base/json_line.h"
#include "base/log.h"
#include "proxy/admission.h"
#include "proxy/metrics.h"
#include "proxy/conn.h"
#include "proxy/worker.h"
#include "routing/router.h"

namespace miproxy::proxy {
namespace {

ClientConn* self(llhttp_t* p) { return static_cast<ClientConn*>(p->data); }

// Every callback runs through base/guard.h: a throw ends the parse with an error for this
// connection (llhttp_execute returns it), never the process.
const llhttp_settings_t kRequestSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    return guard::parser_call("client: message begin", [&] { return self(p)->on_message_begin(); });
  };
  s.on_method_complete = [](llhttp_t* p) {
    return guard::parser_call("client: method", [&] { return self(p)->on_method_complete(); });
  };
  s.on_url = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("client: url", [&] { return self(p)->on_url(at, n); });
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("client: header field",
                              [&] { return self(p)->on_header_field(at, n); });
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("client: header value",
                              [&] { return self(p)->on_header_value(at, n); });
  };
  s.on_header_value_complete = [](llhttp_t* p) {
    return guard::parser_call("client: header value complete",
                              [&] { return self(p)->on_header_value_complete(); });
  };
  s.on_headers_complete = [](llhttp_t* p) {
    return guard::parser_call("client: headers complete",
                              [&] { return self(p)->on_headers_complete(); });
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("client: body", [&] { return self(p)->on_body(at, n); });
  };
  s.on_message_complete = [](llhttp_t* p) {
    return guard::parser_call("client: message complete",
                              [&] { return self(p)->on_message_complete(); });
  };
  return s;
}();

// Splits an absolute-form target "http://host[:port]/path?q" into authority and path.
bool split_absolute(std::string_view url, std::string_view* authority, std::string_view* path) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return false;
  std::string_view scheme = url.substr(0, scheme_end);
  if (!iequals(scheme, "http") && !iequals(scheme, "https")) return false;
  std::string_view rest = url.substr(scheme_end + 3);
  size_t slash = rest.find_first_of("/?");
  *authority = rest.substr(0, slash);
  if (authority->empty() || authority->find('@') != std::string_view::npos) return false;
  *path = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  return true;
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": ");
  out.append(value);
  out.append("\r\n");
}

}  // namespace

ClientConn::ClientConn(Worker& worker, Transport* transport, const BoundListener& listener)
    : worker_(worker), transport_(transport), listener_(listener) {
  llhttp_init(&parser_, HTTP_REQUEST, &kRequestSettings);
  parser_.data = this;
  timer_ = new uv_timer_t;
  uv_timer_init(worker_.loop(), timer_);
  timer_->data = this;
  worker_.stats().active_connections.fetch_add(1, std::memory_order_relaxed);
}

ClientConn::~ClientConn() {
  worker_.stats().active_connections.fetch_sub(1, std::memory_order_relaxed);
}

void ClientConn::start() {
  transport_->set_handler(this);
  if (listener_.spec.kind == config::Listener::Kind::UNIX && !listener_.spec.allowed_uids.empty()) {
    struct ucred cred {};
    socklen_t len = sizeof cred;
    peer_allowed_ = false;
    if (getsockopt(transport_->fd(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
      peer_uid_ = cred.uid;
      for (uid_t u : listener_.spec.allowed_uids) {
        if (u == cred.uid) peer_allowed_ = true;
      }
    }
  }
  start_timer(worker_.snapshot()->config->limits.idle_timeout);
  update_reading();
}

void ClientConn::close() {
  if (closed_) return;
  closed_ = true;
  retire_exchange();  // its destructor releases the upstream side
  if (transport_) {
    transport_->set_handler(nullptr);
    transport_->close();
    transport_ = nullptr;
  }
  if (timer_) {
    timer_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
  worker_.remove_conn(this);  // deletes on a later loop turn
}

void ClientConn::drain() {
  draining_ = true;
  if (idle() && pending_.empty()) close();
}

void ClientConn::update_reading() {
  if (closed_ || !transport_) return;
  // While the parser is paused (waiting for a token or connection, or holding a pipelined
  // request until the response is out) reading goes on into pending_ up to a bound: stopping
  // and restarting reads costs two epoll_ctl calls per request.
  // Lingering (answered, discarding the rest of the request) always reads: that is its point.
  bool want = lingering_ ||
              (!body_paused_ && !(parse_paused_ && pending_.size() >= kMaxPendingBytes) &&
               !(parse_paused_ && close_after_response_) && !eof_ && !strict_.failed());
  if (want && !reading_) {
    transport_->read_start();
    reading_ = true;
  } else if (!want && reading_) {
    transport_->read_stop();
    reading_ = false;
  }
}

void ClientConn::start_timer(double seconds) {
  if (!timer_) return;
  timer_for_response_ = false;
  uv_timer_start(timer_, &ClientConn::on_timer, static_cast<uint64_t>(seconds * 1000), 0);
}

void ClientConn::arm_response_timer(double seconds) {
  if (!timer_) return;
  timer_for_response_ = true;
  uv_timer_start(timer_, &ClientConn::on_timer, static_cast<uint64_t>(seconds * 1000), 0);
}

void ClientConn::stop_timer() {
  if (timer_) uv_timer_stop(timer_);
}

void ClientConn::on_timer(uv_timer_t* timer) {
  auto* c = static_cast<ClientConn*>(timer->data);
  if (!c) return;
  // A throw while answering a timeout ends this connection only.
  if (!guard::run("client: timer", [&] { c->timer_fired(); })) {
    guard::run("client: close after a throw", [&] { c->close(); });
  }
}

void ClientConn::timer_fired() {
  ClientConn* c = this;
  if (c->lingering_) {
    count_limit_hit("lingering_timeout");
    c->close();
    return;
  }
  if (c->timer_for_response_) {
    c->timer_for_response_ = false;
    if (c->ex_) {
      c->ex_->on_response_timeout();
      return;
    }
  }
  if (c->head_bytes_ > 0 && !c->ex_) {
    // Slow or stalled request head (slowloris): answer 408 and close.
    c->respond_error(Error::REQUEST_TIMEOUT, "request head not received in time", true);
    return;
  }
  c->close();  // idle keep-alive connection
}

void ClientConn::on_read(const char* data, size_t len) {
  if (closed_) return;
  if (lingering_) return;  // the rest of an answered request: discarded
  if (strict_.failed()) return;  // reads are stopped; a read already under way is dropped
  size_t acceptable = strict_.feed(data, len);
  if (acceptable < len) {
    // Only what precedes the refused byte goes on; the rest is never read.
    len = acceptable;
    update_reading();
  }
  if (parse_paused_) {
    pending_.append(data, len);
    update_reading();
    return;
  }
  static const char kNothing = 0;
  execute(len == 0 ? &kNothing : data, len);
}

void ClientConn::execute(const char* data, size_t len) {
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (closed_) return;
  if (err == HPE_OK) {
    if (strict_.failed()) refuse_strict();
    return;
  }
  if (err == HPE_PAUSED) {
    const char* pos = llhttp_get_error_pos(&parser_);
    size_t used = pos ? static_cast<size_t>(pos - data) : len;
    pending_.assign(data + used, len - used);
    parse_paused_ = true;
    update_reading();
    return;
  }
  if (err == HPE_PAUSED_UPGRADE) {
    // Upgrade (WebSocket and the like) is not proxied; the response said Connection: close.
    parse_paused_ = true;
    close_after_response_ = true;
    update_reading();
    return;
  }
  refuse_malformed(err, llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_) : "");
}

void ClientConn::refuse_strict() {
  if (head_bytes_ == 0 && !ex_) {
    // The refused request has not begun for llhttp (its first byte was refused): what the
    // connection remembers of the previous request must not describe it.
    on_message_begin();
  }
  if (strict_.head_request()) method_ = "HEAD";
  refuse_malformed(HPE_OK, strict_.reason());
}

void ClientConn::refuse_malformed(llhttp_errno_t err, std::string reason) {
  if (error_answered_ || (ex_ && head_bytes_ == 0)) {
    close();
    return;
  }
  Error error = Error::BAD_REQUEST;
  if (err == HPE_USER && reason.starts_with("431")) {
    error = Error::HEADERS_TOO_LARGE;
    reason = reason.substr(4);
  }
  if (ex_ && ex_->response_head_sent()) {
    // The response is already streaming: the broken request can only end the connection.
    close();
    return;
  }
  // The upstream saw at most a truncated body, never a complete request: respond_error
  // retires the exchange, whose destructor closes that upstream connection.
  respond_error(error, "malformed HTTP request: " + reason, true);
}

bool ClientConn::output_backlogged() {
  if (!transport_ || transport_->write_queue_bytes() <=
                         worker_.snapshot()->config->limits.max_queued_response_bytes) {
    return false;
  }
  wait_drain_ = true;
  count_limit_hit("max_queued_response_bytes");
  return true;
}

void ClientConn::resume_parsing() {
  if (closed_ || !parse_paused_) return;
  // A client that pipelines requests without reading the responses: parse no further until
  // it reads (on_drain), so queued responses stay bounded.
  if (wait_drain_ || output_backlogged()) return;
  // While a forwarded request is complete but its response is not, later (pipelined) requests
  // stay unparsed so responses go out in order.
  if (ex_ && request_complete_) return;
  parse_paused_ = false;
  llhttp_resume(&parser_);
  // Always execute, even with no pending bytes: a message paused in on_headers_complete still
  // owes its on_message_complete (bodiless requests), which llhttp delivers on the next call.
  std::string buf = std::move(pending_);
  pending_.clear();
  static const char kNothing = 0;
  execute(buf.empty() ? &kNothing : buf.data(), buf.size());
  if (closed_) return;
  if (eof_ && ((ex_ && !request_complete_) || (!ex_ && !parse_paused_))) {
    // The client finished sending: a request cut short cannot complete, and with nothing
    // left to answer the connection is done.
    close();
    return;
  }
  update_reading();
}

void ClientConn::pause_parsing() {
  if (closed_ || parse_paused_) return;
  // Called from upstream callbacks, never inside execute(): from here bytes wait in pending_.
  parse_paused_ = true;
  llhttp_pause(&parser_);
  update_reading();
}

void ClientConn::set_body_backpressure(bool paused) {
  body_paused_ = paused;
  update_reading();
}

void ClientConn::on_eof() {
  eof_ = true;
  if (lingering_) {
    close();
    return;
  }
  update_reading();
  if (parse_paused_ && !pending_.empty()) {
    // Bytes of this (or a pipelined) request are still unparsed: finish them first.
    close_after_response_ = true;
    return;
  }
  if (ex_ && !request_complete_ && parse_paused_ && !has_request_body()) {
    // A bodiless request paused in on_headers_complete (waiting for a token or a fresh
    // connection) is complete: only its on_message_complete is still owed. Answer it, then
    // close (shutdown(SHUT_WR) right after the request).
    close_after_response_ = true;
    return;
  }
  if (ex_ && !request_complete_) {
    // The client went away (or half-closed) mid-request: give up on it.
    close();
    return;
  }
  if (ex_) {
    // Half-close after a complete request: finish the response, then close.
    close_after_response_ = true;
    return;
  }
  close();
}

void ClientConn::on_error(int code, const std::string& what) { close(); }

void ClientConn::on_drain() {
  if (closed_) return;
  if (ex_) ex_->client_drained();
  if (!ex_ && close_after_response_) {
    if (!lingering_) close_or_linger();
    return;
  }
  if (wait_drain_) {
    wait_drain_ = false;
    resume_parsing();
  }
}

int ClientConn::on_message_begin() {
  ++messages_begun_;
  headers_.clear();
  url_.clear();
  method_.clear();
  head_bytes_ = 1;
  metrics_ = nullptr;
  expect_continue_ = false;
  request_complete_ = false;
  error_answered_ = false;
  started_ = SteadyClock::now();
  bytes_in_ = 0;
  request_id_.clear();
  start_timer(worker_.snapshot()->config->limits.header_timeout);
  return 0;
}

int ClientConn::on_method_complete() {
  // Known before the head is: a HEAD request refused mid-head gets its 400 without a body.
  method_ = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(&parser_)));
  return 0;
}

int ClientConn::on_url(const char* at, size_t len) {
  url_.append(at, len);
  if (url_.size() > worker_.snapshot()->config->limits.max_uri_bytes) {
    llhttp_set_error_reason(&parser_, "431 request target too long");
    return HPE_USER;
  }
  return 0;
}

int ClientConn::on_header_field(const char* at, size_t len) {
  head_bytes_ += len;
  headers_.append_name(at, len);
  const auto& lim = worker_.snapshot()->config->limits;
  if (headers_.size() > lim.max_headers) {
    llhttp_set_error_reason(&parser_, "431 too many header fields");
    return HPE_USER;
  }
  if (head_bytes_ > lim.max_header_bytes) {
    llhttp_set_error_reason(&parser_, "431 request header too large");
    return HPE_USER;
  }
  return 0;
}

int ClientConn::on_header_value(const char* at, size_t len) {
  head_bytes_ += len;
  headers_.append_value(at, len);
  if (head_bytes_ > worker_.snapshot()->config->limits.max_header_bytes) {
    llhttp_set_error_reason(&parser_, "431 request header too large");
    return HPE_USER;
  }
  return 0;
}

int ClientConn::on_header_value_complete() {
  headers_.finish_value();
  return 0;
}

bool ClientConn::has_request_body() const {
  return (parser_.flags & F_CHUNKED) != 0 ||
         ((parser_.flags & F_CONTENT_LENGTH) != 0 && parser_.content_length > 0);
}

int ClientConn::on_headers_complete() {
  stop_timer();
  http_minor_ = llhttp_get_http_minor(&parser_);
  keep_alive_ = llhttp_should_keep_alive(&parser_) && !draining_;
  method_ = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(&parser_)));
  std::string_view expect;
  if (headers_.find(HeaderToken::EXPECT, &expect)) {
    expect_continue_ = iequals(expect, "100-continue");
  }
  if (strict_.failed() && strict_.messages_done() + 1 == messages_begun_) {
    // The strict reader already refused a later byte of this request (its body arrived with
    // the head): refused before an exchange exists, so not even the head goes upstream.
    respond_error(Error::BAD_REQUEST, std::string("malformed HTTP request: ") + strict_.reason(),
                  true);
    return HPE_PAUSED;
  }
  if (std::string problem = framing_problem(); !problem.empty()) {
    // Refused before an exchange exists: nothing of this request goes upstream. (llhttp 8.1
    // reports some of these only after this callback, when the head would already be out.)
    respond_error(Error::BAD_REQUEST, "malformed HTTP request: " + problem, true);
    return HPE_PAUSED;
  }
  return start_exchange();
}

std::string ClientConn::framing_problem() const {
  // RFC 9112 §6.1, §6.3: the only transfer coding miproxy forwards is chunked, alone (any other
  // coding would have to be decoded, or be dropped while the body stays encoded); chunked with
  // Content-Length is ambiguous framing.
  size_t te_count = headers_.count(HeaderToken::TRANSFER_ENCODING);
  if (te_count > 0) {
    if (te_count > 1) return "more than one Transfer-Encoding header";
    std::string_view te;
    headers_.find(HeaderToken::TRANSFER_ENCODING, &te);
    if (!iequals(te, "chunked")) {
      return "unsupported Transfer-Encoding '" + std::string(te) + "' (only chunked is accepted)";
    }
    if (headers_.count(HeaderToken::CONTENT_LENGTH) > 0) {
      return "Content-Length together with Transfer-Encoding";
    }
    if (http_minor_ == 0) return "Transfer-Encoding in an HTTP/1.0 request";
  }
  if (headers_.count(HeaderToken::CONTENT_LENGTH) > 1) return "more than one Content-Length header";
  // Upstreams read Content-Length as a signed 64-bit number at most.
  constexpr uint64_t kMaxContentLength = uint64_t{1} << 62;
  if ((parser_.flags & F_CONTENT_LENGTH) != 0 && parser_.content_length > kMaxContentLength) {
    return "Content-Length " + std::to_string(parser_.content_length) + " is too large";
  }
  return "";
}

int ClientConn::start_exchange() {
  auto bad = [&](Error e, const std::string& msg, bool close) {
    respond_error(e, msg, close || has_request_body());
    // Stop parsing this connection's bytes when it will close; otherwise skip to the next
    // message (a bodiless request's error is complete).
    return close_after_response_ ? HPE_PAUSED : 0;
  };

  if (!peer_allowed_) {
    return bad(Error::CLIENT_NOT_ALLOWED,
               "peer uid " + std::to_string(peer_uid_) + " is not in allowed_uids of listener " +
                   listener_.display,
               true);
  }
  if (llhttp_get_method(&parser_) == HTTP_CONNECT) {
    return bad(Error::METHOD_NOT_ALLOWED,
               "CONNECT tunnels are not supported: miproxy is not an open proxy", true);
  }
  if (parser_.upgrade) {
    return bad(Error::BAD_REQUEST, "protocol upgrades are not supported", true);
  }

  // Host: absolute-form authority wins (apps using HTTP_PROXY), else exactly one Host header.
  std::string_view host, path;
  size_t host_count = headers_.count(HeaderToken::HOST);
  if (host_count > 1) return bad(Error::BAD_REQUEST, "more than one Host header", true);
  if (!url_.empty() && url_[0] != '/') {
    if (!split_absolute(url_, &host, &path)) {
      return bad(Error::BAD_REQUEST, "unsupported request target", true);
    }
  } else {
    path = url_;
    if (host_count == 0) {
      if (http_minor_ >= 1) return bad(Error::BAD_REQUEST, "HTTP/1.1 request without Host", true);
      host = "";
    } else {
      headers_.find(HeaderToken::HOST, &host);
    }
  }
  if (const char* problem = authority_problem(host)) {
    return bad(Error::BAD_REQUEST,
               "invalid " + std::string(url_.starts_with('/') ? "Host" : "request target authority") +
                   " '" + std::string(host) + "': " + problem,
               true);
  }
  if (path.empty() || path[0] != '/') return bad(Error::BAD_REQUEST, "request path must start with /", true);

  log_path_ = redact_query(path);
  const auto& snap = worker_.snapshot();
  metrics_ = snap->unrouted_metrics.get();
  routing::MatchResult m = snap->table.match(host, path, method_);
  // Browsers (CSRF, DNS rebinding) and escaping paths are refused before anything else.
  if (auto refused = admission::admit(listener_.spec, headers_, host, !url_.starts_with('/'),
                                      m.route ? m.route->route : nullptr)) {
    return bad(refused->error, refused->message, false);
  }
  if (m.outcome == routing::MatchResult::Outcome::BAD_PATH ||
      m.outcome == routing::MatchResult::Outcome::BAD_HOST) {
    bool bad_path = m.outcome == routing::MatchResult::Outcome::BAD_PATH;
    return bad(bad_path ? Error::BAD_PATH : Error::BAD_REQUEST,
               "route '" + m.route->route->name + "' refuses " +
                   (bad_path ? "path '" + redact_query(path.substr(0, path.find('?'))) + "'"
                             : "host '" + routing::normalize_host(host) + "'") +
                   ": " + std::string(m.problem),
               false);
  }
  if (m.outcome == routing::MatchResult::Outcome::NO_ROUTE) {
    return bad(Error::NO_ROUTE,
               "no route matches host '" + routing::normalize_host(host) + "' path '" +
                   redact_query(path.substr(0, path.find('?'))) + "'",
               false);
  }
  const routing::CompiledRoute& cr = *m.route;
  const config::Route& route = *cr.route;
  size_t route_index = static_cast<size_t>(&cr - snap->table.routes().data());
  metrics_ = snap->routes[route_index].metrics.get();
  if (m.outcome == routing::MatchResult::Outcome::METHOD_NOT_ALLOWED) {
    return bad(Error::METHOD_NOT_ALLOWED,
               "route '" + route.name + "' does not allow method " + method_, false);
  }
  if (route.inbound_authorization == config::Route::InboundAuthorization::REJECT &&
      headers_.count(HeaderToken::AUTHORIZATION) > 0) {
    return bad(Error::BAD_REQUEST,
               "route '" + route.name +
                   "' rejects requests that carry their own Authorization header",
               false);
  }

  // Build the upstream request head (everything except Authorization and the final CRLF).
  Exchange::Params p;
  p.snapshot = snap;
  p.route_index = route_index;
  p.upstream = routing::resolve_upstream(cr, routing::normalize_host(host));
  std::string up_path = routing::upstream_path(cr, p.upstream, path);
  if (cr.storage) up_path = strip_sas_params(up_path);
  p.method = method_;
  p.chunked_body = (parser_.flags & F_CHUNKED) != 0;
  p.has_body = has_request_body();
  p.head_request = llhttp_get_method(&parser_) == HTTP_HEAD;

  std::string& h = p.head_prefix;
  h.reserve(512 + headers_.bytes());
  h.append(method_);
  h.push_back(' ');
  h.append(up_path);
  h.append(" HTTP/1.1\r\n");
  append_header(h, "Host", p.upstream.authority());

  bool has_connection = headers_.count(HeaderToken::CONNECTION) > 0;
  bool has_request_id = false;
  std::string_view client_version;
  bool has_version = false;
  const auto& rules = route.headers;
  for (size_t i = 0; i < headers_.size(); ++i) {
    HeaderToken t = headers_.token(i);
    std::string_view name = headers_.name(i);
    if (is_hop_by_hop(t) || t == HeaderToken::HOST || t == HeaderToken::AUTHORIZATION) continue;
    if (t == HeaderToken::CONTENT_LENGTH && p.chunked_body) continue;
    if (has_connection && t == HeaderToken::OTHER && headers_.connection_lists_name(name)) {
      continue;
    }
    // Expect means nothing in HTTP/1.0 and is not forwarded for such a client (RFC 9110 §10.1.1).
    if (t == HeaderToken::EXPECT && http_minor_ == 0) continue;
    if (t == HeaderToken::X_MS_VERSION && cr.storage) {
      client_version = headers_.value(i);
      has_version = true;
      continue;
    }
    bool skip = false;
    for (const auto& r : rules.remove) {
      if (iequals(r, name)) skip = true;
    }
    for (const auto& s : rules.set) {
      if (iequals(s.first, name)) skip = true;
    }
    if (skip) continue;
    if (t == HeaderToken::X_MS_CLIENT_REQUEST_ID) {
      has_request_id = true;
      request_id_ = std::string(headers_.value(i));
    }
    append_header(h, name, headers_.value(i));
  }
  for (const auto& s : rules.set) append_header(h, s.first, s.second);
  if (cr.storage) {
    std::string_view v = storage_version_to_send(p.upstream.host, has_version ? client_version : "");
    if (has_version && v != client_version && log::enabled(log::Level::DEBUG)) {
      log::debug("raised x-ms-version", {{"route", route.name},
                                         {"from", std::string(client_version)},
                                         {"to", std::string(v)}});
    }
    append_header(h, "x-ms-version", v);
  }
  if (!has_request_id) {
    request_id_ = new_uuid();
    append_header(h, "x-ms-client-request-id", request_id_);
  }
  if (p.chunked_body) append_header(h, "Transfer-Encoding", "chunked");

  ex_ = std::make_unique<Exchange>(*this, std::move(p));
  if (ex_->start()) return 0;
  if (closed_ || error_answered_) return HPE_PAUSED;
  return HPE_PAUSED;  // resumed by Exchange once the head is out
}

int ClientConn::on_body(const char* at, size_t len) {
  bytes_in_ += len;
  if (ex_) ex_->send_body(at, len);
  return 0;
}

int ClientConn::on_message_complete() {
  request_complete_ = true;
  if (ex_) {
    ex_->end_body();
    if (closed_) return HPE_PAUSED;
    // Hold further (pipelined) requests until this response is complete.
    return ex_ ? HPE_PAUSED : 0;
  }
  // An error miproxy answered itself: the next request may follow.
  head_bytes_ = 0;
  if (close_after_response_) return HPE_PAUSED;
  start_timer(worker_.snapshot()->config->limits.idle_timeout);
  return output_backlogged() ? HPE_PAUSED : 0;
}

void ClientConn::exchange_done(bool reusable) {
  if (!ex_) return;
  log_request(ex_.get(), ex_->status(), "");
  retire_exchange();
  head_bytes_ = 0;
  if (!reusable || !keep_alive_ || close_after_response_ || draining_ || !request_complete_) {
    close_after_response_ = true;
    if (transport_ && transport_->write_queue_bytes() == 0) close_or_linger();
    return;
  }
  start_timer(worker_.snapshot()->config->limits.idle_timeout);
  resume_parsing();
}

void ClientConn::exchange_failed_midstream(std::string_view error_code) {
  if (ex_) log_request(ex_.get(), ex_->status(), error_code);
  close();
}

void ClientConn::respond_error(Error error, const std::string& message, bool close_conn) {
  if (closed_) return;
  if (close_conn || draining_ || !keep_alive_) close_after_response_ = true;
  error_answered_ = true;
  ErrorContext ctx;
  if (ex_) ctx = {ex_->route().name, ex_->route().identity};
  std::string out;
  render_error_response(out, error, message, ctx, close_after_response_, method_ == "HEAD");
  if (transport_) transport_->write(out.data(), out.size());
  log_request(ex_.get(), error_info(error).status, error_info(error).code);
  retire_exchange();
  if (close_after_response_) {
    parse_paused_ = true;
    update_reading();
    if (transport_ && transport_->write_queue_bytes() == 0) close_or_linger();
    return;
  }
  head_bytes_ = 0;
  // Error answered for a bodiless request: the parser continues with the next message once
  // this one completes. If the parser was paused (async failure), resume it.
  if (parse_paused_) {
    start_timer(worker_.snapshot()->config->limits.idle_timeout);
    resume_parsing();
  }
}

void ClientConn::close_or_linger() {
  if (closed_ || lingering_) return;
  // The response is fully handed to the kernel (the write queue is empty). Linger only when
  // the client has not finished its request: then unread bytes are on their way.
  if (eof_ || !transport_ || request_complete_ || transport_->fd() < 0) {
    close();
    return;
  }
  lingering_ = true;
  retire_exchange();
  ::shutdown(transport_->fd(), SHUT_WR);  // plaintext downstream: nothing of ours is queued
  if (!reading_) {
    transport_->read_start();
    reading_ = true;
  }
  start_timer(worker_.snapshot()->config->limits.lingering_timeout);
}

void ClientConn::retire_exchange() {
  if (!ex_) return;
  // From here the exchange must not call back into this connection: its upstream side is
  // closed now, not when the worker deletes it on a later loop turn.
  ex_->abandon();
  worker_.retire(std::move(ex_));
}

void ClientConn::log_request(const Exchange* ex, int status, std::string_view error_code) {
  worker_.stats().requests.fetch_add(1, std::memory_order_relaxed);
  auto now = SteadyClock::now();
  double ms = std::chrono::duration<double, std::milli>(now - started_).count();
  if (!metrics_) metrics_ = worker_.snapshot()->unrouted_metrics.get();
  if (metrics_) metrics_->observe(method_, status, ms / 1000, ex ? ex->upstream_ms() / 1000 : 0);
  metrics_ = nullptr;
  if (!log::enabled(log::Level::INFO)) return;
  JsonLine line;
  line.add("time", log::now_rfc3339())
      .add("method", method_)
      .add("path", log_path_)
      .add("status", status)
      .add("bytes_in", bytes_in_)
      .add("duration_ms", ms);
  if (ex) {
    line.add("route", ex->route().name)
        .add("identity", ex->route().identity)
        .add("token_source", ex->token_source())
        .add("bytes_out", ex->bytes_out())
        .add("upstream_ms", ex->upstream_ms());
    if (!ex->object_id().empty()) line.add("object_id", ex->object_id());
    if (!ex->service_error().empty()) line.add("service_error", ex->service_error());
  }
  if (!request_id_.empty()) {
    line.add("client_request_id", request_id_);
  } else if (std::string_view id; !ex && headers_.find(HeaderToken::X_MS_CLIENT_REQUEST_ID, &id)) {
    // Answered before a route was chosen (NoRoute, BadRequest, ...): the app's own id still
    // lets the operator find the request.
    line.add("client_request_id", id);
  }
  if (!error_code.empty()) line.add("error", error_code);
  log::access_line(line.finish());
}

}  // namespace miproxy::proxy
