#pragma once
// The configuration file as typed, validated, immutable structs (interface.md "Config file").
// load() parses JSON, checks every key against one table of known keys, types, defaults and
// validators, and returns either a Config or every error found, each naming the JSON path of
// the offending value ("routes[2].upstream: ..."). Unknown keys are errors: a typo must not
// silently drop a restriction. A loaded Config is never mutated; share it as
// std::shared_ptr<const Config>.

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace miproxy::config {

struct Listener {
  enum class Kind { TCP, UNIX };
  Kind kind = Kind::TCP;
  std::string address;            // TCP: as written, "127.0.0.1:8080" or "[::1]:8080"
  std::string host;               // TCP: "127.0.0.1" / "::1" (brackets removed)
                                  //   always an IP literal: "localhost" is stored as 127.0.0.1
  uint16_t port = 0;              // TCP: 0 lets the OS choose (tests)
  std::string unix_path;          // UNIX: socket path
  mode_t mode = 0660;             // UNIX: "mode": "0660" (octal string)
  std::vector<uid_t> allowed_uids;  // UNIX: empty = any peer the file mode lets in
  bool allow_remote = false;      // TCP: permits a non-loopback address
  // Web page origins whose requests (Origin / Sec-Fetch-Site) are served, lower-case
  // "scheme://host[:port]" without a default port; empty = none (docs/security.md).
  std::vector<std::string> allowed_origins;
};

struct Admin {
  bool enabled = false;           // false when "admin" is absent
  std::string address;
  std::string host;
  uint16_t port = 0;
  bool allow_quit = false;
  bool allow_remote = false;      // permits a non-loopback admin address
};

struct TlsGlobal {
  std::string ca_file;            // empty: OpenSSL's default verify paths (system store)
  int min_version = 0x0303;       // TLS1_2_VERSION or TLS1_3_VERSION ("1.2" / "1.3")
};

struct LogConfig {
  std::string level = "info";     // debug | info | warn | error
  std::string format = "json";    // json (the only format for now)
};

// Limits on what a client may send (optional "limits" object; defaults shown).
struct Limits {
  uint32_t max_header_bytes = 64 * 1024;
  uint32_t max_headers = 100;
  uint32_t max_uri_bytes = 8 * 1024;
  double header_timeout = 30;     // seconds to receive a whole request head
  double idle_timeout = 60;       // seconds a keep-alive client connection may sit idle
  // Seconds miproxy keeps reading (and discarding) a client's unsent request body after
  // answering early, so its answer is not lost to a reset (lingering close).
  double lingering_timeout = 5;
  uint32_t max_replay_body = 1024 * 1024;  // body bytes held for a replay (scope: auto, CAE)
  uint32_t max_learned_scopes = 1024;  // scope "auto": upstream hosts remembered per route (LRU)
  // Resources miproxy holds for clients and upstream hosts.
  uint32_t max_connections = 4096;         // client connections open at once, whole process
  uint32_t max_queued_response_bytes = 1024 * 1024;  // per client: stop parsing pipelined requests above
  uint32_t max_pool_hosts = 256;           // per worker: upstream hosts with idle pooled connections
  uint32_t max_tls_sessions = 1024;        // per worker: upstream peers with a cached TLS session
  // Status line + header fields of an upstream response; larger heads answer 502.
  uint32_t max_response_header_bytes = 64 * 1024;
  // Seconds one request to a token endpoint (IMDS, Entra, ...) may take, connect to last byte.
  double token_request_timeout = 10;
  // Seconds a request waits for a token when none is cached before it is answered 502
  // TokenAcquisitionFailed; the fetch goes on for later requests.
  double token_wait_timeout = 15;
  // Seconds a body may make no progress, in either direction: a request body the client stops
  // sending (408, or close once the response started) and a response the client stops reading
  // (close). The upstream connection is closed, never pooled half-written.
  double body_stall_timeout = 60;
};

struct Identity {
  enum class Type {
    MANAGED_IDENTITY, WORKLOAD_IDENTITY, CLIENT_SECRET, CLIENT_CERTIFICATE,
    AZURE_CLI, DEFAULT, TOKEN_FILE
  };
  std::string name;               // key in "identities"
  Type type = Type::MANAGED_IDENTITY;
  // managed_identity
  std::string source;             // "" (auto) | imds | app_service | arc | service_fabric | cloud_shell
  std::string endpoint;           // full token URL override
  std::string client_id;          // also: workload_identity / client_secret / client_certificate
  std::string object_id;
  std::string resource_id;
  // Entra types (workload_identity, client_secret, client_certificate; default chain)
  std::string tenant_id;
  std::string authority_host;     // "" = https://login.microsoftonline.com
  std::string federated_token_file;  // workload_identity: overrides AZURE_FEDERATED_TOKEN_FILE
  std::string secret_file;        // client_secret
  std::string certificate_file;   // client_certificate: PEM with key (and chain)
  bool send_certificate_chain = false;  // client_certificate: add x5c
  // token_file
  std::string path;
};

struct HeaderRules {
  std::vector<std::pair<std::string, std::string>> set;  // name (as written), value
  std::vector<std::string> remove;                        // names, lower-cased
};

struct Timeouts {
  double connect = 10;            // seconds: TCP connect + TLS handshake
  double idle = 60;               // seconds a pooled upstream connection may sit idle
  double response = 60;           // seconds from request sent to response head; also max gap between body reads
};

struct Route {
  std::string name;
  size_t index = 0;               // position in "routes"
  // match
  std::string match_host;         // "" = any; "a.b.c" exact; "*.b.c" exactly one leading label. Lower-cased.
  std::string path_prefix;        // "" = any
  std::vector<std::string> methods;  // upper-case; empty = any
  // Without match_host: Host values answered besides loopback ones and the listener's own
  // address (DNS rebinding defence), lower-case, exact or "*.b.c". Empty with match_host.
  std::vector<std::string> allowed_hosts;
  // target
  std::string upstream;           // as written: "https://host[:port][/base]" or "https://{host}"
  std::string identity;           // key into Config::identities
  std::string scope;              // Entra scope, or "auto"
  bool strip_prefix = false;
  HeaderRules headers;
  std::string tls_ca_file;        // "" = the global tls.ca_file
  Timeouts timeouts;
  enum class InboundAuthorization { REPLACE, REJECT };
  InboundAuthorization inbound_authorization = InboundAuthorization::REPLACE;
};

struct Config {
  std::vector<Listener> listeners;
  Admin admin;
  unsigned workers = 0;           // 0 = "auto" (number of cores)
  double shutdown_grace = 30;
  TlsGlobal tls;
  LogConfig log;
  Limits limits;
  std::map<std::string, Identity> identities;
  std::vector<Route> routes;
  std::string source_path;        // the file it came from ("" when parsed from text)
};

struct Diagnostic {
  std::string path;               // JSON path, e.g. "routes[2].upstream"
  std::string message;
  std::string to_string() const { return path.empty() ? message : path + ": " + message; }
};

struct LoadResult {
  std::shared_ptr<const Config> config;
  std::vector<Diagnostic> warnings;  // e.g. shadowed routes
};

// Parses and validates |json_text|. On failure returns every error found (not just the first).
std::expected<LoadResult, std::vector<Diagnostic>> parse(const std::string& json_text,
                                                         const std::string& source_path = "");
// Reads |path| and calls parse(). An unreadable file is one error with an empty JSON path.
std::expected<LoadResult, std::vector<Diagnostic>> load_file(const std::string& path);

// Human-readable summary for `miproxy check`: listeners, then each route with its match,
// upstream, identity and scope, one per line.
std::string describe(const Config& config);

const char* to_string(Identity::Type type);

// A route's "upstream" split into its parts: "https://host[:port][/base]" or
// "https://{host}[:port][/base]" (templated: the host comes from the request).
struct UpstreamUrl {
  bool templated = false;
  std::string host;        // lower-case DNS name or IP literal without brackets; "" when templated
  uint16_t port = 443;
  std::string base_path;   // "" or "/base" without a trailing slash
};

// Parses |url| as written in a route's "upstream". Returns a message (without JSON path) saying
// what is wrong otherwise: not https, userinfo, query or fragment, bad host or port.
std::expected<UpstreamUrl, std::string> parse_upstream_url(std::string_view url);

}  // namespace miproxy::config
