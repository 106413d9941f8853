#pragma once
// The one way auth/ talks HTTP: a small interface that proxy/ implements over its real client
// (the same TLS and HTTP/1 code the data path uses), and that unit tests fake. auth/ never
// includes proxy/.

#include <chrono>
#include <expected>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace miproxy::auth {

struct FetchRequest {
  std::string method = "GET";
  std::string url;   // "http://host[:port]/path?query" or "https://..."
  std::vector<std::pair<std::string, std::string>> headers;  // sent as given (no Host: it is derived)
  std::string body;  // sent with Content-Length when non-empty or method is POST
  // TLS (https only). Empty ca_file: the system store.
  std::string ca_file;
  // Service Fabric: when set, the server certificate is accepted if and only if its SHA-1
  // thumbprint (40 hex digits, case-insensitive) equals this; chain and name are not checked.
  std::string pinned_sha1;
  std::chrono::milliseconds timeout{30000};  // whole exchange: connect to last body byte
};

struct FetchResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names as received
  std::string body;
  // First header named |name| (ASCII case-insensitive), or "".
  std::string header(std::string_view name) const;
};

struct FetchError {
  enum class Kind { DNS, CONNECT, TLS, TIMEOUT, PROTOCOL, TOO_LARGE, CANCELLED };
  Kind kind = Kind::CONNECT;
  std::string message;  // human words, e.g. "connect to 127.0.0.1:40000: connection refused"
};

using FetchResult = std::expected<FetchResponse, FetchError>;

class HttpFetcher {
 public:
  virtual ~HttpFetcher() = default;
  // Starts |req| on the fetcher's loop (the control thread). |done| runs exactly once, on that
  // loop, never inside fetch() itself. Responses larger than 1 MiB fail with TOO_LARGE.
  // Proxies from the environment are never used (token endpoints must be reached directly).
  virtual void fetch(FetchRequest req, std::function<void(FetchResult)> done) = 0;
};

}  // namespace miproxy::auth
