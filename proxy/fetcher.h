#pragma once
// The real auth::HttpFetcher: one-shot HTTP/1.1 requests over proxy's Connector (the same TLS
// code as the data path), used for every token endpoint. One connection per request, sent with
// "Connection: close"; no pooling, no redirects, and proxy environment variables (HTTP_PROXY,
// HTTPS_PROXY, NO_PROXY) are never consulted: token endpoints are reached directly.

#include <uv.h>

#include <cstddef>
#include <functional>
#include <unordered_set>

#include "auth/http_fetcher.h"
#include "proxy/transport.h"

namespace miproxy::proxy {

class Fetcher : public auth::HttpFetcher {
 public:
  // Responses whose body exceeds this fail with TOO_LARGE; so do header blocks over 64 KiB.
  static constexpr size_t kMaxBodyBytes = 1024 * 1024;
  static constexpr size_t kMaxHeaderBytes = 64 * 1024;

  // |loop| and |connector| must outlive the Fetcher and belong to the calling thread.
  Fetcher(uv_loop_t* loop, Connector& connector);
  // Abandons fetches still in flight without calling their |done| (their owners are being
  // torn down too); their sockets and timers are closed.
  ~Fetcher() override;
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  // URL: "http://" or "https://", host (DNS name, IPv4, or [IPv6]), optional port, path and
  // query (the fragment is dropped; user info is rejected). Sends
  //   METHOD path HTTP/1.1, Host, |req.headers| in order (except Host, Content-Length,
  //   Connection and Transfer-Encoding, which are derived), Content-Length when the body is
  //   non-empty or the method is POST/PUT/PATCH, Connection: close.
  // The response may be framed by Content-Length, chunked, or the end of the connection;
  // 1xx interim responses are skipped. Errors: invalid URL or malformed response → PROTOCOL;
  // resolve → DNS; refused/reset → CONNECT; certificate or handshake → TLS; |req.timeout|
  // (whole exchange) → TIMEOUT; too big → TOO_LARGE. |done| runs exactly once on |loop|, never
  // inside fetch().
  void fetch(auth::FetchRequest req, std::function<void(auth::FetchResult)> done) override;

  // Exchanges in flight (tests, shutdown checks).
  size_t in_flight() const { return live_.size(); }

 private:
  struct Exchange;
  uv_loop_t* loop_;
  Connector& connector_;
  std::unordered_set<Exchange*> live_;
};

}  // namespace miproxy::proxy
