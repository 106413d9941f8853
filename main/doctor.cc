#include "main/doctor.h"

#include <uv.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>

#include <nlohmann/json.hpp>

#include "auth/challenge.h"
#include "auth/jwt.h"
#include "auth/process.h"
#include "auth/source.h"
#include "auth/uv_executor.h"
#include "config/config.h"
#include "proxy/fetcher.h"
#include "proxy/http1.h"
#include "proxy/transport.h"
#include "routing/router.h"

namespace miproxy::app {
namespace {

using nlohmann::json;

std::string utc(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string trim_slash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

bool is_ip_or_localhost(const std::string& host) {
  if (host == "localhost") return true;
  if (host.find(':') != std::string::npos) return true;
  for (char c : host) {
    if (!(std::isdigit(static_cast<unsigned char>(c)) || c == '.')) return false;
  }
  return true;
}

// Finds the text between <Tag> and </Tag> in a Storage XML error body.
std::string xml_field(const std::string& body, const std::string& tag) {
  size_t a = body.find("<" + tag + ">");
  if (a == std::string::npos) return "";
  a += tag.size() + 2;
  size_t b = body.find("</" + tag + ">", a);
  return b == std::string::npos ? "" : body.substr(a, b - a);
}

// What a service said in an error body: Storage XML, Key Vault / ARM JSON.
std::pair<std::string, std::string> service_error(const auth::FetchResponse& r) {
  std::string code = r.header("x-ms-error-code");
  std::string message = xml_field(r.body, "Message");
  std::string detail = xml_field(r.body, "AuthenticationErrorDetail");
  if (code.empty()) code = xml_field(r.body, "Code");
  if (message.empty()) {
    auto j = json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("error") && j["error"].is_object()) {
      const auto& e = j["error"];
      if (code.empty() && e.contains("code") && e["code"].is_string()) code = e["code"];
      if (e.contains("innererror") && e["innererror"].is_object() &&
          e["innererror"].contains("code") && e["innererror"]["code"].is_string()) {
        code += "/" + e["innererror"]["code"].get<std::string>();
      }
      if (e.contains("message") && e["message"].is_string()) message = e["message"];
    }
  }
  size_t nl = message.find('\n');
  if (nl != std::string::npos) message = message.substr(0, nl);
  while (!message.empty() && (message.back() == '\r' || message.back() == ' ')) message.pop_back();
  if (!detail.empty()) message += " (" + detail + ")";
  return {code, message};
}

struct RouteReport {
  std::string route;
  std::string identity;
  std::string identity_type;
  std::string scope;
  bool token_ok = false;
  bool probe_ok = false;
  bool probe_skipped = false;
  json evidence = json::object();
  json probe = json::object();
  std::vector<std::string> problems;  // explanations in words
  bool pass() const { return token_ok && (probe_ok || probe_skipped) && problems.empty(); }
};

class Doctor {
 public:
  Doctor(std::shared_ptr<const config::Config> cfg, std::string only, bool json_out)
      : cfg_(std::move(cfg)), table_(cfg_), only_(std::move(only)), json_(json_out) {
    uv_loop_init(&loop_);
    executor_ = std::make_unique<UvExecutor>(&loop_);
    connector_ = std::make_unique<proxy::Connector>(&loop_);
    fetcher_ = std::make_unique<proxy::Fetcher>(&loop_, *connector_);
    processes_ = std::make_unique<auth::UvProcessRunner>(&loop_);
    deps_.fetcher = fetcher_.get();
    deps_.processes = processes_.get();
    deps_.getenv = [](const std::string& n) {
      const char* v = std::getenv(n.c_str());
      return v ? std::string(v) : std::string();
    };
    deps_.ca_file = cfg_->tls.ca_file;
    deps_.defer = [this](std::function<void()> t) { executor_->post(std::move(t)); };
    auto request_timeout = std::chrono::milliseconds(
        static_cast<int64_t>(cfg_->limits.token_request_timeout * 1000));
    deps_.request_timeout = [request_timeout] { return request_timeout; };
  }

  int run() {
    for (size_t i = 0; i < table_.routes().size(); ++i) {
      if (only_.empty() || table_.routes()[i].route->name == only_) todo_.push_back(i);
    }
    if (todo_.empty()) {
      std::fprintf(stderr, "miproxy doctor: no route named '%s'\n", only_.c_str());
      finish();  // nothing to run: release the loop's handles cleanly all the same
      uv_run(&loop_, UV_RUN_DEFAULT);
      executor_.reset();
      uv_run(&loop_, UV_RUN_NOWAIT);
      uv_loop_close(&loop_);
      return 2;
    }
    executor_->post([this] { next(); });
    uv_run(&loop_, UV_RUN_DEFAULT);
    executor_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);  // close callbacks of what finish() released
    uv_loop_close(&loop_);
    bool all = true;
    json out = json::array();
    for (const auto& r : reports_) {
      all = all && r.pass();
      if (json_) {
        out.push_back({{"route", r.route}, {"identity", r.identity},
                       {"identity_type", r.identity_type}, {"scope", r.scope},
                       {"pass", r.pass()}, {"token", r.evidence}, {"probe", r.probe},
                       {"problems", r.problems}});
      } else {
        print(r);
      }
    }
    if (json_) {
      // Claims, challenges and endpoint error text carry outside bytes: never a throwing dump.
      std::printf("%s\n", json{{"pass", all}, {"routes", out}}
                               .dump(2, ' ', false, json::error_handler_t::replace)
                               .c_str());
    } else {
      std::printf("%s\n", all ? "doctor: all routes pass" : "doctor: some routes FAIL");
    }
    return all ? 0 : 1;
  }

 private:
  void print(const RouteReport& r) {
    auto p = [](const std::string& s) { return terminal_safe(s); };
    std::printf("route %s: %s\n", p(r.route).c_str(), r.pass() ? "PASS" : "FAIL");
    std::printf("  identity   %s (%s)\n", p(r.identity).c_str(), p(r.identity_type).c_str());
    std::printf("  scope      %s\n", p(r.scope).c_str());
    for (auto it = r.evidence.begin(); it != r.evidence.end(); ++it) {
      std::string v = it.value().is_string()
                          ? it.value().get<std::string>()
                          : it.value().dump(-1, ' ', false, json::error_handler_t::replace);
      std::printf("  %-10s %s\n", p(it.key()).c_str(), p(v).c_str());
    }
    if (r.probe_skipped) {
      std::printf("  probe      skipped: %s\n", p(r.probe.value("reason", "")).c_str());
    } else if (!r.probe.empty()) {
      std::printf("  probe      %s %s -> %s\n", p(r.probe.value("method", "")).c_str(),
                  p(r.probe.value("url", "")).c_str(), p(r.probe.value("result", "")).c_str());
    }
    for (const auto& problem : r.problems) std::printf("  problem    %s\n", p(problem).c_str());
    std::printf("\n");
  }

  void next() {
    if (todo_.empty()) {
      finish();
      return;
    }
    size_t idx = todo_.front();
    todo_.erase(todo_.begin());
    const routing::CompiledRoute& cr = table_.routes()[idx];
    const config::Route& route = *cr.route;
    reports_.emplace_back();
    RouteReport& rep = reports_.back();
    rep.route = route.name;
    rep.identity = route.identity;
    const config::Identity& id = cfg_->identities.at(route.identity);
    rep.identity_type = config::to_string(id.type);
    rep.scope = route.scope;
    current_ = idx;
    if (route.scope == "auto") {
      learn_scope(cr);
      return;
    }
    acquire(cr, route.scope);
  }

  // scope "auto": an unauthenticated probe must answer a Bearer challenge naming a resource in
  // the upstream's domain.
  void learn_scope(const routing::CompiledRoute& cr) {
    RouteReport& rep = reports_.back();
    if (cr.upstream_templated) {
      rep.problems.push_back("scope \"auto\" with a templated upstream cannot be checked");
      next();
      return;
    }
    auth::FetchRequest req = probe_request(cr, false);
    fetcher_->fetch(req, [this, &cr](auth::FetchResult res) {
      RouteReport& rep = reports_.back();
      if (!res) {
        rep.problems.push_back(explain_fetch_error(res.error(), cr));
        next();
        return;
      }
      auto ch = auth::parse_bearer_challenge(res->header("www-authenticate"));
      std::string scope = ch ? auth::scope_from_challenge(*ch, cr.upstream.host) : "";
      if (scope.empty()) {
        rep.problems.push_back(
            "scope \"auto\": the upstream answered " + std::to_string(res->status) +
            (ch ? " with a challenge whose resource '" + ch->resource +
                      "' is not in the upstream's domain (refused)"
                : " without a Bearer challenge") +
            "; set the route's scope explicitly");
        next();
        return;
      }
      rep.scope = scope + " (learned from the upstream's challenge)";
      acquire(cr, scope);
    });
  }

  void acquire(const routing::CompiledRoute& cr, const std::string& scope) {
    RouteReport& rep = reports_.back();
    const config::Identity& id = cfg_->identities.at(cr.route->identity);
    auto src = auth::make_source(id, deps_);
    if (!src) {
      rep.problems.push_back("identity '" + id.name + "': " + src.error());
      next();
      return;
    }
    source_ = std::move(*src);
    auto t0 = std::chrono::steady_clock::now();
    source_->fetch(scope, "", [this, &cr, scope, t0](auth::SourceResult r) {
      RouteReport& rep = reports_.back();
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                      .count();
      rep.evidence["source"] = source_->last_source();
      if (!r) {
        rep.problems.push_back("token: " + explain_token_error(r.error()));
        next();
        return;
      }
      if (!auth::is_b64token(r->access_token.reveal())) {
        rep.problems.push_back(
            "token: the endpoint returned an access_token with characters outside the "
            "bearer-token set (RFC 6750 b64token); refused, the upstream is not probed with it");
        next();
        return;
      }
      rep.token_ok = true;
      token_ = std::move(r->access_token);
      rep.evidence["latency"] = std::to_string(static_cast<int>(ms)) + " ms";
      auto claims = auth::decode_jwt_claims(token_.reveal());
      int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
      int64_t exp = std::chrono::duration_cast<std::chrono::seconds>(
                        r->expires_at.time_since_epoch())
                        .count();
      if (claims) {
        if (!claims->tid.empty()) rep.evidence["tenant"] = claims->tid;
        if (!claims->client_id.empty()) rep.evidence["client_id"] = claims->client_id;
        if (!claims->oid.empty()) rep.evidence["object_id"] = claims->oid;
        if (!claims->xms_mirid.empty()) rep.evidence["xms_mirid"] = claims->xms_mirid;
        if (!claims->aud.empty()) rep.evidence["audience"] = claims->aud;
        if (!claims->iss.empty()) rep.evidence["issuer"] = claims->iss;
        if (!claims->roles.empty()) rep.evidence["roles"] = claims->roles;
        if (!claims->scp.empty()) rep.evidence["scp"] = claims->scp;
        if (claims->exp) exp = *claims->exp;
        std::string want = trim_slash(auth::resource_of_scope(scope));
        if (!claims->aud.empty() && trim_slash(claims->aud) != want &&
            claims->aud.find("://") != std::string::npos) {
          rep.problems.push_back("wrong audience: the token is for '" + claims->aud +
                                 "' but the route's scope asks for '" + want +
                                 "'; check the route's scope");
        }
      } else {
        rep.evidence["format"] = "opaque (not a JWT): no claims to show";
      }
      rep.evidence["expires"] = utc(exp) + " (in " + std::to_string((exp - now) / 60) + " min)";
      probe(cr);
    });
  }

  auth::FetchRequest probe_request(const routing::CompiledRoute& cr, bool with_token) {
    const config::Route& route = *cr.route;
    std::string prefix = route.path_prefix.empty() ? "/" : route.path_prefix;
    std::string path = routing::upstream_path(cr, cr.upstream, prefix);
    std::string host = cr.upstream.host;
    bool vault = host.ends_with(".vault.azure.net") || host.ends_with(".managedhsm.azure.net") ||
                 route.scope.find("vault.azure.net") != std::string::npos;
    auth::FetchRequest req;
    req.method = "GET";
    if (cr.storage) {
      // The narrowest read the route allows: list one blob of its container, or one container.
      std::vector<std::string> segs;
      size_t pos = 1;
      while (pos < path.size()) {
        size_t slash = path.find('/', pos);
        if (slash == std::string::npos) slash = path.size();
        if (slash > pos) segs.push_back(path.substr(pos, slash - pos));
        pos = slash + 1;
      }
      size_t account_segs = is_ip_or_localhost(host) ? 1 : 0;  // emulator: /account/container
      std::string base = account_segs && !segs.empty() ? "/" + segs[0] : "";
      if (segs.size() > account_segs) {
        path = base + "/" + segs[account_segs] + "?restype=container&comp=list&maxresults=1";
      } else {
        path = base + "/?comp=list&maxresults=1";
      }
      req.headers.push_back({"x-ms-version", std::string(proxy::kStorageBearerVersion)});
    } else if (vault) {
      path = "/secrets?api-version=7.4&maxresults=1";
    }
    req.url = "https://" + cr.upstream.authority() + path;
    req.ca_file = route.tls_ca_file.empty() ? cfg_->tls.ca_file : route.tls_ca_file;
    req.timeout = std::chrono::milliseconds(static_cast<int64_t>(route.timeouts.connect * 1000 +
                                                                 route.timeouts.response * 1000));
    if (with_token) req.headers.push_back({"Authorization", "Bearer " + std::string(token_.reveal())});
    req.headers.push_back({"x-ms-client-request-id", proxy::new_uuid()});
    return req;
  }

  void probe(const routing::CompiledRoute& cr) {
    RouteReport& rep = reports_.back();
    if (cr.upstream_templated) {
      rep.probe_skipped = true;
      rep.probe["reason"] = "the upstream host comes from each request ({host})";
      next();
      return;
    }
    auth::FetchRequest req = probe_request(cr, true);
    rep.probe["method"] = req.method;
    rep.probe["url"] = proxy::redact_query(req.url);
    fetcher_->fetch(std::move(req), [this, &cr](auth::FetchResult res) {
      RouteReport& rep = reports_.back();
      token_ = SecretString();
      if (!res) {
        rep.probe["result"] = "no answer";
        rep.problems.push_back(explain_fetch_error(res.error(), cr));
        next();
        return;
      }
      auto [code, message] = service_error(*res);
      rep.probe["status"] = res->status;
      if (!code.empty()) rep.probe["service_error"] = code;
      std::string result = std::to_string(res->status) + (code.empty() ? "" : " " + code);
      rep.probe["result"] = result;
      if (res->status < 400) {
        rep.probe_ok = true;
      } else if (res->status == 404) {
        rep.probe_ok = true;  // authorized; the probed resource just does not exist
        rep.probe["note"] = "authorized, but the probed resource does not exist";
      } else {
        rep.problems.push_back(explain_denial(res->status, code, message, rep));
      }
      next();
    });
  }

  std::string explain_fetch_error(const auth::FetchError& e, const routing::CompiledRoute& cr) {
    std::string up = cr.upstream.authority();
    switch (e.kind) {
      case auth::FetchError::Kind::DNS:
        return "DNS: cannot resolve " + cr.upstream.host + " (" + e.message +
               "); check the upstream name and the resolver (private endpoints need their "
               "private DNS zone)";
      case auth::FetchError::Kind::CONNECT:
        return "upstream unreachable: " + e.message + " (" + up +
               "); check network path, firewall and proxy rules";
      case auth::FetchError::Kind::TLS:
        return "TLS to " + up + " failed: " + e.message +
               "; miproxy only sends tokens over verified TLS (check tls.ca_file)";
      case auth::FetchError::Kind::TIMEOUT:
        return "upstream " + up + " did not answer in time (" + e.message + ")";
      default:
        return "upstream " + up + ": " + e.message;
    }
  }

  std::string explain_token_error(const auth::SourceError& e) {
    std::string m = e.message;
    std::string hint;
    auto has = [&](const char* s) { return m.find(s) != std::string::npos; };
    if (has("Identity not found") || has("Unable to load the proper Managed Identity")) {
      hint = "identity not found: the selected managed identity is not assigned to this "
             "machine/app (check client_id / object_id / resource_id)";
    } else if (has("AADSTS700016") || has("AADSTS90002")) {
      hint = "wrong tenant or client: the application or tenant was not found";
    } else if (has("AADSTS7000215") || has("AADSTS7000222")) {
      hint = "invalid or expired client secret";
    } else if (has("AADSTS70011") || has("AADSTS500011") || has("invalid_resource") ||
               has("AADSTS50001")) {
      hint = "wrong audience: the scope names a resource the tenant does not know";
    } else if (has("AADSTS700213") || has("AADSTS70021") || has("AADSTS700211")) {
      hint = "federated credential mismatch: check the issuer/subject of the workload "
             "identity's federated credential";
    } else if (e.http_status == 0 && (has("connect") || has("refused") || has("timed out"))) {
      hint = "token endpoint unreachable";
    } else if (e.unavailable) {
      hint = "this identity type is not available in this environment";
    }
    return hint.empty() ? m : hint + " — " + m;
  }

  std::string explain_denial(int status, const std::string& code, const std::string& message,
                             const RouteReport& rep) {
    std::string who = rep.evidence.value("object_id", std::string("?"));
    auto has = [&](const char* s) {
      return code.find(s) != std::string::npos || message.find(s) != std::string::npos;
    };
    std::string base = "the upstream answered " + std::to_string(status) +
                       (code.empty() ? "" : " " + code) +
                       (message.empty() ? "" : ": " + message) +
                       (message.ends_with(".") ? " " : ". ");
    if (has("AuthorizationPermissionMismatch") || has("ForbiddenByRbac") ||
        has("AccessDenied") || has("AuthorizationFailed")) {
      return base + "Missing data-plane role: identity (object id " + who +
             ") lacks the role for this action at this scope (e.g. 'Storage Blob Data "
             "Reader/Contributor' or 'Key Vault Secrets User'); role assignments can take "
             "up to 30 minutes to apply and cached tokens may predate the grant.";
    }
    if (has("ForbiddenByFirewall") || code == "AuthorizationFailure") {
      return base + "Network rule / firewall denial: the service's firewall, virtual network "
                    "or private endpoint settings refuse this caller.";
    }
    if (has("Audience validation failed")) {
      return base + "Wrong audience: the token was issued for another resource; fix the "
                    "route's scope.";
    }
    if (has("Issuer validation failed") || has("tenant")) {
      return base + "Wrong tenant: the service belongs to another tenant than the token's (" +
             rep.evidence.value("tenant", std::string("?")) + ").";
    }
    if (has("Lifetime validation failed")) {
      return base + "Expired token or clock skew: check this machine's clock.";
    }
    if (has("not supported in this version")) {
      return base + "x-ms-version too old for bearer tokens.";
    }
    if (has("KeyBasedAuthenticationNotPermitted")) {
      return base + "Shared-key access is disabled and a key credential reached the account.";
    }
    if (status == 401) {
      return base + "The token was rejected (wrong audience, tenant or expired).";
    }
    return base + "Denied for identity object id " + who + ".";
  }

  void finish() {
    source_.reset();
    processes_.reset();
    fetcher_.reset();
    connector_.reset();
    executor_->close();
  }

  std::shared_ptr<const config::Config> cfg_;
  routing::Table table_;
  std::string only_;
  bool json_;
  uv_loop_t loop_;
  std::unique_ptr<UvExecutor> executor_;
  std::unique_ptr<proxy::Connector> connector_;
  std::unique_ptr<proxy::Fetcher> fetcher_;
  std::unique_ptr<auth::UvProcessRunner> processes_;
  std::unique_ptr<auth::TokenSource> source_;
  auth::SourceDeps deps_;
  std::vector<size_t> todo_;
  std::vector<RouteReport> reports_;
  size_t current_ = 0;
  SecretString token_;
};

}  // namespace

// Doctor prints what endpoints, upstreams and unverified token claims said. On a terminal, raw
// control bytes could move the cursor or retitle the window, and invalid UTF-8 garbles the
// line: control characters (C0, DEL and C1) are shown as \xNN and every byte that is not part of
// valid UTF-8 as U+FFFD, the same replacement the --json output makes.
std::string terminal_safe(std::string_view in) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(in.size());
  auto escape = [&](unsigned char c) {
    out.append("\\x");
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  };
  size_t i = 0;
  while (i < in.size()) {
    auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) {
        escape(c);
      } else {
        out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    // The length of the sequence |c| starts and its leading bits (RFC 3629).
    size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    uint32_t cp = len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    bool ok = len != 0 && i + len <= in.size();
    for (size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(in[i + k]);
      ok = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (ok) {
      ok = !(len == 3 && cp < 0x800) && !(len == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
           !(cp >= 0xd800 && cp <= 0xdfff);
    }
    if (!ok) {
      out.append("\xef\xbf\xbd");  // U+FFFD for this one byte; resynchronise after it
      ++i;
      continue;
    }
    if (cp >= 0x80 && cp <= 0x9f) {
      escape(static_cast<unsigned char>(cp));  // C1 controls (0x9b is a CSI on some terminals)
    } else {
      out.append(in.substr(i, len));
    }
    i += len;
  }
  return out;
}

int run_doctor(const std::string& config_path, const std::string& route, bool json_out) {
  auto loaded = config::load_file(config_path);
  if (!loaded) {
    for (const auto& d : loaded.error()) std::fprintf(stderr, "error: %s\n", d.to_string().c_str());
    return 1;
  }
  Doctor d(loaded->config, route, json_out);
  return d.run();
}

}  // namespace miproxy::app
