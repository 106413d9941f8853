#include "proxy/fetcher.h"

#include <llhttp.h>

#include <cctype>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>

#include "base/ascii.h"
#include "base/guard.h"

namespace miproxy::proxy {
namespace {

using auth::FetchError;

struct ParsedUrl {
  bool https = false;
  std::string host;         // without brackets
  std::string host_header;  // as sent in Host: (brackets kept, port when not the default)
  uint16_t port = 0;
  std::string target;   // path and query
  std::string display;  // scheme://authority/path, no query (for messages)
};

std::optional<ParsedUrl> parse_url(std::string_view url) {
  ParsedUrl out;
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view scheme = url.substr(0, scheme_end);
  if (iequals(scheme, "https")) {
    out.https = true;
  } else if (!iequals(scheme, "http")) {
    return std::nullopt;
  }
  std::string_view rest = url.substr(scheme_end + 3);
  size_t auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  std::string_view tail = auth_end == std::string_view::npos ? "" : rest.substr(auth_end);
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return std::nullopt;
  }
  std::string_view host;
  std::string_view port_text;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos || close == 1) {
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return std::nullopt;
      }
      port_text = after.substr(1);
    }
  } else {
    size_t colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
    }
  }
  if (host.empty()) {
    return std::nullopt;
  }
  for (char c : host) {
    if (std::isspace(static_cast<unsigned char>(c)) ||
        std::iscntrl(static_cast<unsigned char>(c))) {
      return std::nullopt;
    }
  }
  uint16_t default_port = out.https ? 443 : 80;
  out.port = default_port;
  if (!port_text.empty()) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || p != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return std::nullopt;
    }
    out.port = static_cast<uint16_t>(value);
  }
  out.host = std::string(host);
  bool v6 = host.find(':') != std::string_view::npos;
  out.host_header = v6 ? "[" + out.host + "]" : out.host;
  if (out.port != default_port) {
    out.host_header += ":" + std::to_string(out.port);
  }
  size_t hash = tail.find('#');
  if (hash != std::string_view::npos) {
    tail = tail.substr(0, hash);
  }
  out.target = std::string(tail);
  if (out.target.empty() || out.target.front() == '?') {
    out.target.insert(0, "/");
  }
  for (char c : out.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return std::nullopt;
    }
  }
  std::string path = out.target.substr(0, out.target.find('?'));
  out.display = std::string(out.https ? "https://" : "http://") + out.host_header + path;
  return out;
}

bool has_crlf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

}  // namespace

struct Fetcher::Exchange final : Transport::Handler {
  Fetcher* owner;
  uv_loop_t* loop;
  Connector* connector;
  auth::FetchRequest req;
  std::function<void(auth::FetchResult)> done;
  ParsedUrl url;

  uv_timer_t timer;
  bool timer_closed = false;
  std::optional<auth::FetchResult> deferred;  // delivered by a zero timer
  uint64_t connect_id = 0;
  bool connecting = false;
  Transport* transport = nullptr;
  bool finished = false;

  llhttp_t parser;
  auth::FetchResponse response;
  std::string field;
  std::string value;
  size_t header_bytes = 0;
  bool too_large = false;
  bool complete = false;

  static const llhttp_settings_t kSettings;

  Exchange(Fetcher* o, auth::FetchRequest r, std::function<void(auth::FetchResult)> d)
      : owner(o), loop(o->loop_), connector(&o->connector_), req(std::move(r)), done(std::move(d)) {
    uv_timer_init(loop, &timer);
    timer.data = this;
    llhttp_init(&parser, HTTP_RESPONSE, &kSettings);
    parser.data = this;
  }

  void start() {
    auto parsed = parse_url(req.url);
    if (!parsed) {
      fail_later(FetchError::Kind::PROTOCOL, "invalid URL");
      return;
    }
    url = std::move(*parsed);
    for (const auto& [name, val] : req.headers) {
      if (has_crlf(name) || has_crlf(val) || name.empty() || name.find(':') != std::string::npos) {
        fail_later(FetchError::Kind::PROTOCOL, "invalid request header for " + url.display);
        return;
      }
    }
    if (has_crlf(req.method) || req.method.empty() || req.method.find(' ') != std::string::npos) {
      fail_later(FetchError::Kind::PROTOCOL, "invalid request method");
      return;
    }
    if (req.timeout.count() > 0) {
      uv_timer_start(&timer, on_timeout, static_cast<uint64_t>(req.timeout.count()), 0);
    }
    TlsClientOptions tls;
    if (url.https) {
      tls.server_name = url.host;
      tls.ca_file = req.ca_file;
      tls.pinned_sha1 = req.pinned_sha1;
    }
    connecting = true;
    connect_id = connector->connect(
        url.host, url.port, url.https ? &tls : nullptr, req.timeout,
        [this](std::expected<Transport*, ConnectError> r) {
          if (!guard::run("fetch: connected", [&] { on_connected(std::move(r)); })) threw();
        });
  }

  void fail_later(FetchError::Kind kind, std::string message) {
    deferred = std::unexpected(FetchError{kind, std::move(message)});
    uv_timer_start(&timer, on_timeout, 0, 0);
  }

  static void on_timeout(uv_timer_t* t) {
    auto* self = static_cast<Exchange*>(t->data);
    // |self| is freed only by the timer's close callback, so it outlives this call.
    if (!guard::run("fetch: timer", [self] { self->timer_fired(); })) self->threw();
  }

  // Something in this exchange's callbacks threw (logged): fail it, unless it already ended.
  void threw() {
    if (finished) {
      return;
    }
    guard::run("fetch: failing", [this] {
      finish(std::unexpected(FetchError{FetchError::Kind::PROTOCOL,
                                        "request to " + url.display + ": internal error"}));
    });
  }

  void timer_fired() {
    Exchange* self = this;
    if (self->deferred) {
      auto r = std::move(*self->deferred);
      self->deferred.reset();
      self->finish(std::move(r));
      return;
    }
    self->finish(std::unexpected(FetchError{
        FetchError::Kind::TIMEOUT, "request to " + self->url.display + " timed out after " +
                                       std::to_string(self->req.timeout.count()) + " ms"}));
  }

  void on_connected(std::expected<Transport*, ConnectError> r) {
    connecting = false;
    if (!r) {
      FetchError::Kind kind = FetchError::Kind::CONNECT;
      switch (r.error().kind) {
        case ConnectError::Kind::DNS:
          kind = FetchError::Kind::DNS;
          break;
        case ConnectError::Kind::CONNECT:
          kind = FetchError::Kind::CONNECT;
          break;
        case ConnectError::Kind::TLS_VERIFY:
        case ConnectError::Kind::TLS_HANDSHAKE:
          kind = FetchError::Kind::TLS;
          break;
        case ConnectError::Kind::TIMEOUT:
          kind = FetchError::Kind::TIMEOUT;
          break;
      }
      finish(std::unexpected(FetchError{kind, r.error().message}));
      return;
    }
    transport = *r;
    transport->set_handler(this);
    send_request();
    transport->read_start();
  }

  void send_request() {
    std::string head;
    head.reserve(256 + req.body.size());
    head.append(req.method).append(" ").append(url.target).append(" HTTP/1.1\r\n");
    head.append("Host: ").append(url.host_header).append("\r\n");
    for (const auto& [name, val] : req.headers) {
      if (iequals(name, "host") || iequals(name, "content-length") || iequals(name, "connection") ||
          iequals(name, "transfer-encoding")) {
        continue;
      }
      head.append(name).append(": ").append(val).append("\r\n");
    }
    if (!req.body.empty() || iequals(req.method, "POST") || iequals(req.method, "PUT") ||
        iequals(req.method, "PATCH")) {
      head.append("Content-Length: ").append(std::to_string(req.body.size())).append("\r\n");
    }
    head.append("Connection: close\r\n\r\n");
    uv_buf_t bufs[2] = {
        uv_buf_init(head.data(), static_cast<unsigned>(head.size())),
        uv_buf_init(req.body.data(), static_cast<unsigned>(req.body.size())),
    };
    transport->write(bufs, req.body.empty() ? 1 : 2);
  }

  // ---- Transport::Handler ----

  void on_read(const char* data, size_t len) override {
    if (finished || complete) {
      return;
    }
    llhttp_errno_t err = llhttp_execute(&parser, data, len);
    if (err == HPE_OK) {
      return;
    }
    if (err == HPE_PAUSED && complete) {
      finish(std::move(response));
      return;
    }
    if (too_large) {
      finish(std::unexpected(FetchError{FetchError::Kind::TOO_LARGE,
                                        "response from " + url.display + " is larger than " +
                                            std::to_string(kMaxBodyBytes) + " bytes"}));
      return;
    }
    finish(std::unexpected(FetchError{
        FetchError::Kind::PROTOCOL,
        "malformed response from " + url.display + ": " + llhttp_errno_name(err) + " " +
            (llhttp_get_error_reason(&parser) != nullptr ? llhttp_get_error_reason(&parser)
                                                         : "")}));
  }

  void on_eof() override {
    if (finished) {
      return;
    }
    llhttp_errno_t err = llhttp_finish(&parser);
    if ((err == HPE_OK || err == HPE_PAUSED) && complete) {
      finish(std::move(response));
      return;
    }
    finish(std::unexpected(
        FetchError{FetchError::Kind::PROTOCOL,
                   "connection to " + url.display + " closed before the response was complete"}));
  }

  void on_error(int uv_code, const std::string& what) override {
    // The transport reports TLS record failures as UV_EPROTO; anything else is the socket.
    FetchError::Kind kind =
        uv_code == UV_EPROTO ? FetchError::Kind::TLS : FetchError::Kind::CONNECT;
    finish(std::unexpected(FetchError{kind, "exchange with " + url.display + ": " + what}));
  }

  void on_drain() override {}

  // ---- llhttp ----

  static Exchange* self(llhttp_t* p) { return static_cast<Exchange*>(p->data); }

  static int on_message_begin(llhttp_t* p) {
    Exchange* e = self(p);
    e->response = auth::FetchResponse{};
    e->field.clear();
    e->value.clear();
    return 0;
  }

  int count_header(size_t len) {
    header_bytes += len;
    if (header_bytes > kMaxHeaderBytes) {
      too_large = true;
      return HPE_USER;
    }
    return 0;
  }

  static int on_header_field(llhttp_t* p, const char* at, size_t len) {
    Exchange* e = self(p);
    e->field.append(at, len);
    return e->count_header(len);
  }

  static int on_header_value(llhttp_t* p, const char* at, size_t len) {
    Exchange* e = self(p);
    e->value.append(at, len);
    return e->count_header(len);
  }

  static int on_header_value_complete(llhttp_t* p) {
    Exchange* e = self(p);
    e->response.headers.emplace_back(std::move(e->field), std::move(e->value));
    e->field.clear();
    e->value.clear();
    return 0;
  }

  static int on_headers_complete(llhttp_t* p) {
    Exchange* e = self(p);
    e->response.status = llhttp_get_status_code(p);
    if (iequals(e->req.method, "HEAD")) {
      return 1;  // no body follows a HEAD response
    }
    return 0;
  }

  static int on_body(llhttp_t* p, const char* at, size_t len) {
    Exchange* e = self(p);
    if (e->response.body.size() + len > kMaxBodyBytes) {
      e->too_large = true;
      return HPE_USER;
    }
    e->response.body.append(at, len);
    return 0;
  }

  static int on_message_complete(llhttp_t* p) {
    Exchange* e = self(p);
    int status = e->response.status;
    if (status >= 100 && status < 200 && status != 101) {
      e->header_bytes = 0;
      return 0;  // interim response: the real one follows
    }
    e->complete = true;
    return HPE_PAUSED;
  }

  // ---- teardown ----

  // Ends the exchange: reports |r| (unless abandoned), then releases everything. Only called
  // from loop callbacks.
  void finish(auth::FetchResult r) {
    if (finished) {
      return;
    }
    auto cb = std::move(done);
    abandon();
    if (cb) {
      cb(std::move(r));
    }
  }

  void abandon() {
    finished = true;
    done = nullptr;
    if (owner != nullptr) {
      owner->live_.erase(this);
      owner = nullptr;
    }
    if (connecting) {
      connector->cancel(connect_id);
      connecting = false;
    }
    if (transport != nullptr) {
      transport->close();
      transport = nullptr;
    }
    uv_timer_stop(&timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer),
             [](uv_handle_t* h) { delete static_cast<Exchange*>(h->data); });
  }
};

// Every callback through base/guard.h: a throw ends the parse with an error, not the process.
const llhttp_settings_t Fetcher::Exchange::kSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    return guard::parser_call("fetch: message begin",
                              [&] { return Exchange::on_message_begin(p); });
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("fetch: header field",
                              [&] { return Exchange::on_header_field(p, at, n); });
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("fetch: header value",
                              [&] { return Exchange::on_header_value(p, at, n); });
  };
  s.on_header_value_complete = [](llhttp_t* p) {
    return guard::parser_call("fetch: header complete",
                              [&] { return Exchange::on_header_value_complete(p); });
  };
  s.on_headers_complete = [](llhttp_t* p) {
    return guard::parser_call("fetch: headers complete",
                              [&] { return Exchange::on_headers_complete(p); });
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("fetch: body", [&] { return Exchange::on_body(p, at, n); });
  };
  s.on_message_complete = [](llhttp_t* p) {
    return guard::parser_call("fetch: message complete",
                              [&] { return Exchange::on_message_complete(p); });
  };
  return s;
}();

Fetcher::Fetcher(uv_loop_t* loop, Connector& connector) : loop_(loop), connector_(connector) {}

Fetcher::~Fetcher() {
  auto live = std::move(live_);
  live_.clear();
  for (Exchange* e : live) {
    e->owner = nullptr;
    e->abandon();
  }
}

void Fetcher::fetch(auth::FetchRequest req, std::function<void(auth::FetchResult)> done) {
  auto* e = new Exchange(this, std::move(req), std::move(done));
  live_.insert(e);
  e->start();
}

}  // namespace miproxy::proxy
