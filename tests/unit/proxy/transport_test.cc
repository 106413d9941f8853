#include "proxy/transport.h"

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "unit/support/test_pki.h"
#include "unit/support/test_server.h"

namespace {

using miproxy::proxy::ConnectError;
using miproxy::proxy::Connector;
using miproxy::proxy::TlsClientOptions;
using miproxy::proxy::Transport;
using miproxy::test::TestConn;
using miproxy::test::TestPki;
using miproxy::test::TestServer;
using miproxy::test::TestServerOptions;
using namespace std::chrono_literals;

const TestPki& pki() {
  static TestPki instance;
  return instance;
}

// Waits (without asserting on time) until the server thread has finished |n| connections.
void wait_server_done(const TestServer& server, int n) {
  for (int i = 0; i < 2000 && server.connections_done() < n; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(server.connections_done() >= n);
}

// Sends |message|, reads the same number of bytes back, then closes.
struct EchoClient : Transport::Handler {
  Transport* t = nullptr;
  std::string message;
  std::string received;
  int reads = 0;
  int eofs = 0;
  int errors = 0;

  void start(Transport* transport) {
    t = transport;
    t->set_handler(this);
    t->write(message.data(), message.size());
    t->read_start();
  }
  void on_read(const char* data, size_t len) override {
    reads++;
    received.append(data, len);
    if (received.size() >= message.size()) {
      t->close();
    }
  }
  void on_eof() override {
    eofs++;
    t->close();
  }
  void on_error(int, const std::string&) override {
    errors++;
    t->close();
  }
  void on_drain() override {}
};

struct Outcome {
  int done_calls = 0;
  std::optional<ConnectError> error;
  std::string echoed;
  bool reused = false;
  int errors = 0;
};

// Connects once, echoes |message| when connected, and runs the loop until everything closed.
Outcome echo_once(uv_loop_t* loop, Connector& connector, const std::string& host, uint16_t port,
                  const TlsClientOptions* tls, const std::string& message = "ping",
                  std::chrono::milliseconds timeout = 10s) {
  Outcome out;
  EchoClient client;
  client.message = message;
  connector.connect(host, port, tls, timeout, [&](std::expected<Transport*, ConnectError> r) {
    out.done_calls++;
    if (!r) {
      out.error = r.error();
      return;
    }
    out.reused = (*r)->session_reused();
    client.start(*r);
  });
  uv_run(loop, UV_RUN_DEFAULT);
  out.echoed = client.received;
  out.errors = client.errors;
  return out;
}

TestServerOptions tls_server(const std::string& cert, const std::string& key) {
  TestServerOptions o;
  o.tls = true;
  o.cert = cert;
  o.key = key;
  return o;
}

}  // namespace

TEST_CASE("TLS handshake verifies the server by CA and name and carries data both ways",
          "[transport]") {
  TestServer server(tls_server(pki().server_cert, pki().server_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    Outcome out = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls, "hello over tls");
    CHECK(out.done_calls == 1);
    REQUIRE_FALSE(out.error.has_value());
    CHECK(out.echoed == "hello over tls");
    CHECK(out.errors == 0);
    CHECK(connector.handshakes() == 1);
    CHECK(connector.resumed_handshakes() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  wait_server_done(server, 1);
  CHECK(server.handshakes_ok() == 1);
}

TEST_CASE("An IP literal host is verified against the certificate's IP address", "[transport]") {
  TestServer server(tls_server(pki().server_cert, pki().server_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;  // server_name empty: the host, 127.0.0.1, is verified
    tls.ca_file = pki().ca_cert;
    Outcome ok = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE_FALSE(ok.error.has_value());
    CHECK(ok.echoed == "ping");

    tls.server_name = "127.0.0.2";
    Outcome bad = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE(bad.error.has_value());
    CHECK(bad.error->kind == ConnectError::Kind::TLS_VERIFY);
    CHECK(bad.error->message == "certificate verify failed: IP address mismatch (127.0.0.2)");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("An untrusted certificate fails with TLS_VERIFY before any application byte is sent",
          "[transport]") {
  TestServer server(tls_server(pki().self_cert, pki().self_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    Outcome out = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    CHECK(out.done_calls == 1);
    REQUIRE(out.error.has_value());
    CHECK(out.error->kind == ConnectError::Kind::TLS_VERIFY);
    CHECK(out.error->message == "certificate verify failed: self-signed certificate (localhost)");
    CHECK(connector.handshakes() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  wait_server_done(server, 1);
  CHECK(server.accepted() == 1);
  CHECK(server.handshakes_ok() == 0);
  CHECK(server.handshakes_failed() == 1);
  CHECK(server.app_bytes() == 0);
}

TEST_CASE("A certificate for another host name fails verification", "[transport]") {
  TestServer server(tls_server(pki().server_cert, pki().server_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "login.example.net";
    tls.ca_file = pki().ca_cert;
    Outcome out = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE(out.error.has_value());
    CHECK(out.error->kind == ConnectError::Kind::TLS_VERIFY);
    CHECK(out.error->message == "certificate verify failed: hostname mismatch (login.example.net)");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  wait_server_done(server, 1);
  CHECK(server.handshakes_ok() == 0);
  CHECK(server.app_bytes() == 0);
}

TEST_CASE("A pinned SHA-1 accepts the self-signed certificate and a wrong pin fails",
          "[transport]") {
  TestServer server(tls_server(pki().self_cert, pki().self_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    // Lower case with colons: both are ignored when comparing.
    std::string pin;
    for (size_t i = 0; i < pki().self_sha1.size(); i += 2) {
      if (i > 0) {
        pin += ':';
      }
      pin += static_cast<char>(std::tolower(pki().self_sha1[i]));
      pin += static_cast<char>(std::tolower(pki().self_sha1[i + 1]));
    }
    tls.pinned_sha1 = pin;
    Outcome ok = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls, "pinned");
    REQUIRE_FALSE(ok.error.has_value());
    CHECK(ok.echoed == "pinned");

    std::string wrong = pki().self_sha1;
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    tls.pinned_sha1 = wrong;
    Outcome bad = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE(bad.error.has_value());
    CHECK(bad.error->kind == ConnectError::Kind::TLS_VERIFY);
    CHECK(bad.error->message.starts_with("certificate verify failed: "));
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  wait_server_done(server, 2);
  CHECK(server.handshakes_ok() == 1);
  CHECK(server.app_bytes() == std::string("pinned").size());
}

TEST_CASE("min_version TLS 1.3 refuses a server that only speaks TLS 1.2", "[transport]") {
  TestServerOptions options = tls_server(pki().server_cert, pki().server_key);
  options.max_version = TLS1_2_VERSION;
  TestServer server(options, miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    tls.min_version = TLS1_3_VERSION;
    Outcome out = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE(out.error.has_value());
    CHECK(out.error->kind == ConnectError::Kind::TLS_HANDSHAKE);

    tls.min_version = TLS1_2_VERSION;
    Outcome ok = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    CHECK_FALSE(ok.error.has_value());
    CHECK(ok.echoed == "ping");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  wait_server_done(server, 2);
  CHECK(server.handshakes_ok() == 1);
  CHECK(server.app_bytes() == 4);
}

TEST_CASE("A second connection to the same host resumes the TLS session", "[transport]") {
  int max_version = GENERATE(TLS1_2_VERSION, TLS1_3_VERSION);
  CAPTURE(max_version);
  TestServerOptions options = tls_server(pki().server_cert, pki().server_key);
  options.max_version = max_version;
  TestServer server(options, miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    Outcome first = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE_FALSE(first.error.has_value());
    CHECK_FALSE(first.reused);
    Outcome second = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls);
    REQUIRE_FALSE(second.error.has_value());
    CHECK(second.reused);
    CHECK(second.echoed == "ping");
    CHECK(connector.handshakes() == 2);
    CHECK(connector.resumed_handshakes() == 1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("Connecting to a closed port fails with CONNECT", "[transport]") {
  // Reserve a port, then close it, so nothing listens there.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  uint16_t port = ntohs(addr.sin_port);
  ::close(fd);

  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    int calls = 0;
    std::optional<ConnectError> error;
    connector.connect("127.0.0.1", port, nullptr, 5s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        calls++;
                        REQUIRE_FALSE(r.has_value());
                        error = r.error();
                      });
    CHECK(calls == 0);  // never inside connect()
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(calls == 1);
    REQUIRE(error.has_value());
    CHECK(error->kind == ConnectError::Kind::CONNECT);
    CHECK(error->message ==
          "connect to 127.0.0.1:" + std::to_string(port) + ": connection refused");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("A DNS name is resolved and its addresses are tried in order", "[transport]") {
  // "localhost" may resolve to ::1 first; the server listens on 127.0.0.1 only.
  TestServer server(TestServerOptions{}, miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    Outcome out = echo_once(&loop, connector, "localhost", server.port(), nullptr, "by name");
    REQUIRE_FALSE(out.error.has_value());
    CHECK(out.echoed == "by name");
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("A handshake that never completes times out", "[transport]") {
  // A plain TCP peer that reads and never answers: the ClientHello goes unanswered.
  TestServer server(TestServerOptions{}, [](TestConn& c) { c.drain_until_eof(); });
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    Outcome out = echo_once(&loop, connector, "127.0.0.1", server.port(), &tls, "x", 200ms);
    CHECK(out.done_calls == 1);
    REQUIRE(out.error.has_value());
    CHECK(out.error->kind == ConnectError::Kind::TIMEOUT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("cancel() stops a connect and done is never called", "[transport]") {
  TestServer server(tls_server(pki().server_cert, pki().server_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    int calls = 0;
    uint64_t id = connector.connect("127.0.0.1", server.port(), &tls, 5s,
                                    [&](std::expected<Transport*, ConnectError>) { calls++; });
    uint64_t id2 = connector.connect("localhost", server.port(), nullptr, 5s,
                                     [&](std::expected<Transport*, ConnectError>) { calls++; });
    connector.cancel(id);
    connector.cancel(id2);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(calls == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("Destroying the Connector with a connect in flight cleans up", "[transport]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  int calls = 0;
  {
    Connector connector(&loop);
    connector.connect("localhost", 9, nullptr, 5s,
                      [&](std::expected<Transport*, ConnectError>) { calls++; });
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(calls == 0);
  REQUIRE(uv_loop_close(&loop) == 0);
}

// ---- bulk transfer with backpressure ---------------------------------------------------------

namespace {

constexpr size_t kTransferBytes = 8 * 1024 * 1024;
constexpr size_t kChunk = 16 * 1024;
constexpr size_t kQueueLimit = 256 * 1024;

const std::string& transfer_payload() {
  static const std::string data = [] {
    std::string s(kTransferBytes, '\0');
    uint32_t x = 0x12345678;
    for (char& c : s) {
      x = x * 1664525u + 1013904223u;
      c = static_cast<char>(x >> 24);
    }
    return s;
  }();
  return data;
}

// Writes the payload while reading the echo, producing only while the transport's queue is
// under kQueueLimit and resuming on on_drain.
struct Pump : Transport::Handler {
  Transport* t = nullptr;
  const std::string* data = &transfer_payload();
  size_t sent = 0;
  std::string received;
  size_t max_queue = 0;
  int drains = 0;
  int eofs = 0;
  int errors = 0;

  void start(Transport* transport) {
    t = transport;
    t->set_handler(this);
    t->read_start();
    produce();
  }
  void produce() {
    while (sent < data->size() && t->write_queue_bytes() < kQueueLimit) {
      size_t n = std::min(kChunk, data->size() - sent);
      t->write(data->data() + sent, n);
      sent += n;
      max_queue = std::max(max_queue, t->write_queue_bytes());
    }
  }
  void on_read(const char* p, size_t len) override {
    received.append(p, len);
    if (received.size() >= data->size()) {
      t->close();
    }
  }
  void on_eof() override {
    eofs++;
    t->close();
  }
  void on_error(int, const std::string&) override {
    errors++;
    t->close();
  }
  void on_drain() override {
    drains++;
    produce();
  }
};

void shrink_socket_buffers(Transport* t) {
  int size = 64 * 1024;
  setsockopt(t->fd(), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  setsockopt(t->fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

// In-loop echo server side over accept_plain, with its own backpressure.
struct EchoPeer : Transport::Handler {
  Transport* t = nullptr;
  int eofs = 0;
  int drains = 0;
  void on_read(const char* p, size_t len) override {
    t->write(p, len);
    if (t->write_queue_bytes() > kQueueLimit) {
      t->read_stop();
    }
  }
  void on_eof() override {
    eofs++;
    t->close();
  }
  void on_error(int, const std::string&) override { t->close(); }
  void on_drain() override {
    drains++;
    t->read_start();
  }
};

}  // namespace

TEST_CASE("8 MiB both ways over TLS keeps backpressure and every byte", "[transport]") {
  TestServerOptions options = tls_server(pki().server_cert, pki().server_key);
  options.socket_buffer = 64 * 1024;
  TestServer server(options, miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  Pump pump;
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    int calls = 0;
    connector.connect("127.0.0.1", server.port(), &tls, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        calls++;
                        REQUIRE(r.has_value());
                        shrink_socket_buffers(*r);
                        pump.start(*r);
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(calls == 1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(pump.errors == 0);
  CHECK(pump.sent == kTransferBytes);
  REQUIRE(pump.received.size() == kTransferBytes);
  bool same = pump.received == transfer_payload();
  CHECK(same);
  // The socket buffers hold far less than 8 MiB, so the queue must have filled and drained.
  CHECK(pump.drains >= 1);
  // Ciphertext for one chunk can exceed the limit by at most one chunk plus record overhead.
  CHECK(pump.max_queue < kQueueLimit + 2 * kChunk);
  wait_server_done(server, 1);
  CHECK(server.app_bytes() == kTransferBytes);
}

TEST_CASE("8 MiB both ways over plain TCP through accept_plain keeps every byte", "[transport]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t listener;
  uv_tcp_init(&loop, &listener);
  sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  REQUIRE(uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&addr), 0) == 0);
  EchoPeer peer;
  int accepts = 0;
  listener.data = &peer;
  REQUIRE(
      uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 8, [](uv_stream_t* server, int status) {
        REQUIRE(status == 0);
        auto* p = static_cast<EchoPeer*>(server->data);
        Transport* t = miproxy::proxy::accept_plain(server->loop, server);
        REQUIRE(t != nullptr);
        p->t = t;
        shrink_socket_buffers(t);
        t->set_handler(p);
        t->read_start();
        uv_close(reinterpret_cast<uv_handle_t*>(server), nullptr);
      }) == 0);
  int namelen = sizeof(addr);
  uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&addr), &namelen);
  uint16_t port = ntohs(addr.sin_port);
  Pump pump;
  {
    Connector connector(&loop);
    connector.connect("127.0.0.1", port, nullptr, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        accepts++;
                        REQUIRE(r.has_value());
                        CHECK((*r)->fd() >= 0);
                        shrink_socket_buffers(*r);
                        pump.start(*r);
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(accepts == 1);
  CHECK(pump.errors == 0);
  REQUIRE(pump.received.size() == kTransferBytes);
  bool same = pump.received == transfer_payload();
  CHECK(same);
  CHECK(pump.drains >= 1);
  CHECK(pump.max_queue < kQueueLimit + kChunk);
  CHECK(peer.eofs == 1);
}

TEST_CASE("accept_plain works on a Unix socket", "[transport]") {
  char dir_template[] = "/tmp/miproxy-uds-XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  std::string path = std::string(dir_template) + "/s.sock";
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_pipe_t listener;
  uv_pipe_init(&loop, &listener, 0);
  REQUIRE(uv_pipe_bind(&listener, path.c_str()) == 0);
  EchoPeer peer;
  listener.data = &peer;
  REQUIRE(
      uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 8, [](uv_stream_t* server, int status) {
        auto* p = static_cast<EchoPeer*>(server->data);
        Transport* t = miproxy::proxy::accept_plain(server->loop, server);
        REQUIRE(t != nullptr);
        p->t = t;
        t->set_handler(p);
        t->read_start();
        uv_close(reinterpret_cast<uv_handle_t*>(server), nullptr);
      }) == 0);

  // Client: a raw uv pipe that writes, reads the echo and closes.
  struct Client {
    uv_pipe_t pipe;
    uv_connect_t req;
    uv_write_t wreq;
    std::string got;
    char buf[256];
  } client;
  uv_pipe_init(&loop, &client.pipe, 0);
  client.pipe.data = &client;
  client.req.data = &client;
  uv_pipe_connect(&client.req, &client.pipe, path.c_str(), [](uv_connect_t* req, int status) {
    REQUIRE(status == 0);
    auto* c = static_cast<Client*>(req->data);
    static char msg[] = "over a unix socket";
    uv_buf_t b = uv_buf_init(msg, sizeof(msg) - 1);
    uv_write(&c->wreq, reinterpret_cast<uv_stream_t*>(&c->pipe), &b, 1, nullptr);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->pipe),
        [](uv_handle_t* h, size_t, uv_buf_t* out) {
          auto* cl = static_cast<Client*>(h->data);
          *out = uv_buf_init(cl->buf, sizeof(cl->buf));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          auto* cl = static_cast<Client*>(s->data);
          if (n > 0) {
            cl->got.append(b->base, static_cast<size_t>(n));
          }
          if (n < 0 || cl->got.size() >= 18) {
            uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
          }
        });
  });
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(client.got == "over a unix socket");
  CHECK(peer.eofs == 1);
  ::unlink(path.c_str());
  ::rmdir(dir_template);
}

TEST_CASE("A TLS session is resumed only under the same verification settings and name",
          "[transport]") {
  TestServer self_signed(tls_server(pki().self_cert, pki().self_key), miproxy::test::echo_handler);
  TestServer ca_signed(tls_server(pki().server_cert, pki().server_key),
                       miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  {
    Connector connector(&loop);
    // A session made under a pin must not let a CA-verified connect skip verification.
    TlsClientOptions pinned;
    pinned.server_name = "localhost";
    pinned.pinned_sha1 = pki().self_sha1;
    Outcome first = echo_once(&loop, connector, "127.0.0.1", self_signed.port(), &pinned);
    REQUIRE_FALSE(first.error.has_value());
    TlsClientOptions by_ca;
    by_ca.server_name = "localhost";
    by_ca.ca_file = pki().ca_cert;
    Outcome second = echo_once(&loop, connector, "127.0.0.1", self_signed.port(), &by_ca);
    REQUIRE(second.error.has_value());
    CHECK(second.error->kind == ConnectError::Kind::TLS_VERIFY);

    // A session made for one name must not vouch for another.
    Outcome third = echo_once(&loop, connector, "127.0.0.1", ca_signed.port(), &by_ca);
    REQUIRE_FALSE(third.error.has_value());
    TlsClientOptions other_name = by_ca;
    other_name.server_name = "login.example.net";
    Outcome fourth = echo_once(&loop, connector, "127.0.0.1", ca_signed.port(), &other_name);
    REQUIRE(fourth.error.has_value());
    CHECK(fourth.error->kind == ConnectError::Kind::TLS_VERIFY);
    CHECK(connector.resumed_handshakes() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("A TLS peer that closes without close_notify is reported as on_eof", "[transport]") {
  TestServer server(tls_server(pki().server_cert, pki().server_key), [](TestConn& conn) {
    char c;
    if (conn.read(&c, 1) == 1) {
      conn.write_all("bye");
    }
    conn.close_without_notify();
  });
  uv_loop_t loop;
  uv_loop_init(&loop);
  EchoClient client;
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    connector.connect("127.0.0.1", server.port(), &tls, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        REQUIRE(r.has_value());
                        // Expect more than the server sends so that only EOF ends it.
                        client.message = std::string(100, 'x');
                        client.t = *r;
                        client.t->set_handler(&client);
                        client.t->write("x", 1);
                        client.t->read_start();
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(client.received == "bye");
  CHECK(client.eofs == 1);
  CHECK(client.errors == 0);
}

namespace {

// Writes after the peer reset the connection and checks that on_error comes on a later turn.
struct ResetVictim : Transport::Handler {
  Transport* t = nullptr;
  const TestServer* server = nullptr;
  uv_timer_t timer;
  bool in_write = false;
  int errors = 0;
  int errors_inside_write = 0;
  int error_code = 0;

  void start(Transport* transport, uv_loop_t* loop) {
    t = transport;
    t->set_handler(this);
    t->write("x", 1);
    uv_timer_init(loop, &timer);
    timer.data = this;
    uv_timer_start(&timer, on_tick, 5, 5);
  }
  static void on_tick(uv_timer_t* timer) {
    auto* self = static_cast<ResetVictim*>(timer->data);
    if (self->server->connections_done() < 1) {
      return;  // the reset has not happened yet
    }
    uv_timer_stop(timer);
    uv_close(reinterpret_cast<uv_handle_t*>(timer), nullptr);
    std::string data(64 * 1024, 'y');
    for (int i = 0; i < 4 && self->errors == 0 && !self->t->is_closing(); ++i) {
      self->in_write = true;
      self->t->write(data.data(), data.size());
      self->in_write = false;
    }
  }
  void on_read(const char*, size_t) override {}
  void on_eof() override { t->close(); }
  void on_error(int code, const std::string&) override {
    errors++;
    error_code = code;
    if (in_write) {
      errors_inside_write++;
    }
    t->close();
  }
  void on_drain() override {}
};

}  // namespace

TEST_CASE("A write to a reset connection reports on_error on a later loop turn", "[transport]") {
  bool tls = GENERATE(false, true);
  CAPTURE(tls);
  TestServerOptions options =
      tls ? tls_server(pki().server_cert, pki().server_key) : TestServerOptions{};
  TestServer server(options, [](TestConn& conn) {
    char c;
    conn.read(&c, 1);
    conn.reset();
  });
  uv_loop_t loop;
  uv_loop_init(&loop);
  ResetVictim victim;
  victim.server = &server;
  {
    Connector connector(&loop);
    TlsClientOptions opts;
    opts.server_name = "localhost";
    opts.ca_file = pki().ca_cert;
    connector.connect("127.0.0.1", server.port(), tls ? &opts : nullptr, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        REQUIRE(r.has_value());
                        victim.start(*r, &loop);
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(victim.errors == 1);
  CHECK(victim.errors_inside_write == 0);
  CHECK((victim.error_code == UV_ECONNRESET || victim.error_code == UV_EPIPE));
}

namespace {

// Pauses reading inside the first on_read and resumes from a timer; nothing may arrive while
// paused, and nothing may arrive inside read_start() itself.
struct PausingReader : Transport::Handler {
  Transport* t = nullptr;
  uv_timer_t timer;
  size_t expect = 0;
  std::string received;
  bool paused = false;
  bool in_read_start = false;
  int reads_while_paused = 0;
  int reads_inside_read_start = 0;
  int pauses = 0;
  int eofs = 0;

  void start(Transport* transport, uv_loop_t* loop) {
    t = transport;
    uv_timer_init(loop, &timer);
    timer.data = this;
    t->set_handler(this);
    t->write("go", 2);
    t->read_start();
  }
  static void resume(uv_timer_t* timer) {
    auto* self = static_cast<PausingReader*>(timer->data);
    self->paused = false;
    self->in_read_start = true;
    self->t->read_start();
    self->in_read_start = false;
  }
  void on_read(const char* p, size_t len) override {
    if (paused) {
      reads_while_paused++;
    }
    if (in_read_start) {
      reads_inside_read_start++;
    }
    received.append(p, len);
    if (received.size() >= expect) {
      finish();
      return;
    }
    if (pauses < 1000) {
      pauses++;
      paused = true;
      t->read_stop();
      uv_timer_start(&timer, resume, 1, 0);
    }
  }
  void finish() {
    t->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  }
  void on_eof() override {
    eofs++;
    finish();
  }
  void on_error(int, const std::string&) override { finish(); }
  void on_drain() override {}
};

}  // namespace

TEST_CASE("read_stop inside on_read holds data until read_start, delivered on a later turn",
          "[transport]") {
  bool tls = GENERATE(false, true);
  CAPTURE(tls);
  const size_t total = 512 * 1024;
  TestServerOptions options =
      tls ? tls_server(pki().server_cert, pki().server_key) : TestServerOptions{};
  TestServer server(options, [total](TestConn& conn) {
    char buf[2];
    if (conn.read(buf, 2) != 2) {
      return;
    }
    conn.write_all(std::string(total, 'z'));
    conn.drain_until_eof();
  });
  uv_loop_t loop;
  uv_loop_init(&loop);
  PausingReader reader;
  reader.expect = total;
  {
    Connector connector(&loop);
    TlsClientOptions opts;
    opts.server_name = "localhost";
    opts.ca_file = pki().ca_cert;
    connector.connect("127.0.0.1", server.port(), tls ? &opts : nullptr, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        REQUIRE(r.has_value());
                        reader.start(*r, &loop);
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(reader.received == std::string(total, 'z'));
  CHECK(reader.pauses >= 3);
  CHECK(reader.reads_while_paused == 0);
  CHECK(reader.reads_inside_read_start == 0);
}

namespace {

// Exchanges one byte, parks (no handler) and signals the server, which then sends |late| (if
// any) and closes. Once the transport reports stale(), a new handler is set and must receive
// the held bytes and EOF on later turns, never inside set_handler().
struct ParkingClient : Transport::Handler {
  Transport* t = nullptr;
  uv_timer_t timer;
  std::string received;
  bool parked = false;
  bool in_set_handler = false;
  int events_inside_set_handler = 0;
  int eofs = 0;
  int errors = 0;
  bool was_stale = false;

  void start(Transport* transport, uv_loop_t* loop) {
    t = transport;
    uv_timer_init(loop, &timer);
    timer.data = this;
    t->set_handler(this);
    t->write("a", 1);
    t->read_start();
  }
  static void on_tick(uv_timer_t* timer) {
    auto* self = static_cast<ParkingClient*>(timer->data);
    if (!self->t->stale()) {
      return;
    }
    self->was_stale = true;
    uv_timer_stop(timer);
    self->parked = false;
    self->in_set_handler = true;
    self->t->set_handler(self);
    self->in_set_handler = false;
  }
  void note_event() {
    if (in_set_handler) {
      events_inside_set_handler++;
    }
  }
  void on_read(const char* p, size_t len) override {
    note_event();
    received.append(p, len);
    if (received == "a") {
      // Park with reading on, as an idle pooled connection would, then ask for more.
      parked = true;
      t->set_handler(nullptr);
      t->write("b", 1);
      uv_timer_start(&timer, on_tick, 1, 1);
    }
  }
  void on_eof() override {
    note_event();
    eofs++;
    finish();
  }
  void on_error(int, const std::string&) override {
    note_event();
    errors++;
    finish();
  }
  void on_drain() override {}
  void finish() {
    t->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  }
};

}  // namespace

TEST_CASE("Events that arrive while parked are held and delivered to the next handler",
          "[transport]") {
  bool tls = GENERATE(false, true);
  std::string late = GENERATE(std::string(), std::string("late bytes"));
  CAPTURE(tls, late);
  TestServerOptions options =
      tls ? tls_server(pki().server_cert, pki().server_key) : TestServerOptions{};
  TestServer server(options, [late](TestConn& conn) {
    char c;
    if (conn.read(&c, 1) != 1 || !conn.write_all("a") || conn.read(&c, 1) != 1) {
      return;
    }
    if (!late.empty()) {
      conn.write_all(late);
    }
  });
  uv_loop_t loop;
  uv_loop_init(&loop);
  ParkingClient client;
  {
    Connector connector(&loop);
    TlsClientOptions opts;
    opts.server_name = "localhost";
    opts.ca_file = pki().ca_cert;
    connector.connect("127.0.0.1", server.port(), tls ? &opts : nullptr, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        REQUIRE(r.has_value());
                        client.start(*r, &loop);
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(client.was_stale);
  CHECK(client.received == "a" + late);
  CHECK(client.eofs == 1);
  CHECK(client.errors == 0);
  CHECK(client.events_inside_set_handler == 0);
}

TEST_CASE("A small TLS write of several buffers is one record and one write, with no copy",
          "[transport]") {
  TestServer server(tls_server(pki().server_cert, pki().server_key), miproxy::test::echo_handler);
  uv_loop_t loop;
  uv_loop_init(&loop);
  miproxy::proxy::TransportStats before;
  miproxy::proxy::TransportStats after;
  EchoClient client;
  client.message = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\nbody";
  {
    Connector connector(&loop);
    TlsClientOptions tls;
    tls.server_name = "localhost";
    tls.ca_file = pki().ca_cert;
    connector.connect("127.0.0.1", server.port(), &tls, 10s,
                      [&](std::expected<Transport*, ConnectError> r) {
                        REQUIRE(r.has_value());
                        client.t = *r;
                        client.t->set_handler(&client);
                        // An empty socket buffer takes a small write whole.
                        before = miproxy::proxy::transport_stats();
                        const std::string& m = client.message;
                        uv_buf_t bufs[3] = {
                            uv_buf_init(const_cast<char*>(m.data()), 16),
                            uv_buf_init(const_cast<char*>(m.data()) + 16, 19),
                            uv_buf_init(const_cast<char*>(m.data()) + 35, m.size() - 35),
                        };
                        client.t->write(bufs, 3);
                        after = miproxy::proxy::transport_stats();
                        CHECK(client.t->write_queue_bytes() == 0);
                        client.t->read_start();
                      });
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(client.received == client.message);
  CHECK(after.tls_writes - before.tls_writes == 1);
  CHECK(after.try_writes - before.try_writes == 1);
  CHECK(after.uv_writes - before.uv_writes == 0);
  CHECK(after.bytes_copied - before.bytes_copied == 0);
}
