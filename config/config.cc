// Parsing and validation of the config file. Each JSON object has one table below (key, kind,
// which identity types allow or require it, validator); schema::read_object() walks it. Checks
// that span several keys (exactly one of address/unix, {host} needs a wildcard match, route
// identities exist) run after the walk. Nothing here throws to the caller.

#include "config/config.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <set>

#include "config/schema.h"

namespace miproxy::config {

using schema::ALL;
using schema::Ctx;
using schema::Field;
using schema::Json;
using schema::Kind;
using schema::NONE;
using schema::quote;

namespace {

// Longest duration accepted anywhere: larger values overflow nothing but are certainly typos.
constexpr double MAX_SECONDS = 86400;

// ---- small value validators (each reports at |path| and returns false on error) ----

bool nonempty(Ctx& ctx, const Json& v, const std::string& path, std::string& out) {
  const auto& s = v.get_ref<const std::string&>();
  if (s.empty()) {
    ctx.error(path, "must not be empty");
    return false;
  }
  out = s;
  return true;
}

bool seconds(Ctx& ctx, const Json& v, const std::string& path, double& out, bool allow_zero) {
  double d = v.get<double>();
  if (!std::isfinite(d) || d < 0 || (!allow_zero && d == 0)) {
    ctx.error(path,
              allow_zero ? "must be a number of seconds >= 0" : "must be a number of seconds > 0");
    return false;
  }
  if (d > MAX_SECONDS) {
    ctx.error(path, "must be at most 86400 seconds");
    return false;
  }
  out = d;
  return true;
}

bool uint32_in(Ctx& ctx, const Json& v, const std::string& path, uint32_t& out, uint64_t min) {
  uint64_t n = v.get<uint64_t>();
  if (n < min || n > UINT32_MAX) {
    ctx.error(path, "must be an integer from " + std::to_string(min) + " to " +
                        std::to_string(UINT32_MAX));
    return false;
  }
  out = static_cast<uint32_t>(n);
  return true;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return false;
  }
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

constexpr const char* NAME_RULE = "must be 1 to 128 letters, digits, '.', '_' or '-'";

bool no_control(std::string_view s) {
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// A browser origin as the Origin header serialises it: "scheme://host[:port]", lower-case,
// without the scheme's default port (so "https://App.example:443" is stored as the browser
// sends it, "https://app.example").
std::optional<std::string> web_origin(std::string_view text, std::string* error) {
  std::string s = schema::to_lower(text);
  if (s == "null" || s == "*") {
    *error = "\"" + s + "\" is not allowed: any sandboxed page or file sends Origin: null, and "
             "\"*\" would admit every web page; list exact origins";
    return std::nullopt;
  }
  size_t sep = s.find("://");
  bool scheme_ok = sep != std::string::npos && sep > 0 && std::isalpha(static_cast<unsigned char>(s[0])) &&
                   std::all_of(s.begin(), s.begin() + static_cast<long>(sep), [](char c) {
                     return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' ||
                            c == '.';
                   });
  if (!scheme_ok) {
    *error = "must be an origin scheme://host[:port] such as \"https://app.example\"";
    return std::nullopt;
  }
  std::string scheme = s.substr(0, sep);
  std::string_view authority = std::string_view(s).substr(sep + 3);
  if (authority.find_first_of("/?#@") != std::string_view::npos) {
    *error = "must be an origin scheme://host[:port], without path, query or user info "
             "(browsers send e.g. \"https://app.example:8443\")";
    return std::nullopt;
  }
  std::string_view host = authority, port;
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    bool digits = !port.empty() && port.size() <= 5 &&
                  std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoul(std::string(port)) < 1 || std::stoul(std::string(port)) > 65535) {
      *error = "port must be a number from 1 to 65535";
      return std::nullopt;
    }
  }
  in6_addr addr6;
  bool host_ok = host.size() > 2 && host.front() == '[' && host.back() == ']'
                     ? inet_pton(AF_INET6, std::string(host.substr(1, host.size() - 2)).c_str(),
                                 &addr6) == 1
                     : schema::is_dns_name(host);
  if (!host_ok) {
    *error = "not a valid host in the origin";
    return std::nullopt;
  }
  if ((scheme == "https" && port == "443") || (scheme == "http" && port == "80")) {
    port = {};
  }
  return scheme + "://" + std::string(host) + (port.empty() ? "" : ":" + std::string(port));
}

// ---- listeners ----

struct ListenerDraft {
  Listener v;
  bool has_address = false;
  bool has_unix = false;
  bool address_ok = false;
  bool loopback = false;
  std::vector<std::string> tcp_only_keys;   // paths of keys that need a TCP listener
  std::vector<std::string> unix_only_keys;  // paths of keys that need a Unix listener
};

const Field<ListenerDraft> LISTENER_FIELDS[] = {
    {"address", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, ListenerDraft& d) {
       d.has_address = true;
       d.v.kind = Listener::Kind::TCP;
       d.v.address = v.get<std::string>();
       std::string error;
       auto hp = schema::parse_listen_address(d.v.address, &error);
       if (!hp) {
         ctx.error(path, error);
         return;
       }
       d.v.host = hp->host;
       d.v.port = hp->port;
       d.loopback = hp->loopback;
       d.address_ok = true;
     }},
    {"unix", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, ListenerDraft& d) {
       d.has_unix = true;
       d.v.kind = Listener::Kind::UNIX;
       const auto& p = v.get_ref<const std::string&>();
       // sockaddr_un::sun_path holds 108 bytes including the terminating NUL.
       if (p.empty()) {
         ctx.error(path, "must be a socket path");
       } else if (p.size() > 107) {
         ctx.error(path, "socket path longer than 107 bytes");
       } else if (p.find('\0') != std::string::npos) {
         ctx.error(path, "must not contain NUL");
       } else {
         d.v.unix_path = p;
       }
     }},
    {"mode", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, ListenerDraft& d) {
       d.unix_only_keys.push_back(path);
       const auto& s = v.get_ref<const std::string&>();
       bool ok = s.size() >= 3 && s.size() <= 4 &&
                 std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '7'; });
       if (!ok) {
         ctx.error(path, "must be an octal file mode string such as \"0660\"");
         return;
       }
       d.v.mode = static_cast<mode_t>(std::stoul(s, nullptr, 8));
     }},
    {"allowed_uids", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, ListenerDraft& d) {
       d.unix_only_keys.push_back(path);
       for (size_t i = 0; i < v.size(); ++i) {
         const Json& e = v[i];
         // uid_t is 32 bits; (uid_t)-1 means "no change" to chown and is no real user.
         if (!e.is_number_unsigned() || e.get<uint64_t>() >= UINT32_MAX) {
           ctx.error(schema::index_path(path, i), "must be a numeric user id (integer >= 0)");
           continue;
         }
         d.v.allowed_uids.push_back(static_cast<uid_t>(e.get<uint64_t>()));
       }
     }},
    {"allow_remote", Kind::BOOL, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, ListenerDraft& d) {
       d.tcp_only_keys.push_back(path);
       d.v.allow_remote = v.get<bool>();
     }},
    {"allowed_origins", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, ListenerDraft& d) {
       for (size_t i = 0; i < v.size(); ++i) {
         std::string error;
         auto origin = v[i].is_string() ? web_origin(v[i].get<std::string>(), &error)
                                        : std::nullopt;
         if (!origin) {
           ctx.error(schema::index_path(path, i),
                     error.empty() ? "must be an origin such as \"https://app.example\"" : error);
         } else if (std::find(d.v.allowed_origins.begin(), d.v.allowed_origins.end(), *origin) ==
                    d.v.allowed_origins.end()) {
           d.v.allowed_origins.push_back(*origin);
         }
       }
     }},
};

Listener read_listener(Ctx& ctx, const Json& v, const std::string& path) {
  ListenerDraft d;
  if (!v.is_object()) {
    ctx.error(path, "must be an object with \"address\" or \"unix\"");
    return d.v;
  }
  schema::read_object<ListenerDraft>(ctx, v, path, LISTENER_FIELDS, d);
  if (d.has_address == d.has_unix) {
    ctx.error(path, std::string("exactly one of \"address\" or \"unix\" is required (found ") +
                        (d.has_address ? "both" : "neither") + ")");
    return d.v;
  }
  if (d.has_address) {
    for (const auto& p : d.unix_only_keys) {
      ctx.error(p, "only applies to Unix socket listeners (\"unix\")");
    }
    if (d.address_ok && !d.loopback && !d.v.allow_remote) {
      ctx.error(schema::child_path(path, "address"),
                "not a loopback address; whoever reaches this listener acts with the routes' "
                "identities, so set \"allow_remote\": true to bind it anyway");
    }
  } else {
    for (const auto& p : d.tcp_only_keys) {
      ctx.error(p, "only applies to TCP listeners (\"address\")");
    }
  }
  return d.v;
}

// ---- admin ----

struct AdminDraft {
  Admin v;
  bool address_ok = false;
  bool loopback = false;
};

const Field<AdminDraft> ADMIN_FIELDS[] = {
    {"address", Kind::STRING, ALL, ALL,
     [](Ctx& ctx, const Json& v, const std::string& path, AdminDraft& d) {
       d.v.address = v.get<std::string>();
       std::string error;
       auto hp = schema::parse_listen_address(d.v.address, &error);
       if (!hp) {
         ctx.error(path, error);
         return;
       }
       d.v.host = hp->host;
       d.v.port = hp->port;
       d.loopback = hp->loopback;
       d.address_ok = true;
     }},
    {"allow_quit", Kind::BOOL, ALL, NONE,
     [](Ctx&, const Json& v, const std::string&, AdminDraft& d) {
       d.v.allow_quit = v.get<bool>();
     }},
    {"allow_remote", Kind::BOOL, ALL, NONE,
     [](Ctx&, const Json& v, const std::string&, AdminDraft& d) {
       d.v.allow_remote = v.get<bool>();
     }},
};

// ---- tls, log, limits ----

const Field<TlsGlobal> TLS_FIELDS[] = {
    {"ca_file", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, TlsGlobal& t) {
       nonempty(ctx, v, path, t.ca_file);
     }},
    {"min_version", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, TlsGlobal& t) {
       const auto& s = v.get_ref<const std::string&>();
       if (s == "1.2") {
         t.min_version = 0x0303;
       } else if (s == "1.3") {
         t.min_version = 0x0304;
       } else {
         ctx.error(path, "must be \"1.2\" or \"1.3\"");
       }
     }},
};

const Field<LogConfig> LOG_FIELDS[] = {
    {"level", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, LogConfig& l) {
       const auto& s = v.get_ref<const std::string&>();
       if (s != "debug" && s != "info" && s != "warn" && s != "error") {
         ctx.error(path, "must be one of debug, info, warn, error");
         return;
       }
       l.level = s;
     }},
    {"format", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, LogConfig& l) {
       if (v.get_ref<const std::string&>() != "json") {
         ctx.error(path, "must be \"json\" (the only format)");
         return;
       }
       l.format = "json";
     }},
};

const Field<Limits> LIMITS_FIELDS[] = {
    {"max_header_bytes", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_header_bytes, 1);
     }},
    {"max_headers", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_headers, 1);
     }},
    {"max_uri_bytes", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_uri_bytes, 1);
     }},
    {"header_timeout", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       seconds(ctx, v, path, l.header_timeout, false);
     }},
    {"idle_timeout", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       seconds(ctx, v, path, l.idle_timeout, false);
     }},
    {"max_replay_body", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_replay_body, 0);
     }},
    {"max_learned_scopes", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_learned_scopes, 1);
     }},
    {"max_connections", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_connections, 1);
     }},
    {"max_queued_response_bytes", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_queued_response_bytes, 1024);
     }},
    {"max_pool_hosts", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_pool_hosts, 1);
     }},
    {"max_tls_sessions", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_tls_sessions, 1);
     }},
    {"lingering_timeout", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       seconds(ctx, v, path, l.lingering_timeout, false);
     }},
    {"max_response_header_bytes", Kind::UINT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       uint32_in(ctx, v, path, l.max_response_header_bytes, 1024);
     }},
    {"token_request_timeout", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       seconds(ctx, v, path, l.token_request_timeout, false);
     }},
    {"token_wait_timeout", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       seconds(ctx, v, path, l.token_wait_timeout, false);
     }},
    {"body_stall_timeout", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Limits& l) {
       seconds(ctx, v, path, l.body_stall_timeout, false);
     }},
};

// ---- identities ----

constexpr uint32_t bit(Identity::Type t) { return 1u << static_cast<unsigned>(t); }
constexpr uint32_t MI = bit(Identity::Type::MANAGED_IDENTITY);
constexpr uint32_t WI = bit(Identity::Type::WORKLOAD_IDENTITY);
constexpr uint32_t CS = bit(Identity::Type::CLIENT_SECRET);
constexpr uint32_t CC = bit(Identity::Type::CLIENT_CERTIFICATE);
constexpr uint32_t CLI = bit(Identity::Type::AZURE_CLI);
constexpr uint32_t DEF = bit(Identity::Type::DEFAULT);
constexpr uint32_t TF = bit(Identity::Type::TOKEN_FILE);

constexpr std::array<Identity::Type, 7> ALL_TYPES = {
    Identity::Type::MANAGED_IDENTITY, Identity::Type::WORKLOAD_IDENTITY,
    Identity::Type::CLIENT_SECRET,    Identity::Type::CLIENT_CERTIFICATE,
    Identity::Type::AZURE_CLI,        Identity::Type::DEFAULT,
    Identity::Type::TOKEN_FILE};

void guid_field(Ctx& ctx, const Json& v, const std::string& path, std::string& out,
                const char* what) {
  const auto& s = v.get_ref<const std::string&>();
  if (!schema::is_guid(s)) {
    ctx.error(path, std::string("must be ") + what +
                        " (a GUID such as 11111111-2222-3333-4444-555555555555)");
    return;
  }
  out = s;
}

const Field<Identity> IDENTITY_FIELDS[] = {
    {"source", Kind::STRING, MI, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       const auto& s = v.get_ref<const std::string&>();
       if (s != "imds" && s != "app_service" && s != "arc" && s != "service_fabric" &&
           s != "cloud_shell") {
         ctx.error(path,
                   "must be one of imds, app_service, arc, service_fabric, cloud_shell "
                   "(omit it to detect the source from the environment)");
         return;
       }
       id.source = s;
     }},
    {"endpoint", Kind::STRING, MI, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       std::string error;
       const auto& s = v.get_ref<const std::string&>();
       if (!schema::is_http_url(s, false, &error)) {
         ctx.error(path, error +
                             " (the full token URL, e.g. "
                             "http://169.254.169.254/metadata/identity/oauth2/token)");
         return;
       }
       id.endpoint = s;
     }},
    {"client_id", Kind::STRING, MI | WI | CS | CC | DEF, CS | CC,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       guid_field(ctx, v, path, id.client_id, "a client (application) id");
     }},
    {"object_id", Kind::STRING, MI, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       guid_field(ctx, v, path, id.object_id, "an object (principal) id");
     }},
    {"resource_id", Kind::STRING, MI, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       const auto& s = v.get_ref<const std::string&>();
       if (!schema::to_lower(s).starts_with("/subscriptions/") || !no_control(s) ||
           s.find(' ') != std::string::npos) {
         ctx.error(path, "must be an Azure resource id starting with /subscriptions/");
         return;
       }
       id.resource_id = s;
     }},
    {"tenant_id", Kind::STRING, WI | CS | CC | CLI | DEF, CS | CC,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       const auto& s = v.get_ref<const std::string&>();
       if (!schema::is_guid(s) && !(schema::is_dns_name(s) && s.find('.') != std::string::npos)) {
         ctx.error(path,
                   "must be a tenant id (GUID) or a tenant domain such as "
                   "contoso.onmicrosoft.com");
         return;
       }
       id.tenant_id = s;
     }},
    {"authority_host", Kind::STRING, WI | CS | CC | DEF, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       std::string s = v.get<std::string>();
       std::string error;
       if (!schema::is_http_url(s, true, &error)) {
         ctx.error(path, error + " (e.g. https://login.microsoftonline.com)");
         return;
       }
       if (s.find('?') != std::string::npos) {
         ctx.error(path, "must not contain a query");
         return;
       }
       while (s.ends_with('/')) {
         s.pop_back();
       }
       id.authority_host = s;
     }},
    {"federated_token_file", Kind::STRING, WI, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       nonempty(ctx, v, path, id.federated_token_file);
     }},
    {"secret_file", Kind::STRING, CS, CS,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       nonempty(ctx, v, path, id.secret_file);
     }},
    {"certificate_file", Kind::STRING, CC, CC,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       nonempty(ctx, v, path, id.certificate_file);
     }},
    {"send_certificate_chain", Kind::BOOL, CC, NONE,
     [](Ctx&, const Json& v, const std::string&, Identity& id) {
       id.send_certificate_chain = v.get<bool>();
     }},
    {"path", Kind::STRING, TF, TF,
     [](Ctx& ctx, const Json& v, const std::string& path, Identity& id) {
       nonempty(ctx, v, path, id.path);
     }},
};

// Keys that would put a secret into the config file itself.
constexpr std::string_view INLINE_SECRET_KEYS[] = {"secret", "client_secret", "password", "token",
                                                   "access_token"};

std::optional<Identity::Type> parse_type(std::string_view s) {
  for (auto t : ALL_TYPES) {
    if (s == to_string(t)) {
      return t;
    }
  }
  return std::nullopt;
}

Identity read_identity(Ctx& ctx, const std::string& name, const Json& v, const std::string& path) {
  Identity id;
  id.name = name;
  if (!valid_name(name)) {
    ctx.error(path, std::string("identity name ") + NAME_RULE);
  }
  if (!v.is_object()) {
    ctx.error(path, "must be an object with a \"type\"");
    return id;
  }
  std::vector<std::string_view> skip = {"type"};
  for (auto k : INLINE_SECRET_KEYS) {
    if (v.contains(std::string(k))) {
      skip.push_back(k);
      ctx.error(schema::child_path(path, k),
                "secrets are read from files, never written in the config: put it in a file "
                "readable only by miproxy and name it with \"secret_file\" (client_secret) or "
                "use type token_file");
    }
  }
  uint32_t variant = 0;
  std::string variant_name;
  auto type_it = v.find("type");
  std::string type_path = schema::child_path(path, "type");
  if (type_it == v.end()) {
    ctx.error(type_path,
              "required: one of managed_identity, workload_identity, client_secret, "
              "client_certificate, azure_cli, default, token_file");
  } else if (!type_it->is_string() || !parse_type(type_it->get<std::string>())) {
    ctx.error(type_path,
              "must be one of managed_identity, workload_identity, client_secret, "
              "client_certificate, azure_cli, default, token_file");
  } else {
    id.type = *parse_type(type_it->get<std::string>());
    variant = bit(id.type);
    variant_name = std::string("for type ") + to_string(id.type);
  }
  if (variant == 0) {
    // Unknown type: still report unknown keys, but not per-type rules.
    std::vector<std::string_view> known;
    for (const auto& f : IDENTITY_FIELDS) {
      known.push_back(f.key);
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (std::find(skip.begin(), skip.end(), it.key()) == skip.end() &&
          std::find(known.begin(), known.end(), it.key()) == known.end()) {
        ctx.error(schema::child_path(path, it.key()), schema::unknown_key_message(it.key(), known));
      }
    }
    return id;
  }
  schema::read_object<Identity>(ctx, v, path, IDENTITY_FIELDS, id, variant, variant_name, skip);

  if (id.type == Identity::Type::MANAGED_IDENTITY) {
    std::vector<std::string> selectors;
    for (const char* k : {"client_id", "object_id", "resource_id"}) {
      if (v.contains(k)) {
        selectors.push_back(k);
      }
    }
    if (selectors.size() > 1) {
      std::string found;
      for (const auto& s : selectors) {
        found += (found.empty() ? "" : ", ") + s;
      }
      ctx.error(path,
                "at most one of client_id, object_id, resource_id may select a "
                "user-assigned identity (found " +
                    found + ")");
    } else if (selectors.size() == 1) {
      const std::string& sel = selectors[0];
      std::string sel_path = schema::child_path(path, sel);
      if (id.source == "arc") {
        ctx.error(sel_path,
                  "source arc cannot select a user-assigned identity: Azure Arc "
                  "serves only the machine's system-assigned identity");
      } else if (id.source == "cloud_shell") {
        ctx.error(sel_path,
                  "source cloud_shell cannot select a user-assigned identity: the "
                  "token is the signed-in user's");
      } else if (id.source == "service_fabric" && sel != "object_id") {
        ctx.error(sel_path, "source service_fabric can only select an identity by object_id");
      }
    }
  }
  return id;
}

// ---- routes ----

struct RouteDraft {
  Route v;
  bool has_match_host = false;
  bool allowed_hosts_given = false;
  std::optional<UpstreamUrl> upstream;
};

// Headers miproxy owns: the reason is shown to the user.
std::optional<std::string> forbidden_header(std::string_view lower) {
  if (lower == "authorization") {
    return "miproxy sets Authorization from the route's identity";
  }
  if (lower == "host") {
    return "miproxy sets Host from the upstream";
  }
  if (lower == "content-length") {
    return "Content-Length frames the body and miproxy manages it";
  }
  static constexpr std::string_view hop_by_hop[] = {
      "connection",        "keep-alive",        "proxy-connection", "te",
      "trailer",           "transfer-encoding", "upgrade",          "proxy-authorization",
      "proxy-authenticate"};
  for (auto h : hop_by_hop) {
    if (lower == h) {
      return std::string(h) +
             " is a hop-by-hop header: it belongs to one connection and "
             "miproxy manages it";
    }
  }
  return std::nullopt;
}

const Field<HeaderRules> HEADERS_FIELDS[] = {
    {"set", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, HeaderRules& h) {
       std::set<std::string> names;
       for (auto it = v.begin(); it != v.end(); ++it) {
         std::string p = schema::child_path(path, it.key());
         std::string lower = schema::to_lower(it.key());
         if (!schema::is_token(it.key())) {
           ctx.error(p, "not a valid header name");
           continue;
         }
         if (auto why = forbidden_header(lower)) {
           ctx.error(p, "cannot be set: " + *why);
           continue;
         }
         if (!names.insert(lower).second) {
           ctx.error(p, "set twice (header names are case-insensitive)");
           continue;
         }
         if (!it.value().is_string()) {
           ctx.error(p, "must be a string");
           continue;
         }
         const auto& value = it.value().get_ref<const std::string&>();
         if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
           ctx.error(p, "must not contain CR, LF or NUL");
           continue;
         }
         h.set.emplace_back(it.key(), value);
       }
     }},
    {"remove", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, HeaderRules& h) {
       for (size_t i = 0; i < v.size(); ++i) {
         std::string p = schema::index_path(path, i);
         if (!v[i].is_string() || !schema::is_token(v[i].get<std::string>())) {
           ctx.error(p, "must be a header name");
           continue;
         }
         std::string lower = schema::to_lower(v[i].get<std::string>());
         if (auto why = forbidden_header(lower)) {
           ctx.error(p, "cannot be removed: " + *why);
           continue;
         }
         if (std::find(h.remove.begin(), h.remove.end(), lower) == h.remove.end()) {
           h.remove.push_back(lower);
         }
       }
     }},
};

const Field<Timeouts> TIMEOUTS_FIELDS[] = {
    {"connect", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Timeouts& t) {
       seconds(ctx, v, path, t.connect, false);
     }},
    {"idle", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Timeouts& t) {
       seconds(ctx, v, path, t.idle, false);
     }},
    {"response", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Timeouts& t) {
       seconds(ctx, v, path, t.response, false);
     }},
};

const Field<Route> ROUTE_TLS_FIELDS[] = {
    {"ca_file", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Route& r) {
       nonempty(ctx, v, path, r.tls_ca_file);
     }},
};

// match.host: "" is refused (omit the key to match any host).
std::optional<std::string> match_host(std::string_view text, std::string* error) {
  std::string s = schema::to_lower(text);
  if (s.empty()) {
    *error = "must not be empty (omit \"host\" to match any host)";
    return std::nullopt;
  }
  in6_addr addr6;
  if (s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 != s.size()) {
      *error = close == std::string::npos
                   ? "missing ']' after the IPv6 address"
                   : "must not include a port (the port is ignored when matching)";
      return std::nullopt;
    }
    std::string inner = s.substr(1, close - 1);
    if (inet_pton(AF_INET6, inner.c_str(), &addr6) != 1) {
      *error = "not a valid IPv6 address";
      return std::nullopt;
    }
    return inner;
  }
  if (s.find(':') != std::string::npos) {
    if (inet_pton(AF_INET6, s.c_str(), &addr6) == 1) {
      return s;
    }
    *error = "must not include a port (the port is ignored when matching)";
    return std::nullopt;
  }
  std::string_view name = s;
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
  }
  if (name.find('*') != std::string_view::npos) {
    *error = "'*' is only allowed as the whole first label, as in *.blob.core.windows.net";
    return std::nullopt;
  }
  if (!schema::is_dns_name(name)) {
    *error = "not a valid host name";
    return std::nullopt;
  }
  return s;
}

const Field<RouteDraft> MATCH_FIELDS[] = {
    {"host", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       std::string error;
       auto h = match_host(v.get_ref<const std::string&>(), &error);
       if (!h) {
         ctx.error(path, error);
         return;
       }
       d.v.match_host = *h;
       d.has_match_host = true;
     }},
    {"allowed_hosts", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       d.allowed_hosts_given = true;
       for (size_t i = 0; i < v.size(); ++i) {
         std::string error = "must be a host name such as \"app.internal\" or \"*.example\"";
         auto h = v[i].is_string() ? match_host(v[i].get<std::string>(), &error) : std::nullopt;
         if (!h) {
           ctx.error(schema::index_path(path, i), error);
         } else if (std::find(d.v.allowed_hosts.begin(), d.v.allowed_hosts.end(), *h) ==
                    d.v.allowed_hosts.end()) {
           d.v.allowed_hosts.push_back(*h);
         }
       }
     }},
    {"path_prefix", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       const auto& s = v.get_ref<const std::string&>();
       if (s.empty() || s.front() != '/') {
         ctx.error(path, "must start with '/'");
       } else if (s.find_first_of("?#") != std::string::npos) {
         ctx.error(path, "must not contain '?' or '#' (it matches the path before the query)");
       } else if (!no_control(s) || s.find(' ') != std::string::npos) {
         ctx.error(path, "must not contain spaces or control characters");
       } else {
         d.v.path_prefix = s;
       }
     }},
    {"methods", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       if (v.empty()) {
         ctx.error(path, "must list at least one method (omit \"methods\" to allow any)");
         return;
       }
       for (size_t i = 0; i < v.size(); ++i) {
         if (!v[i].is_string() || !schema::is_token(v[i].get<std::string>())) {
           ctx.error(schema::index_path(path, i), "must be an HTTP method such as \"GET\"");
           continue;
         }
         std::string m = schema::to_upper(v[i].get<std::string>());
         if (std::find(d.v.methods.begin(), d.v.methods.end(), m) == d.v.methods.end()) {
           d.v.methods.push_back(m);
         }
       }
     }},
};

bool valid_scope(std::string_view s) {
  if (s.empty() || !no_control(s) || s.find(' ') != std::string_view::npos) {
    return false;
  }
  // Absolute URI: scheme "://" authority...
  size_t sep = s.find("://");
  if (sep != std::string_view::npos && sep > 0 && std::isalpha(static_cast<unsigned char>(s[0]))) {
    bool scheme_ok = std::all_of(s.begin(), s.begin() + sep, [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
    });
    if (scheme_ok && s.size() > sep + 3 && s[sep + 3] != '/') {
      return true;
    }
  }
  // Application (client) id, optionally with a path: "<guid>/.default".
  return schema::is_guid(s.substr(0, 36)) && (s.size() == 36 || s[36] == '/');
}

const Field<RouteDraft> ROUTE_FIELDS[] = {
    {"name", Kind::STRING, ALL, ALL,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       const auto& s = v.get_ref<const std::string&>();
       if (!valid_name(s)) {
         ctx.error(path, NAME_RULE);
         return;
       }
       d.v.name = s;
     }},
    {"match", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       schema::read_object<RouteDraft>(ctx, v, path, MATCH_FIELDS, d);
     }},
    {"upstream", Kind::STRING, ALL, ALL,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       d.v.upstream = v.get<std::string>();
       auto u = parse_upstream_url(d.v.upstream);
       if (!u) {
         ctx.error(path, u.error());
         return;
       }
       d.upstream = *u;
     }},
    {"identity", Kind::STRING, ALL, ALL,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       nonempty(ctx, v, path, d.v.identity);
     }},
    {"scope", Kind::STRING, ALL, ALL,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       const auto& s = v.get_ref<const std::string&>();
       if (s != "auto" && !valid_scope(s)) {
         ctx.error(path,
                   "must be one Entra scope such as https://storage.azure.com/.default "
                   "(an absolute URI or an application id), or \"auto\"");
         return;
       }
       d.v.scope = s;
     }},
    {"strip_prefix", Kind::BOOL, ALL, NONE,
     [](Ctx&, const Json& v, const std::string&, RouteDraft& d) {
       d.v.strip_prefix = v.get<bool>();
     }},
    {"headers", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       schema::read_object<HeaderRules>(ctx, v, path, HEADERS_FIELDS, d.v.headers);
       for (const auto& [name, value] : d.v.headers.set) {
         std::string lower = schema::to_lower(name);
         if (std::find(d.v.headers.remove.begin(), d.v.headers.remove.end(), lower) !=
             d.v.headers.remove.end()) {
           ctx.error(schema::child_path(schema::child_path(path, "set"), name),
                     "is also listed in \"remove\"");
         }
       }
     }},
    {"tls", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       schema::read_object<Route>(ctx, v, path, ROUTE_TLS_FIELDS, d.v);
     }},
    {"timeouts", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       schema::read_object<Timeouts>(ctx, v, path, TIMEOUTS_FIELDS, d.v.timeouts);
     }},
    {"inbound_authorization", Kind::STRING, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, RouteDraft& d) {
       const auto& s = v.get_ref<const std::string&>();
       if (s == "replace") {
         d.v.inbound_authorization = Route::InboundAuthorization::REPLACE;
       } else if (s == "reject") {
         d.v.inbound_authorization = Route::InboundAuthorization::REJECT;
       } else {
         ctx.error(path, "must be \"replace\" or \"reject\"");
       }
     }},
};

Route read_route(Ctx& ctx, const Json& v, const std::string& path, size_t index) {
  RouteDraft d;
  d.v.index = index;
  if (!v.is_object()) {
    ctx.error(path, "must be an object");
    return d.v;
  }
  schema::read_object<RouteDraft>(ctx, v, path, ROUTE_FIELDS, d);
  // A path_prefix that was given but invalid has its own error already.
  bool prefix_given =
      v.contains("match") && v["match"].is_object() && v["match"].contains("path_prefix");
  if (d.v.strip_prefix && !prefix_given) {
    ctx.error(schema::child_path(path, "strip_prefix"),
              "needs match.path_prefix (there is no prefix to strip)");
  }
  // A match.host that was given but invalid has its own error already.
  bool host_given = v.contains("match") && v["match"].is_object() && v["match"].contains("host");
  if (host_given && d.allowed_hosts_given) {
    ctx.error(schema::child_path(schema::child_path(path, "match"), "allowed_hosts"),
              "only for routes without match.host (a route with a host answers only that host)");
  }
  if (d.upstream && d.upstream->templated && !d.v.match_host.starts_with("*.") &&
      (!host_given || d.has_match_host)) {
    ctx.error(schema::child_path(path, "upstream"),
              "{host} is only allowed when match.host is a wildcard such as "
              "*.blob.core.windows.net (otherwise any Host would choose where the token goes)");
  }
  return d.v;
}

// ---- shadowing ----

bool host_covers(const std::string& earlier, const std::string& later) {
  if (earlier.empty() || earlier == later) {
    return true;
  }
  if (later.empty() || !earlier.starts_with("*.") || later.starts_with("*.")) {
    return false;
  }
  std::string_view suffix = std::string_view(earlier).substr(1);  // ".b.c"
  if (!later.ends_with(suffix) || later.size() <= suffix.size()) {
    return false;
  }
  std::string_view label = std::string_view(later).substr(0, later.size() - suffix.size());
  return label.find('.') == std::string_view::npos;
}

bool methods_cover(const std::vector<std::string>& earlier, const std::vector<std::string>& later) {
  if (earlier.empty()) {
    return true;
  }
  if (later.empty()) {
    return false;
  }
  return std::all_of(later.begin(), later.end(), [&](const std::string& m) {
    return std::find(earlier.begin(), earlier.end(), m) != earlier.end();
  });
}

void warn_shadowed(Ctx& ctx, const std::vector<Route>& routes) {
  for (size_t j = 1; j < routes.size(); ++j) {
    const Route& later = routes[j];
    for (size_t i = 0; i < j; ++i) {
      const Route& earlier = routes[i];
      // Prefixes match at segment boundaries: "/kv" covers "/kv/x", not "/kvx".
      const std::string& ep = earlier.path_prefix;
      const std::string& lp = later.path_prefix;
      bool prefix_covers = lp.starts_with(ep) && (ep.empty() || ep.back() == '/' ||
                                                  lp.size() == ep.size() || lp[ep.size()] == '/');
      if (host_covers(earlier.match_host, later.match_host) && prefix_covers &&
          methods_cover(earlier.methods, later.methods)) {
        ctx.warn(schema::index_path("routes", j), "shadowed by " + schema::index_path("routes", i) +
                                                      " (" + quote(earlier.name) +
                                                      "); it can never match");
        break;
      }
    }
  }
}

// ---- top level ----

const Field<Config> CONFIG_FIELDS[] = {
    {"listeners", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       for (size_t i = 0; i < v.size(); ++i) {
         c.listeners.push_back(read_listener(ctx, v[i], schema::index_path(path, i)));
       }
     }},
    {"admin", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       AdminDraft d;
       schema::read_object<AdminDraft>(ctx, v, path, ADMIN_FIELDS, d);
       if (d.address_ok && !d.loopback && !d.v.allow_remote) {
         ctx.error(schema::child_path(path, "address"),
                   "not a loopback address; the admin listener can stop the proxy and shows "
                   "its state, so set \"allow_remote\": true to bind it anyway");
       }
       d.v.enabled = true;
       c.admin = d.v;
     }},
    {"workers", Kind::ANY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       if (v.is_string() && v.get<std::string>() == "auto") {
         c.workers = 0;
       } else if (v.is_number_unsigned() && v.get<uint64_t>() >= 1 && v.get<uint64_t>() <= 256) {
         c.workers = static_cast<unsigned>(v.get<uint64_t>());
       } else {
         ctx.error(path, "must be \"auto\" or an integer from 1 to 256");
       }
     }},
    {"shutdown_grace", Kind::NUMBER, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       seconds(ctx, v, path, c.shutdown_grace, true);
     }},
    {"tls", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       schema::read_object<TlsGlobal>(ctx, v, path, TLS_FIELDS, c.tls);
     }},
    {"log", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       schema::read_object<LogConfig>(ctx, v, path, LOG_FIELDS, c.log);
     }},
    {"limits", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       schema::read_object<Limits>(ctx, v, path, LIMITS_FIELDS, c.limits);
     }},
    {"identities", Kind::OBJECT, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       for (auto it = v.begin(); it != v.end(); ++it) {
         c.identities[it.key()] =
             read_identity(ctx, it.key(), it.value(), schema::child_path(path, it.key()));
       }
     }},
    {"routes", Kind::ARRAY, ALL, NONE,
     [](Ctx& ctx, const Json& v, const std::string& path, Config& c) {
       for (size_t i = 0; i < v.size(); ++i) {
         c.routes.push_back(read_route(ctx, v[i], schema::index_path(path, i), i));
       }
     }},
};

void check_config(Ctx& ctx, const Json& doc, Config& c) {
  if (c.listeners.empty() && !(doc.contains("listeners") && !doc["listeners"].is_array())) {
    ctx.error("listeners", "at least one listener is required");
  }
  if (c.routes.empty() && !(doc.contains("routes") && !doc["routes"].is_array())) {
    ctx.error("routes", "at least one route is required");
  }
  std::set<std::string> used;
  for (size_t i = 0; i < c.routes.size(); ++i) {
    const Route& r = c.routes[i];
    std::string path = schema::index_path("routes", i);
    if (!r.name.empty()) {
      for (size_t j = 0; j < i; ++j) {
        if (c.routes[j].name == r.name) {
          ctx.error(schema::child_path(path, "name"), "duplicate route name " + quote(r.name) +
                                                          " (also " +
                                                          schema::index_path("routes", j) + ")");
          break;
        }
      }
    }
    if (!r.identity.empty()) {
      used.insert(r.identity);
      if (!c.identities.contains(r.identity)) {
        std::string known;
        for (const auto& [name, id] : c.identities) {
          known += (known.empty() ? "" : ", ") + name;
        }
        ctx.error(schema::child_path(path, "identity"),
                  "no identity named " + quote(r.identity) +
                      (known.empty() ? std::string(" (\"identities\" defines none)")
                                     : " (defined: " + known + ")"));
      }
    }
  }
  for (const auto& [name, id] : c.identities) {
    if (!used.contains(name)) {
      ctx.warn(schema::child_path("identities", name), "defined but no route uses it");
    }
  }
}

// Parse errors from nlohmann carry "last read: '<text>'", which would echo file contents; keep
// only the position and the reason.
std::string parse_error_message(const std::string& what) {
  std::string m = what;
  size_t close = m.find("] ");
  if (m.starts_with("[json.exception") && close != std::string::npos) {
    m = m.substr(close + 2);
  }
  size_t last_read = m.find("; last read:");
  if (last_read != std::string::npos) {
    size_t end = m.find("; ", last_read + 2);
    m.erase(last_read, end == std::string::npos ? std::string::npos : end - last_read);
  }
  return "invalid JSON: " + m;
}

// Tracks the JSON path while nlohmann parses, to report duplicate keys (nlohmann would silently
// keep one of them, which could drop a restriction).
struct DuplicateKeyFinder {
  struct Frame {
    bool array = false;
    std::string path;
    size_t next_index = 0;
    std::string last_key;
    std::set<std::string> keys;
  };
  Ctx* ctx;
  std::vector<Frame> stack;

  bool operator()(int, nlohmann::detail::parse_event_t event, Json& parsed) {
    using E = nlohmann::detail::parse_event_t;
    switch (event) {
      case E::object_start:
      case E::array_start: {
        Frame f;
        f.array = event == E::array_start;
        if (!stack.empty()) {
          Frame& parent = stack.back();
          f.path = parent.array ? schema::index_path(parent.path, parent.next_index++)
                                : schema::child_path(parent.path, parent.last_key);
        }
        stack.push_back(std::move(f));
        break;
      }
      case E::object_end:
      case E::array_end:
        if (!stack.empty()) {
          stack.pop_back();
        }
        break;
      case E::key: {
        Frame& top = stack.back();
        std::string key = parsed.get<std::string>();
        if (!top.keys.insert(key).second) {
          ctx->error(schema::child_path(top.path, key),
                     "duplicate key (only one of them would take effect)");
        }
        top.last_key = std::move(key);
        break;
      }
      case E::value:
        if (!stack.empty() && stack.back().array) {
          stack.back().next_index++;
        }
        break;
    }
    return true;
  }
};

}  // namespace

const char* to_string(Identity::Type type) {
  switch (type) {
    case Identity::Type::MANAGED_IDENTITY:
      return "managed_identity";
    case Identity::Type::WORKLOAD_IDENTITY:
      return "workload_identity";
    case Identity::Type::CLIENT_SECRET:
      return "client_secret";
    case Identity::Type::CLIENT_CERTIFICATE:
      return "client_certificate";
    case Identity::Type::AZURE_CLI:
      return "azure_cli";
    case Identity::Type::DEFAULT:
      return "default";
    case Identity::Type::TOKEN_FILE:
      return "token_file";
  }
  return "unknown";
}

std::expected<UpstreamUrl, std::string> parse_upstream_url(std::string_view url) {
  std::string lower = schema::to_lower(url);
  if (lower.starts_with("http://")) {
    return std::unexpected("must be an https URL (tokens are only sent over TLS)");
  }
  if (!lower.starts_with("https://")) {
    return std::unexpected("must be an https URL such as https://contoso.blob.core.windows.net");
  }
  if (url.find_first_of("?#") != std::string_view::npos) {
    return std::unexpected("must not contain a query or fragment");
  }
  if (!no_control(url) || url.find(' ') != std::string_view::npos) {
    return std::unexpected("must not contain spaces or control characters");
  }
  std::string_view rest = url.substr(8);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) {
    return std::unexpected("must not contain user info (user@host)");
  }
  UpstreamUrl out;
  std::string_view port;
  bool has_port = false;
  if (authority.starts_with("[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return std::unexpected("missing ']' after the IPv6 address");
    }
    std::string inner(authority.substr(1, close - 1));
    in6_addr addr6;
    if (inet_pton(AF_INET6, inner.c_str(), &addr6) != 1) {
      return std::unexpected("not a valid IPv6 address in the host");
    }
    out.host = schema::to_lower(inner);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return std::unexpected("unexpected characters after the host");
      }
      port = after.substr(1);
      has_port = true;
    }
  } else {
    size_t colon = authority.find(':');
    std::string_view host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      has_port = true;
    }
    if (host == "{host}") {
      out.templated = true;
    } else if (host.find_first_of("{}") != std::string_view::npos) {
      return std::unexpected("{host} must be the whole host, as in https://{host}");
    } else if (!schema::is_dns_name(host)) {
      return std::unexpected("must name a host, as in https://contoso.blob.core.windows.net");
    } else {
      out.host = schema::to_lower(host);
    }
  }
  if (has_port) {
    bool digits =
        !port.empty() && port.size() <= 5 &&
        std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
    unsigned long n = digits ? std::stoul(std::string(port)) : 0;
    if (!digits || n < 1 || n > 65535) {
      return std::unexpected("port must be a number from 1 to 65535");
    }
    out.port = static_cast<uint16_t>(n);
  }
  if (path.find_first_of("{}") != std::string_view::npos) {
    return std::unexpected("{host} must be the whole host, as in https://{host}");
  }
  std::string base(path);
  while (base.ends_with('/')) {
    base.pop_back();
  }
  out.base_path = base;
  return out;
}

std::expected<LoadResult, std::vector<Diagnostic>> parse(const std::string& json_text,
                                                         const std::string& source_path) {
  Ctx ctx;
  Json doc;
  try {
    DuplicateKeyFinder finder{&ctx, {}};
    doc = Json::parse(json_text, std::ref(finder));
  } catch (const nlohmann::json::exception& e) {
    ctx.errors.clear();
    ctx.error("", parse_error_message(e.what()));
    return std::unexpected(std::move(ctx.errors));
  }
  auto config = std::make_shared<Config>();
  config->source_path = source_path;
  try {
    if (!doc.is_object()) {
      ctx.error("", "the config must be a JSON object");
      return std::unexpected(std::move(ctx.errors));
    }
    schema::read_object<Config>(ctx, doc, "", CONFIG_FIELDS, *config);
    check_config(ctx, doc, *config);
  } catch (const nlohmann::json::exception& e) {
    // Every access above checks kinds first; this is a safety net, not a code path.
    ctx.error("", std::string("internal error while reading the config: ") + e.what());
  }
  if (!ctx.errors.empty()) {
    return std::unexpected(std::move(ctx.errors));
  }
  warn_shadowed(ctx, config->routes);
  LoadResult result;
  result.config = std::move(config);
  result.warnings = std::move(ctx.warnings);
  return result;
}

std::expected<LoadResult, std::vector<Diagnostic>> load_file(const std::string& path) {
  auto fail = [&](int err) {
    return std::unexpected(
        std::vector<Diagnostic>{{"", "cannot read " + path + ": " + std::strerror(err)}});
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return fail(errno);
  }
  std::string text;
  char buffer[16384];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return fail(err);
    }
    if (n == 0) {
      break;
    }
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return parse(text, path);
}

}  // namespace miproxy::config
