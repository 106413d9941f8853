#include "proxy/admin.h"

#include <llhttp.h>

#include <cstring>
#include <string_view>

#include "base/guard.h"
#include "base/log.h"
#include "proxy/admission.h"
#include "proxy/http1.h"
#include "proxy/transport.h"

namespace miproxy::proxy {

class AdminServer::Conn : public Transport::Handler {
 public:
  Conn(AdminServer& server, Transport* t) : server_(server), t_(t) {
    llhttp_init(&parser_, HTTP_REQUEST, &kSettings);
    parser_.data = this;
    t_->set_handler(this);
    t_->read_start();
  }

  void close() {
    if (!t_) return;
    t_->set_handler(nullptr);
    t_->close();
    t_ = nullptr;
    server_.conns_.remove(this);
    // Deleted by the caller's loop turn: Conn is only closed from its own callbacks or from
    // AdminServer::close(), and never touched after close().
    closed_ = true;
  }
  bool closed() const { return closed_; }

  void on_read(const char* data, size_t len) override {
    llhttp_errno_t err = llhttp_execute(&parser_, data, len);
    if (err != HPE_OK && err != HPE_PAUSED) {
      respond(400, "text/plain", "bad request\n", false);
    }
    finish_if_closed();
  }
  void on_eof() override {
    close();
    finish_if_closed();
  }
  void on_error(int, const std::string&) override {
    close();
    finish_if_closed();
  }
  void on_drain() override {
    if (close_after_write_) close();
    finish_if_closed();
  }

 private:
  void finish_if_closed() {
    if (closed_) delete this;
  }

  static int on_url(llhttp_t* p, const char* at, size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (c->url_.size() + n > 4096) return -1;
    c->url_.append(at, n);
    return 0;
  }
  static int on_begin(llhttp_t* p) {
    static_cast<Conn*>(p->data)->url_.clear();
    static_cast<Conn*>(p->data)->headers_.clear();
    return 0;
  }
  // Headers are kept for the browser and Host checks (admission.h); a few KiB at most.
  static int on_header_field(llhttp_t* p, const char* at, size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (c->headers_.bytes() + n > 16384) return -1;
    c->headers_.append_name(at, n);
    return 0;
  }
  static int on_header_value(llhttp_t* p, const char* at, size_t n) {
    auto* c = static_cast<Conn*>(p->data);
    if (c->headers_.bytes() + n > 16384) return -1;
    c->headers_.append_value(at, n);
    return 0;
  }
  static int on_header_value_complete(llhttp_t* p) {
    static_cast<Conn*>(p->data)->headers_.finish_value();
    return 0;
  }
  static int on_complete(llhttp_t* p) {
    auto* c = static_cast<Conn*>(p->data);
    if (c->closed_) return HPE_PAUSED;
    bool keep_alive = llhttp_should_keep_alive(p);
    if (!guard::run("admin: request", [&] { c->handle(llhttp_get_method(p), keep_alive); })) {
      // Logged by the guard; the caller gets an answer and the admin listener keeps serving.
      if (!c->closed_ && !c->close_after_write_) {
        c->respond(500, "text/plain", "internal error\n", false);
      }
    }
    return c->closed_ || c->close_after_write_ ? HPE_PAUSED : 0;
  }

  void handle(uint8_t method, bool keep_alive) {
    std::string_view path = url_;
    path = path.substr(0, path.find('?'));
    const Handlers& h = server_.handlers_;
    if (auto refused = admission::admit_admin(headers_, server_.host_)) {
      respond(error_info(refused->error).status, "text/plain", refused->message + "\n", false);
      return;
    }
    bool get = method == HTTP_GET || method == HTTP_HEAD;
    if (path == "/healthz" && get) {
      respond(200, "text/plain", "ok\n", keep_alive);
    } else if (path == "/readyz" && get) {
      auto [ready, body] = h.readiness ? h.readiness() : std::make_pair(true, std::string("{}"));
      respond(ready ? 200 : 503, "application/json", body + "\n", keep_alive);
    } else if (path == "/metrics" && get) {
      respond(200, "text/plain; version=0.0.4; charset=utf-8", h.metrics ? h.metrics() : "",
              keep_alive);
    } else if (path == "/quitquitquit" && method == HTTP_POST) {
      if (!h.allow_quit) {
        respond(403, "text/plain", "quitquitquit is disabled (admin.allow_quit)\n", false);
        return;
      }
      respond(200, "text/plain", "draining\n", false);
      if (h.quit) h.quit();
    } else if (path == "/healthz" || path == "/readyz" || path == "/metrics" ||
               path == "/quitquitquit") {
      respond(405, "text/plain", "method not allowed\n", keep_alive);
    } else {
      respond(404, "text/plain", "not found\n", keep_alive);
    }
  }

  void respond(int status, std::string_view type, const std::string& body, bool keep_alive) {
    if (!t_) return;
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " +
                      std::string(reason_phrase(status)) + "\r\nContent-Type: " +
                      std::string(type) + "\r\nContent-Length: " + std::to_string(body.size()) +
                      "\r\nCache-Control: no-store\r\n";
    if (!keep_alive) out += "Connection: close\r\n";
    out += "\r\n";
    out += body;
    t_->write(out.data(), out.size());
    if (!keep_alive) {
      close_after_write_ = true;
      if (t_->write_queue_bytes() == 0) close();
    }
  }

  static const llhttp_settings_t kSettings;
  AdminServer& server_;
  Transport* t_;
  llhttp_t parser_;
  std::string url_;
  HeaderList headers_;
  bool close_after_write_ = false;
  bool closed_ = false;
};

const llhttp_settings_t AdminServer::Conn::kSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  // Through base/guard.h: a throw ends the parse with an error (answered 400), never the process.
  s.on_message_begin = [](llhttp_t* p) {
    return guard::parser_call("admin: message begin", [&] { return Conn::on_begin(p); });
  };
  s.on_url = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("admin: url", [&] { return Conn::on_url(p, at, n); });
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("admin: header field", [&] { return Conn::on_header_field(p, at, n); });
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    return guard::parser_call("admin: header value", [&] { return Conn::on_header_value(p, at, n); });
  };
  s.on_header_value_complete = [](llhttp_t* p) {
    return guard::parser_call("admin: header value complete",
                              [&] { return Conn::on_header_value_complete(p); });
  };
  s.on_message_complete = [](llhttp_t* p) {
    return guard::parser_call("admin: message complete", [&] { return Conn::on_complete(p); });
  };
  return s;
}();

AdminServer::AdminServer(uv_loop_t* loop, Handlers handlers)
    : loop_(loop), handlers_(std::move(handlers)) {}

AdminServer::~AdminServer() { close(); }

std::expected<std::string, std::string> AdminServer::listen(const std::string& host,
                                                            uint16_t port) {
  sockaddr_storage ss{};
  bool v6 = host.find(':') != std::string::npos;
  std::string h = host == "localhost" ? "127.0.0.1" : host;
  int rc = v6 ? uv_ip6_addr(h.c_str(), port, reinterpret_cast<sockaddr_in6*>(&ss))
              : uv_ip4_addr(h.c_str(), port, reinterpret_cast<sockaddr_in*>(&ss));
  if (rc != 0) return std::unexpected("invalid admin address " + host);
  host_ = h;  // for the Host check: the listener's own address
  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
  listener_->data = this;
  rc = uv_tcp_bind(listener_, reinterpret_cast<sockaddr*>(&ss), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 128, &on_connection);
  if (rc != 0) {
    close();
    return std::unexpected("admin listen on " + host + ":" + std::to_string(port) + ": " +
                           uv_strerror(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  uint16_t p = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(p);
}

void AdminServer::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<AdminServer*>(server->data);
  if (status < 0) return;
  guard::run("admin: accept", [&] {
    Transport* t = accept_plain(self->loop_, server);
    if (!t) return;
    self->conns_.push_back(new Conn(*self, t));
  });
}

void AdminServer::close() {
  if (listener_) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    listener_ = nullptr;
  }
  while (!conns_.empty()) {
    Conn* c = conns_.front();
    c->close();  // removes itself from conns_
    delete c;
  }
}

}  // namespace miproxy::proxy
