#include "proxy/fetcher.h"

#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>

#include "unit/support/test_pki.h"
#include "unit/support/test_server.h"

namespace {

using miproxy::auth::FetchError;
using miproxy::auth::FetchRequest;
using miproxy::auth::FetchResult;
using miproxy::proxy::Connector;
using miproxy::proxy::Fetcher;
using miproxy::test::TestConn;
using miproxy::test::TestPki;
using miproxy::test::TestServer;
using miproxy::test::TestServerOptions;
using namespace std::chrono_literals;

const TestPki& pki() {
  static TestPki instance;
  return instance;
}

// What the server saw, for assertions after the exchange.
struct Seen {
  std::mutex mu;
  std::string head;
  std::string body;
  int requests = 0;
};

// A server handler that records one request and answers with |response| verbatim, then closes.
TestServer::Handler respond_with(Seen* seen, std::string response) {
  return [seen, response](TestConn& conn) {
    std::string head;
    std::string body;
    if (!conn.read_request(&head, &body)) {
      return;
    }
    {
      std::lock_guard<std::mutex> lock(seen->mu);
      seen->head = head;
      seen->body = body;
      seen->requests++;
    }
    conn.write_all(response);
  };
}

TestServerOptions tls_options() {
  TestServerOptions o;
  o.tls = true;
  o.cert = pki().server_cert;
  o.key = pki().server_key;
  return o;
}

// Runs one fetch to completion on a fresh loop; checks |done| ran exactly once and never inside
// fetch(), and that the loop closes cleanly.
FetchResult run_fetch(FetchRequest req) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  int calls = 0;
  std::optional<FetchResult> result;
  {
    Connector connector(&loop);
    Fetcher fetcher(&loop, connector);
    fetcher.fetch(std::move(req), [&](FetchResult r) {
      calls++;
      result = std::move(r);
    });
    CHECK(calls == 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(fetcher.in_flight() == 0);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  REQUIRE(calls == 1);
  return std::move(*result);
}

std::string base_url(const char* scheme, uint16_t port) {
  return std::string(scheme) + "://127.0.0.1:" + std::to_string(port);
}

std::string header_of(const miproxy::auth::FetchResponse& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) {
      return v;
    }
  }
  return "";
}

const char kJsonResponse[] =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 27\r\n"
    "\r\n"
    "{\"access_token\":\"redacted\"}";

}  // namespace

TEST_CASE("Fetcher GET over http sends the exact request and reads a Content-Length body",
          "[fetcher]") {
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen, kJsonResponse));
  FetchRequest req;
  req.url = base_url("http", server.port()) +
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fx#frag";
  req.headers = {{"Metadata", "true"}, {"Host", "ignored.example"}};
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  CHECK(header_of(*r, "Content-Type") == "application/json");
  CHECK(r->body == "{\"access_token\":\"redacted\"}");
  std::lock_guard<std::mutex> lock(seen.mu);
  CHECK(seen.head ==
        "GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fx "
        "HTTP/1.1\r\n"
        "Host: 127.0.0.1:" +
            std::to_string(server.port()) +
            "\r\n"
            "Metadata: true\r\n"
            "Connection: close\r\n"
            "\r\n");
}

TEST_CASE("Fetcher POST sends the body with Content-Length, including an empty body", "[fetcher]") {
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen, kJsonResponse));
  FetchRequest req;
  req.method = "POST";
  req.url = base_url("http", server.port()) + "/tenant/oauth2/v2.0/token";
  req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
  req.body = "grant_type=client_credentials&scope=x";
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    CHECK(seen.head ==
          "POST /tenant/oauth2/v2.0/token HTTP/1.1\r\n"
          "Host: 127.0.0.1:" +
              std::to_string(server.port()) +
              "\r\n"
              "Content-Type: application/x-www-form-urlencoded\r\n"
              "Content-Length: 37\r\n"
              "Connection: close\r\n"
              "\r\n");
    CHECK(seen.body == "grant_type=client_credentials&scope=x");
  }

  Seen seen2;
  TestServer server2(TestServerOptions{}, respond_with(&seen2, kJsonResponse));
  req.url = base_url("http", server2.port()) + "/empty";
  req.headers.clear();
  req.body.clear();
  FetchResult r2 = run_fetch(req);
  REQUIRE(r2.has_value());
  std::lock_guard<std::mutex> lock(seen2.mu);
  CHECK(seen2.head.find("\r\nContent-Length: 0\r\n") != std::string::npos);
}

TEST_CASE("Fetcher GET and POST over https verify the server with the given CA", "[fetcher]") {
  Seen seen;
  TestServer server(tls_options(), respond_with(&seen, kJsonResponse));
  FetchRequest req;
  req.url = "https://localhost:" + std::to_string(server.port()) + "/token?x=1";
  req.ca_file = pki().ca_cert;
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  CHECK(r->body == "{\"access_token\":\"redacted\"}");
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    CHECK(seen.head.starts_with(
        "GET /token?x=1 HTTP/1.1\r\nHost: localhost:" + std::to_string(server.port()) + "\r\n"));
  }

  req.method = "POST";
  req.body = "a=b";
  FetchResult r2 = run_fetch(req);
  REQUIRE(r2.has_value());
  std::lock_guard<std::mutex> lock(seen.mu);
  CHECK(seen.body == "a=b");
  CHECK(seen.requests == 2);
}

TEST_CASE("Fetcher over https with an untrusted certificate fails with TLS", "[fetcher]") {
  TestServerOptions options = tls_options();
  options.cert = pki().self_cert;
  options.key = pki().self_key;
  Seen seen;
  TestServer server(options, respond_with(&seen, kJsonResponse));
  FetchRequest req;
  req.url = "https://localhost:" + std::to_string(server.port()) + "/token";
  req.ca_file = pki().ca_cert;
  FetchResult r = run_fetch(req);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind == FetchError::Kind::TLS);
  CHECK(r.error().message == "certificate verify failed: self-signed certificate (localhost)");

  // The same server is accepted by thumbprint (Service Fabric).
  req.ca_file.clear();
  req.pinned_sha1 = pki().self_sha1;
  FetchResult pinned = run_fetch(req);
  REQUIRE(pinned.has_value());
  CHECK(pinned->status == 200);
  std::lock_guard<std::mutex> lock(seen.mu);
  CHECK(seen.requests == 1);
}

TEST_CASE("Fetcher reads a chunked response", "[fetcher]") {
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen,
                                                      "HTTP/1.1 200 OK\r\n"
                                                      "Transfer-Encoding: chunked\r\n"
                                                      "\r\n"
                                                      "5\r\nhello\r\n"
                                                      "7;ext=1\r\n, world\r\n"
                                                      "0\r\n"
                                                      "\r\n"));
  FetchRequest req;
  req.url = base_url("http", server.port()) + "/";
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  CHECK(r->body == "hello, world");
}

TEST_CASE("Fetcher reads a body delimited by the end of the connection", "[fetcher]") {
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen,
                                                      "HTTP/1.1 400 Bad Request\r\n"
                                                      "Connection: close\r\n"
                                                      "\r\n"
                                                      "{\"error\":\"invalid_request\"}"));
  FetchRequest req;
  req.url = base_url("http", server.port()) + "/";
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->status == 400);
  CHECK(r->body == "{\"error\":\"invalid_request\"}");
}

TEST_CASE("Fetcher reads a close-delimited body over TLS", "[fetcher]") {
  Seen seen;
  TestServer server(tls_options(), respond_with(&seen,
                                                "HTTP/1.1 200 OK\r\n"
                                                "\r\n"
                                                "until close"));
  FetchRequest req;
  req.url = "https://127.0.0.1:" + std::to_string(server.port()) + "/";
  req.ca_file = pki().ca_cert;
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->body == "until close");
}

TEST_CASE("Fetcher skips an interim 100 response", "[fetcher]") {
  Seen seen;
  TestServer server(
      TestServerOptions{},
      respond_with(&seen, std::string("HTTP/1.1 100 Continue\r\n\r\n") + kJsonResponse));
  FetchRequest req;
  req.url = base_url("http", server.port()) + "/";
  FetchResult r = run_fetch(req);
  REQUIRE(r.has_value());
  CHECK(r->status == 200);
  CHECK(r->body == "{\"access_token\":\"redacted\"}");
}

TEST_CASE("Fetcher accepts a 1 MiB body and refuses a larger one with TOO_LARGE", "[fetcher]") {
  size_t size = GENERATE(size_t{1024 * 1024}, size_t{1024 * 1024 + 1});
  CAPTURE(size);
  bool chunked = GENERATE(false, true);
  CAPTURE(chunked);
  std::string body(size, 'x');
  std::string response;
  if (chunked) {
    response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (size_t off = 0; off < body.size(); off += 65536) {
      size_t n = std::min<size_t>(65536, body.size() - off);
      char hex[32];
      std::snprintf(hex, sizeof(hex), "%zx\r\n", n);
      response += hex;
      response.append(body, off, n);
      response += "\r\n";
    }
    response += "0\r\n\r\n";
  } else {
    response = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n" + body;
  }
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen, response));
  FetchRequest req;
  req.url = base_url("http", server.port()) + "/big";
  FetchResult r = run_fetch(req);
  if (size <= Fetcher::kMaxBodyBytes) {
    REQUIRE(r.has_value());
    CHECK(r->body.size() == size);
  } else {
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().kind == FetchError::Kind::TOO_LARGE);
  }
}

TEST_CASE("Fetcher times out against a server that never answers", "[fetcher]") {
  bool tls = GENERATE(false, true);
  CAPTURE(tls);
  // Reads the request and then waits for the client to give up.
  TestServer server(tls ? tls_options() : TestServerOptions{},
                    [](TestConn& conn) { conn.drain_until_eof(); });
  FetchRequest req;
  req.url = base_url(tls ? "https" : "http", server.port()) + "/slow";
  req.ca_file = pki().ca_cert;
  req.timeout = 300ms;
  FetchResult r = run_fetch(req);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind == FetchError::Kind::TIMEOUT);
}

TEST_CASE("Fetcher maps a refused connection to CONNECT", "[fetcher]") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  uint16_t port = ntohs(addr.sin_port);
  ::close(fd);
  FetchRequest req;
  req.url = base_url("http", port) + "/";
  FetchResult r = run_fetch(req);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind == FetchError::Kind::CONNECT);
  CHECK(r.error().message ==
        "connect to 127.0.0.1:" + std::to_string(port) + ": connection refused");
}

TEST_CASE("Fetcher reports malformed and truncated responses as PROTOCOL", "[fetcher]") {
  std::string response = GENERATE(std::string("SMTP ready\r\n\r\n"),
                                  std::string("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
                                  std::string("HTTP/1.1 200 OK\r\nContent-Le"));
  CAPTURE(response);
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen, response));
  FetchRequest req;
  req.url = base_url("http", server.port()) + "/";
  FetchResult r = run_fetch(req);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind == FetchError::Kind::PROTOCOL);
}

TEST_CASE("Fetcher rejects an invalid URL without calling done inline", "[fetcher]") {
  std::string url =
      GENERATE(std::string("ftp://127.0.0.1/"), std::string("http://"),
               std::string("http://user@127.0.0.1/"), std::string("http://127.0.0.1:99999/"),
               std::string("http://[::1/"), std::string("127.0.0.1:80/x"));
  CAPTURE(url);
  FetchRequest req;
  req.url = url;
  FetchResult r = run_fetch(req);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind == FetchError::Kind::PROTOCOL);
}

TEST_CASE("Fetcher ignores proxy environment variables", "[fetcher]") {
  Seen seen;
  TestServer server(TestServerOptions{}, respond_with(&seen, kJsonResponse));
  // A proxy that would refuse every connection if it were used.
  ::setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
  ::setenv("http_proxy", "http://127.0.0.1:1", 1);
  FetchRequest req;
  req.url = base_url("http", server.port()) + "/direct";
  FetchResult r = run_fetch(req);
  ::unsetenv("HTTP_PROXY");
  ::unsetenv("http_proxy");
  REQUIRE(r.has_value());
  std::lock_guard<std::mutex> lock(seen.mu);
  CHECK(seen.head.starts_with("GET /direct HTTP/1.1\r\n"));
}

TEST_CASE("Fetcher reaches an IPv6 literal in brackets", "[fetcher]") {
  // The test server listens on IPv4 only; a refused [::1] proves the literal was parsed and
  // connected to directly (no resolver involved).
  FetchRequest req;
  req.url = "http://[::1]:1/";
  FetchResult r = run_fetch(req);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().kind == FetchError::Kind::CONNECT);
  CHECK(r.error().message.starts_with("connect to [::1]:1: "));
}

TEST_CASE("Destroying the Fetcher abandons fetches and closes everything", "[fetcher]") {
  TestServer server(TestServerOptions{}, [](TestConn& conn) { conn.drain_until_eof(); });
  uv_loop_t loop;
  uv_loop_init(&loop);
  int calls = 0;
  {
    Connector connector(&loop);
    Fetcher fetcher(&loop, connector);
    FetchRequest req;
    req.url = base_url("http", server.port()) + "/";
    fetcher.fetch(req, [&](FetchResult) { calls++; });
    // Let the connection open and the request go out, then tear down mid-exchange.
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(fetcher.in_flight() == 1);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(uv_loop_close(&loop) == 0);
  CHECK(calls == 0);
}
