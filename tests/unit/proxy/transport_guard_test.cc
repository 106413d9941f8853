// base/guard.h at the transport trampolines: a handler that throws from a libuv callback gets
// its connection failed (on_error), the process and the loop go on serving.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/guard.h"
#include "proxy/transport.h"
#include "unit/support/capture_stderr.h"

namespace {

using miproxy::proxy::Transport;

// Accepts connections on 127.0.0.1; the first byte 'T' makes on_read throw, anything else is
// echoed back and the connection closed.
struct Server {
  struct Conn : Transport::Handler {
    Server* server;
    Transport* t;
    void on_read(const char* data, size_t len) override {
      if (data[0] == 'T') throw std::runtime_error("handler bug");
      server->echoed.append(data, len);
      t->write(data, len);
      t->close();
      server->done();
    }
    void on_eof() override { t->close(); }
    void on_error(int, const std::string& what) override {
      server->errors.push_back(what);
      t->close();
      server->done();
    }
    void on_drain() override {}
  };

  uv_loop_t* loop;
  uv_tcp_t listener;
  int port = 0;
  int finished = 0;
  int expected = 0;
  std::string echoed;
  std::vector<std::string> errors;
  std::vector<std::unique_ptr<Conn>> conns;

  explicit Server(uv_loop_t* l) : loop(l) {
    uv_tcp_init(loop, &listener);
    listener.data = this;
    sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_bind(&listener, reinterpret_cast<sockaddr*>(&addr), 0);
    uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 16, [](uv_stream_t* s, int) {
      auto* self = static_cast<Server*>(s->data);
      Transport* t = miproxy::proxy::accept_plain(self->loop, s);
      auto c = std::make_unique<Conn>();
      c->server = self;
      c->t = t;
      t->set_handler(c.get());
      t->read_start();
      self->conns.push_back(std::move(c));
    });
    sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound), &len);
    port = ntohs(bound.sin_port);
  }
  void done() {
    if (++finished == expected) uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
  }
};

// A blocking client: connects and sends |bytes| (the kernel queues them until the loop runs).
int connect_and_send(int port, const std::string& bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  return fd;
}

}  // namespace

TEST_CASE("A handler that throws in on_read gets on_error and the loop keeps serving",
          "[guard][transport]") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uint64_t before = miproxy::guard::caught();
  {
    Server server(&loop);
    server.expected = 2;
    int bad = connect_and_send(server.port, "Throw");
    int good = connect_and_send(server.port, "hello");
    miproxy::test::CaptureStderr capture;
    uv_run(&loop, UV_RUN_DEFAULT);
    auto lines = capture.lines();
    REQUIRE(server.errors.size() == 1);
    CHECK(server.errors[0].find("internal error") != std::string::npos);
    CHECK(server.echoed == "hello");
    CHECK(miproxy::guard::caught() == before + 1);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].find("\"where\":\"transport read\"") != std::string::npos);
    char buf[16];
    CHECK(::read(good, buf, sizeof buf) == 5);  // the other connection got its answer
    CHECK(::read(bad, buf, sizeof buf) == 0);   // the failed one was closed, not left hanging
    ::close(bad);
    ::close(good);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(uv_loop_close(&loop) == 0);
}
