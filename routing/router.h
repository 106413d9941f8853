#pragma once
// Compiles config routes into an immutable table once per config load; match() only compares
// precomputed strings (no allocation, no regex). First match in config order wins.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace miproxy::routing {

// Where a route forwards to. For a templated upstream ("https://{host}") the host comes from
// the request, so resolve() fills it per request.
struct Upstream {
  std::string host;        // lower-case DNS name or IP literal (no brackets)
  uint16_t port = 443;
  std::string base_path;   // "" or "/prefix" without trailing slash; prepended to the request path
  bool tls = true;         // always true for routes (config refuses http upstreams)
  // "host" or "host:port" as it goes into the Host header / SNI key.
  std::string authority() const;
};

struct CompiledRoute {
  const config::Route* route = nullptr;  // points into the Config that the Table keeps alive
  bool host_wildcard = false;
  std::string host_suffix;   // for "*.b.c": ".b.c"; for exact: the host itself
  bool upstream_templated = false;
  Upstream upstream;         // fixed part (host empty when templated)
  std::vector<std::string> methods;  // copy of route->methods
  bool storage = false;      // Storage x-ms-version rule applies (interface.md)
  bool usable = true;        // false if route->upstream does not parse (hand-built configs only;
                             // config::parse() refuses those): such a route never matches
};

struct MatchResult {
  // BAD_PATH: a route with a path_prefix matched, but the path could leave that prefix once an
  // upstream normalises it (see path_escape()). BAD_HOST: a route with upstream "https://{host}"
  // matched, but the request host is not a DNS name to send a token to. Both are answered 400
  // and never forwarded; no later route is tried.
  enum class Outcome { MATCHED, NO_ROUTE, METHOD_NOT_ALLOWED, BAD_PATH, BAD_HOST };
  Outcome outcome = Outcome::NO_ROUTE;
  const CompiledRoute* route = nullptr;  // set for every outcome except NO_ROUTE
  std::string_view problem;              // BAD_PATH / BAD_HOST: why, in words (static text)
};

class Table {
 public:
  // |config| must outlive nothing: the table holds a reference to it.
  explicit Table(std::shared_ptr<const config::Config> config);

  // |host|: the request's Host header or absolute-form authority, any case, with or without
  // ":port" (the port is ignored for matching). |path|: origin-form path with query.
  // A route whose host and path match but whose methods exclude |method| yields
  // METHOD_NOT_ALLOWED only if no later route matches fully. A path_prefix matches at a segment
  // boundary: "/kv" matches "/kv", "/kv/x" and "/kv?q", not "/kvx" or "/kv../x"; a prefix
  // ending in '/' matches what starts with it. Does not allocate.
  MatchResult match(std::string_view host, std::string_view path, std::string_view method) const;

  const std::vector<CompiledRoute>& routes() const { return routes_; }
  const config::Config& config() const { return *config_; }
  std::shared_ptr<const config::Config> config_ptr() const { return config_; }

 private:
  std::shared_ptr<const config::Config> config_;
  std::vector<CompiledRoute> routes_;
};

// The upstream to use for |route| and a request to |request_host| (port stripped, lower-case).
Upstream resolve_upstream(const CompiledRoute& route, std::string_view request_host);

// The path to send upstream: strip_prefix applied (keeping a leading '/'), base path prepended.
std::string upstream_path(const CompiledRoute& route, const Upstream& upstream,
                          std::string_view request_path);

// Host without port, lower-cased; "[::1]:80" -> "::1". A trailing dot ("example.com.") is
// dropped, as for matching.
std::string normalize_host(std::string_view host);

// True for an Azure Storage service host: a name ending in .blob/.queue/.table/.dfs/.file
// .core.windows.net with at least one label before it (any case).
bool is_storage_host(std::string_view host);

// True if |path| (before any '?') has a "." or ".." segment, literal or percent-encoded, also
// when path parameters follow it ("..;x", "..%3Bx": servers such as Tomcat drop them).
bool has_dot_segment(std::string_view path);

// Why |path| (before any '?') could name something outside the path it appears to be under
// once an upstream decodes or normalises it, or "" when it cannot: a dot segment (see
// has_dot_segment()), a backslash (read as '/' by some servers), or an encoded '/' or '\'
// (%2F, %5C). On a route with a path_prefix it is checked on the part of the path that goes
// upstream, after strip_prefix: "/orders/../other" must not pass as "/orders/".
std::string_view path_escape(std::string_view path);

// True if |host| (no port, no brackets) is a DNS name as RFC 1123 writes them: labels of
// letters, digits and '-' (not first or last), 1..63 bytes, at most 253 in all, and a last
// label that is not all digits, so that no IPv4 spelling ("0x7f.0.0.1", "0127.0.0.1",
// "2130706433") passes. The host of a "https://{host}" upstream must be one.
bool is_dns_host_name(std::string_view host);

}  // namespace miproxy::routing
