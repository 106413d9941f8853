#include "config/config.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using miproxy::config::Config;
using miproxy::config::Diagnostic;
using miproxy::config::Identity;
using miproxy::config::Listener;
using miproxy::config::Route;
using Json = nlohmann::ordered_json;

namespace {

std::string fixture_path(const char* name) {
  return (std::filesystem::path(__FILE__).parent_path() / "fixtures" / name).string();
}

// A small valid config; each test breaks one thing in it.
Json base() {
  return Json::parse(R"({
    "listeners": [ { "address": "127.0.0.1:8080" } ],
    "identities": { "mi": { "type": "managed_identity" } },
    "routes": [
      { "name": "blob",
        "match": { "host": "contoso.blob.core.windows.net" },
        "upstream": "https://contoso.blob.core.windows.net",
        "identity": "mi",
        "scope": "https://storage.azure.com/.default" }
    ]
  })");
}

std::vector<Diagnostic> errors_of(const Json& doc) {
  auto result = miproxy::config::parse(doc.dump());
  if (result) {
    return {};
  }
  return result.error();
}

std::string dump(const std::vector<Diagnostic>& diags) {
  std::string out;
  for (const auto& d : diags) {
    out += d.to_string() + "\n";
  }
  return out;
}

// Requires exactly one error, at |path|, whose message contains |needle|.
void require_one_error(const Json& doc, const std::string& path, const std::string& needle) {
  auto diags = errors_of(doc);
  INFO(dump(diags));
  REQUIRE(diags.size() == 1);
  CHECK(diags[0].path == path);
  CHECK(diags[0].message.find(needle) != std::string::npos);
}

std::shared_ptr<const Config> parse_ok(const Json& doc,
                                       std::vector<Diagnostic>* warnings = nullptr) {
  auto result = miproxy::config::parse(doc.dump());
  INFO((result ? std::string() : dump(result.error())));
  REQUIRE(result.has_value());
  if (warnings != nullptr) {
    *warnings = result->warnings;
  }
  return result->config;
}

}  // namespace

// ---------------------------------------------------------------- the documented example

TEST_CASE("the interface.md example config loads with every field resolved", "[config]") {
  auto result = miproxy::config::load_file(fixture_path("interface_example.json"));
  if (!result) {
    INFO(dump(result.error()));
    REQUIRE(result.has_value());
  }
  const Config& c = *result->config;
  CHECK(c.source_path == fixture_path("interface_example.json"));
  REQUIRE(c.listeners.size() == 2);
  CHECK(c.listeners[0].kind == Listener::Kind::TCP);
  CHECK(c.listeners[0].host == "127.0.0.1");
  CHECK(c.listeners[0].port == 8080);
  CHECK(c.listeners[1].kind == Listener::Kind::UNIX);
  CHECK(c.listeners[1].unix_path == "/run/miproxy/proxy.sock");
  CHECK(c.listeners[1].mode == 0660);
  CHECK(c.listeners[1].allowed_uids == std::vector<uid_t>{1000});
  CHECK(c.admin.enabled);
  CHECK(c.admin.port == 9464);
  CHECK(c.workers == 0);
  CHECK(c.shutdown_grace == 30);
  CHECK(c.tls.ca_file == "/etc/ssl/certs/ca-certificates.crt");
  CHECK(c.tls.min_version == 0x0303);
  REQUIRE(c.identities.size() == 9);
  CHECK(c.identities.at("orders").client_id == "11111111-2222-3333-4444-555555555555");
  CHECK(c.identities.at("ci").type == Identity::Type::CLIENT_SECRET);
  CHECK(c.identities.at("ci").secret_file == "/etc/miproxy/ci.secret");
  CHECK(c.identities.at("cert").certificate_file == "/etc/miproxy/sp.pem");
  CHECK(c.identities.at("fixed").path == "/run/secrets/token");
  CHECK(c.identities.at("dev").type == Identity::Type::AZURE_CLI);
  CHECK(c.identities.at("auto").type == Identity::Type::DEFAULT);
  CHECK(c.identities.at("pod").type == Identity::Type::WORKLOAD_IDENTITY);
  REQUIRE(c.routes.size() == 3);
  CHECK(c.routes[0].name == "orders-blob");
  CHECK(c.routes[0].methods == std::vector<std::string>{"GET", "HEAD", "PUT"});
  CHECK(c.routes[0].path_prefix == "/orders/");
  CHECK(c.routes[1].match_host == "*.blob.core.windows.net");
  CHECK(c.routes[1].upstream == "https://{host}");
  CHECK(c.routes[2].strip_prefix);
  CHECK(c.routes[2].scope == "auto");
  CHECK(c.routes[2].index == 2);
  // Nothing in it shadows anything; the only warnings are identities no route uses.
  for (const auto& w : result->warnings) {
    CHECK(w.message == "defined but no route uses it");
  }
}

TEST_CASE("defaults apply when optional sections are absent", "[config]") {
  auto c = parse_ok(base());
  CHECK_FALSE(c->admin.enabled);
  CHECK(c->workers == 0);
  CHECK(c->shutdown_grace == 30);
  CHECK(c->log.level == "info");
  CHECK(c->limits.max_headers == 100);
  CHECK(c->routes[0].timeouts.connect == 10);
  CHECK(c->routes[0].inbound_authorization == Route::InboundAuthorization::REPLACE);
}

// ---------------------------------------------------------------- syntax and structure

TEST_CASE("invalid JSON is one error with its line and no JSON path", "[config]") {
  auto result = miproxy::config::parse("{\n  \"listeners\": [,]\n}");
  REQUIRE_FALSE(result);
  REQUIRE(result.error().size() == 1);
  CHECK(result.error()[0].path.empty());
  CHECK(result.error()[0].message.find("line 2") != std::string::npos);
}

TEST_CASE("a config that is not a JSON object is refused", "[config]") {
  auto result = miproxy::config::parse("[1, 2]");
  REQUIRE_FALSE(result);
  REQUIRE(result.error().size() == 1);
  CHECK(result.error()[0].message.find("JSON object") != std::string::npos);
}

TEST_CASE("an unreadable file is one error with an empty path", "[config]") {
  auto result = miproxy::config::load_file("/nonexistent/miproxy.json");
  REQUIRE_FALSE(result);
  REQUIRE(result.error().size() == 1);
  CHECK(result.error()[0].path.empty());
  CHECK(result.error()[0].message.find("/nonexistent/miproxy.json") != std::string::npos);
}

TEST_CASE("a duplicate key is an error naming its path", "[config]") {
  std::string text = base().dump();
  // Add a second "scope" to routes[0]: JSON parsers would silently keep one.
  size_t at = text.find("\"scope\"");
  text.insert(at, "\"scope\":\"https://vault.azure.net/.default\",");
  auto result = miproxy::config::parse(text);
  REQUIRE_FALSE(result);
  INFO(dump(result.error()));
  REQUIRE(result.error().size() == 1);
  CHECK(result.error()[0].path == "routes[0].scope");
  CHECK(result.error()[0].message.find("duplicate key") != std::string::npos);
}

TEST_CASE("unknown keys are errors at every depth", "[config]") {
  SECTION("top level, with a suggestion") {
    Json j = base();
    j["listener"] = Json::array();
    require_one_error(j, "listener", "did you mean \"listeners\"");
  }
  SECTION("in a listener") {
    Json j = base();
    j["listeners"][0]["port"] = 8080;
    require_one_error(j, "listeners[0].port", "unknown key");
  }
  SECTION("in an identity") {
    Json j = base();
    j["identities"]["mi"]["clientid"] = "11111111-2222-3333-4444-555555555555";
    require_one_error(j, "identities.mi.clientid", "did you mean \"client_id\"");
  }
  SECTION("in a route's match (a typo must not drop a restriction)") {
    Json j = base();
    j["routes"][0]["match"]["method"] = Json::array({"GET"});
    require_one_error(j, "routes[0].match.method", "did you mean \"methods\"");
  }
  SECTION("in a route's headers") {
    Json j = base();
    j["routes"][0]["headers"] = {{"add", Json::object()}};
    require_one_error(j, "routes[0].headers.add", "unknown key");
  }
  SECTION("in a route's timeouts") {
    Json j = base();
    j["routes"][0]["timeouts"] = {{"read", 5}};
    require_one_error(j, "routes[0].timeouts.read", "unknown key");
  }
  SECTION("in limits") {
    Json j = base();
    j["limits"] = {{"max_body", 5}};
    require_one_error(j, "limits.max_body", "unknown key");
  }
}

TEST_CASE("every error is reported at once", "[config]") {
  Json j = base();
  j["workers"] = 0;
  j["routes"][0]["upstream"] = "http://contoso.blob.core.windows.net";
  j["identities"]["ci"] = {{"type", "client_secret"},
                           {"tenant_id", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
                           {"client_id", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}};
  j["routes"][0]["identity"] = "ci";
  j["identities"].erase("mi");
  auto diags = errors_of(j);
  INFO(dump(diags));
  // In file order: identities, routes, then "workers" (added last).
  REQUIRE(diags.size() == 3);
  CHECK(diags[0].path == "identities.ci.secret_file");
  CHECK(diags[0].message == "required for type client_secret");
  CHECK(diags[1].path == "routes[0].upstream");
  CHECK(diags[1].message.find("https") != std::string::npos);
  CHECK(diags[2].path == "workers");
}

TEST_CASE("Diagnostic::to_string joins path and message", "[config]") {
  CHECK(Diagnostic{"routes[2].upstream", "must be an https URL"}.to_string() ==
        "routes[2].upstream: must be an https URL");
  CHECK(Diagnostic{"", "cannot read x"}.to_string() == "cannot read x");
}

TEST_CASE("a wrong JSON type names the expected one", "[config]") {
  Json j = base();
  j["routes"][0]["strip_prefix"] = "yes";
  require_one_error(j, "routes[0].strip_prefix", "true or false");
}

// ---------------------------------------------------------------- listeners

TEST_CASE("at least one listener is required", "[config]") {
  Json j = base();
  j["listeners"] = Json::array();
  require_one_error(j, "listeners", "at least one listener");
  j.erase("listeners");
  require_one_error(j, "listeners", "at least one listener");
}

TEST_CASE("a listener needs exactly one of address and unix", "[config]") {
  Json j = base();
  j["listeners"][0]["unix"] = "/tmp/m.sock";
  require_one_error(j, "listeners[0]", "found both");
  j["listeners"][0] = Json::object();
  require_one_error(j, "listeners[0]", "found neither");
}

TEST_CASE("listener addresses are host:port with IPv6 in brackets", "[config]") {
  Json j = base();
  SECTION("no port") {
    j["listeners"][0]["address"] = "127.0.0.1";
    require_one_error(j, "listeners[0].address", "host:port");
  }
  SECTION("bad port") {
    j["listeners"][0]["address"] = "127.0.0.1:70000";
    require_one_error(j, "listeners[0].address", "port");
  }
  SECTION("IPv6 without brackets") {
    j["listeners"][0]["address"] = "::1:8080";
    require_one_error(j, "listeners[0].address", "brackets");
  }
  SECTION("a DNS name other than localhost") {
    j["listeners"][0]["address"] = "proxy.internal:8080";
    require_one_error(j, "listeners[0].address", "IP address or localhost");
  }
  SECTION("bracketed IPv6 loopback and localhost are accepted") {
    j["listeners"][0]["address"] = "[::1]:8080";
    j["listeners"].push_back({{"address", "localhost:0"}});
    j["listeners"].push_back({{"address", "127.1.2.3:9000"}});
    auto c = parse_ok(j);
    CHECK(c->listeners[0].host == "::1");
    CHECK(c->listeners[0].port == 8080);
    CHECK(c->listeners[1].host == "127.0.0.1");
    CHECK(c->listeners[1].port == 0);
    CHECK(c->listeners[2].host == "127.1.2.3");
  }
}

TEST_CASE("a non-loopback listener needs allow_remote", "[config]") {
  Json j = base();
  j["listeners"][0]["address"] = "0.0.0.0:8080";
  require_one_error(j, "listeners[0].address", "allow_remote");
  j["listeners"][0]["address"] = "[::]:8080";
  require_one_error(j, "listeners[0].address", "allow_remote");
  j["listeners"][0]["address"] = "10.1.2.3:8080";
  require_one_error(j, "listeners[0].address", "allow_remote");
  j["listeners"][0]["allow_remote"] = true;
  auto c = parse_ok(j);
  CHECK(c->listeners[0].allow_remote);
  CHECK(c->listeners[0].host == "10.1.2.3");
}

TEST_CASE("unix listener options are checked", "[config]") {
  Json j = base();
  j["listeners"][0] = {{"unix", "/tmp/m.sock"}};
  SECTION("mode must be an octal string") {
    j["listeners"][0]["mode"] = "0680";
    require_one_error(j, "listeners[0].mode", "octal");
    j["listeners"][0]["mode"] = 660;
    require_one_error(j, "listeners[0].mode", "must be a string");
    j["listeners"][0]["mode"] = "0600";
    CHECK(parse_ok(j)->listeners[0].mode == 0600);
  }
  SECTION("allowed_uids must be integers") {
    j["listeners"][0]["allowed_uids"] = Json::array({1000, "root"});
    require_one_error(j, "listeners[0].allowed_uids[1]", "numeric user id");
    j["listeners"][0]["allowed_uids"] = Json::array({1000, -1});
    require_one_error(j, "listeners[0].allowed_uids[1]", "numeric user id");
  }
  SECTION("allow_remote is only for TCP") {
    j["listeners"][0]["allow_remote"] = true;
    require_one_error(j, "listeners[0].allow_remote", "only applies to TCP");
  }
  SECTION("mode is only for unix") {
    j["listeners"][0] = {{"address", "127.0.0.1:1"}, {"mode", "0600"}};
    require_one_error(j, "listeners[0].mode", "only applies to Unix");
  }
  SECTION("path too long for sockaddr_un") {
    j["listeners"][0]["unix"] = "/" + std::string(120, 'a');
    require_one_error(j, "listeners[0].unix", "107");
  }
}

// ---------------------------------------------------------------- globals

TEST_CASE("admin address must be loopback unless allow_remote", "[config]") {
  Json j = base();
  j["admin"] = {{"address", "0.0.0.0:9464"}};
  require_one_error(j, "admin.address", "allow_remote");
  j["admin"]["allow_remote"] = true;
  j["admin"]["allow_quit"] = true;
  auto c = parse_ok(j);
  CHECK(c->admin.enabled);
  CHECK(c->admin.allow_remote);
  CHECK(c->admin.allow_quit);
  j["admin"] = Json::object();
  require_one_error(j, "admin.address", "required");
}

TEST_CASE("workers is auto or 1..256", "[config]") {
  Json j = base();
  j["workers"] = 257;
  require_one_error(j, "workers", "1 to 256");
  j["workers"] = "many";
  require_one_error(j, "workers", "auto");
  j["workers"] = 2.5;
  require_one_error(j, "workers", "1 to 256");
  j["workers"] = 4;
  CHECK(parse_ok(j)->workers == 4);
}

TEST_CASE("shutdown_grace is a number >= 0", "[config]") {
  Json j = base();
  j["shutdown_grace"] = -1;
  require_one_error(j, "shutdown_grace", ">= 0");
  j["shutdown_grace"] = 0;
  CHECK(parse_ok(j)->shutdown_grace == 0);
  j["shutdown_grace"] = 2.5;
  CHECK(parse_ok(j)->shutdown_grace == 2.5);
}

TEST_CASE("tls.min_version is 1.2 or 1.3", "[config]") {
  Json j = base();
  j["tls"] = {{"min_version", "1.1"}};
  require_one_error(j, "tls.min_version", "\"1.2\" or \"1.3\"");
  j["tls"] = {{"min_version", "1.3"}};
  CHECK(parse_ok(j)->tls.min_version == 0x0304);
}

TEST_CASE("log level and format are checked", "[config]") {
  Json j = base();
  j["log"] = {{"level", "verbose"}};
  require_one_error(j, "log.level", "debug, info, warn, error");
  j["log"] = {{"format", "text"}};
  require_one_error(j, "log.format", "json");
  j["log"] = {{"level", "debug"}};
  CHECK(parse_ok(j)->log.level == "debug");
}

TEST_CASE("limits are positive numbers", "[config]") {
  Json j = base();
  j["limits"] = {{"max_headers", 0}};
  require_one_error(j, "limits.max_headers", "from 1");
  j["limits"] = {{"header_timeout", 0}};
  require_one_error(j, "limits.header_timeout", "> 0");
  j["limits"] = {{"max_header_bytes", 1.5}};
  require_one_error(j, "limits.max_header_bytes", "non-negative integer");
  j["limits"] = {{"max_header_bytes", 32768}, {"idle_timeout", 5}, {"max_replay_body", 0}};
  auto c = parse_ok(j);
  CHECK(c->limits.max_header_bytes == 32768);
  CHECK(c->limits.idle_timeout == 5);
  CHECK(c->limits.max_replay_body == 0);
}

TEST_CASE("token timeouts have defaults a client waits for and are validated", "[config]") {
  Json j = base();
  auto d = parse_ok(j);
  CHECK(d->limits.token_request_timeout == 10);
  CHECK(d->limits.token_wait_timeout == 15);
  j["limits"] = {{"token_wait_timeout", 0}};
  require_one_error(j, "limits.token_wait_timeout", "> 0");
  j["limits"] = {{"token_request_timeout", -1}};
  require_one_error(j, "limits.token_request_timeout", "> 0");
  j["limits"] = {{"token_request_timeout", "10"}};
  require_one_error(j, "limits.token_request_timeout", "number");
  j["limits"] = {{"token_request_timeout", 2.5}, {"token_wait_timeout", 4}};
  auto c = parse_ok(j);
  CHECK(c->limits.token_request_timeout == 2.5);
  CHECK(c->limits.token_wait_timeout == 4);
}

TEST_CASE("body_stall_timeout defaults to 60 s and is validated", "[config]") {
  Json j = base();
  CHECK(parse_ok(j)->limits.body_stall_timeout == 60);
  j["limits"] = {{"body_stall_timeout", 0}};
  require_one_error(j, "limits.body_stall_timeout", "> 0");
  j["limits"] = {{"body_stall_timeout", 1.5}};
  CHECK(parse_ok(j)->limits.body_stall_timeout == 1.5);
}

TEST_CASE("resource limits have safe defaults and are validated", "[config]") {
  Json j = base();
  auto d = parse_ok(j);
  CHECK(d->limits.max_connections == 4096);
  CHECK(d->limits.max_queued_response_bytes == 1024 * 1024);
  CHECK(d->limits.max_pool_hosts == 256);
  CHECK(d->limits.max_tls_sessions == 1024);
  j["limits"] = {{"max_connections", 0}};
  require_one_error(j, "limits.max_connections", "from 1");
  j["limits"] = {{"max_queued_response_bytes", 100}};
  require_one_error(j, "limits.max_queued_response_bytes", "from 1024");
  j["limits"] = {{"max_pool_hosts", 0}};
  require_one_error(j, "limits.max_pool_hosts", "from 1");
  j["limits"] = {{"max_tls_sessions", 0}};
  require_one_error(j, "limits.max_tls_sessions", "from 1");
  j["limits"] = {{"max_connections", 10}, {"max_queued_response_bytes", 65536},
                 {"max_pool_hosts", 2}, {"max_tls_sessions", 3}};
  auto c = parse_ok(j);
  CHECK(c->limits.max_connections == 10);
  CHECK(c->limits.max_queued_response_bytes == 65536);
  CHECK(c->limits.max_pool_hosts == 2);
  CHECK(c->limits.max_tls_sessions == 3);
}

// ---------------------------------------------------------------- identities

TEST_CASE("identity type is required and must be known", "[config]") {
  Json j = base();
  j["identities"]["mi"] = Json::object();
  require_one_error(j, "identities.mi.type", "required");
  j["identities"]["mi"] = {{"type", "msi"}};
  require_one_error(j, "identities.mi.type", "managed_identity");
}

TEST_CASE("an unknown identity type still reports unknown keys", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "msi"}, {"clientid", "x"}};
  auto diags = errors_of(j);
  INFO(dump(diags));
  REQUIRE(diags.size() == 2);
  CHECK(diags[0].path == "identities.mi.type");
  CHECK(diags[1].path == "identities.mi.clientid");
}

TEST_CASE("client_secret requires tenant_id, client_id and secret_file", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "client_secret"}};
  auto diags = errors_of(j);
  INFO(dump(diags));
  REQUIRE(diags.size() == 3);
  CHECK(diags[0].to_string() == "identities.mi.client_id: required for type client_secret");
  CHECK(diags[1].to_string() == "identities.mi.tenant_id: required for type client_secret");
  CHECK(diags[2].to_string() == "identities.mi.secret_file: required for type client_secret");
}

TEST_CASE("an inline secret is refused: secrets are read from files", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "client_secret"},
                           {"tenant_id", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
                           {"client_id", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},
                           {"secret_file", "/etc/s"},
                           {"client_secret", "abc"}};
  require_one_error(j, "identities.mi.client_secret", "secrets are read from files");
  j["identities"]["mi"].erase("client_secret");
  j["identities"]["mi"]["secret"] = "abc";
  require_one_error(j, "identities.mi.secret", "secrets are read from files");
}

TEST_CASE("the message for an inline secret does not echo it", "[config]") {
  Json j = base();
  j["identities"]["mi"]["secret"] = "s3cr3t-value-zz";
  auto diags = errors_of(j);
  REQUIRE(diags.size() == 1);
  CHECK(diags[0].to_string().find("s3cr3t-value-zz") == std::string::npos);
}

TEST_CASE("client_certificate requires certificate_file", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "client_certificate"},
                           {"tenant_id", "contoso.onmicrosoft.com"},
                           {"client_id", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}};
  require_one_error(j, "identities.mi.certificate_file", "required for type client_certificate");
  j["identities"]["mi"]["certificate_file"] = "/etc/sp.pem";
  j["identities"]["mi"]["send_certificate_chain"] = true;
  auto c = parse_ok(j);
  CHECK(c->identities.at("mi").send_certificate_chain);
  CHECK(c->identities.at("mi").tenant_id == "contoso.onmicrosoft.com");
}

TEST_CASE("token_file requires path", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "token_file"}};
  require_one_error(j, "identities.mi.path", "required for type token_file");
}

TEST_CASE("keys of another identity type are not allowed", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "azure_cli"},
                           {"client_id", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}};
  require_one_error(j, "identities.mi.client_id", "not allowed for type azure_cli");
  j["identities"]["mi"] = {{"type", "managed_identity"}, {"secret_file", "/x"}};
  require_one_error(j, "identities.mi.secret_file", "not allowed for type managed_identity");
  j["identities"]["mi"] = {
      {"type", "token_file"}, {"path", "/x"}, {"authority_host", "https://login.x"}};
  require_one_error(j, "identities.mi.authority_host", "not allowed for type token_file");
}

TEST_CASE("workload_identity keys are all optional", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "workload_identity"}};
  parse_ok(j);
  j["identities"]["mi"] = {{"type", "workload_identity"},
                           {"client_id", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},
                           {"tenant_id", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
                           {"federated_token_file", "/var/run/secrets/token"},
                           {"authority_host", "https://login.microsoftonline.us/"}};
  auto c = parse_ok(j);
  CHECK(c->identities.at("mi").authority_host == "https://login.microsoftonline.us");
  CHECK(c->identities.at("mi").federated_token_file == "/var/run/secrets/token");
}

TEST_CASE("authority_host must be https", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "default"}, {"authority_host", "http://login.local"}};
  require_one_error(j, "identities.mi.authority_host", "https");
}

TEST_CASE("managed identity ids are GUIDs and resource ids start with /subscriptions/",
          "[config]") {
  Json j = base();
  j["identities"]["mi"]["client_id"] = "not-a-guid";
  require_one_error(j, "identities.mi.client_id", "GUID");
  j["identities"]["mi"] = {{"type", "managed_identity"}, {"resource_id", "fleet"}};
  require_one_error(j, "identities.mi.resource_id", "/subscriptions/");
}

TEST_CASE("at most one user-assigned selector", "[config]") {
  Json j = base();
  j["identities"]["mi"]["client_id"] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
  j["identities"]["mi"]["object_id"] = "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a";
  require_one_error(j, "identities.mi", "at most one of client_id, object_id, resource_id");
}

TEST_CASE("managed identity source and endpoint are checked", "[config]") {
  Json j = base();
  j["identities"]["mi"]["source"] = "aks";
  require_one_error(j, "identities.mi.source", "imds, app_service, arc");
  j["identities"]["mi"]["source"] = "imds";
  j["identities"]["mi"]["endpoint"] = "ftp://127.0.0.1/token";
  require_one_error(j, "identities.mi.endpoint", "http");
  j["identities"]["mi"]["endpoint"] = "http://127.0.0.1:40000/metadata/identity/oauth2/token";
  auto c = parse_ok(j);
  CHECK(c->identities.at("mi").source == "imds");
  CHECK(c->identities.at("mi").endpoint == "http://127.0.0.1:40000/metadata/identity/oauth2/token");
}

TEST_CASE("forced sources refuse selectors they cannot honour", "[config]") {
  Json j = base();
  SECTION("arc") {
    j["identities"]["mi"]["source"] = "arc";
    j["identities"]["mi"]["client_id"] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    require_one_error(j, "identities.mi.client_id", "source arc cannot select");
  }
  SECTION("cloud_shell") {
    j["identities"]["mi"]["source"] = "cloud_shell";
    j["identities"]["mi"]["object_id"] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    require_one_error(j, "identities.mi.object_id", "source cloud_shell cannot select");
  }
  SECTION("service_fabric accepts only object_id") {
    j["identities"]["mi"]["source"] = "service_fabric";
    j["identities"]["mi"]["client_id"] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    require_one_error(j, "identities.mi.client_id", "only select an identity by object_id");
    j["identities"]["mi"].erase("client_id");
    j["identities"]["mi"]["object_id"] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    parse_ok(j);
  }
  SECTION("auto-detected source leaves the selector to run time") {
    j["identities"]["mi"]["resource_id"] =
        "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/x";
    parse_ok(j);
  }
}

TEST_CASE("identity names are restricted to a safe charset", "[config]") {
  Json j = base();
  j["identities"]["bad name"] = {{"type", "azure_cli"}};
  j["routes"][0]["identity"] = "bad name";
  j["identities"].erase("mi");
  require_one_error(j, "identities[\"bad name\"]", "letters, digits");
}

// ---------------------------------------------------------------- routes

TEST_CASE("at least one route is required", "[config]") {
  Json j = base();
  j["routes"] = Json::array();
  auto diags = errors_of(j);
  INFO(dump(diags));
  REQUIRE(diags.size() == 1);
  CHECK(diags[0].to_string() == "routes: at least one route is required");
}

TEST_CASE("route name is required and unique", "[config]") {
  Json j = base();
  j["routes"][0].erase("name");
  require_one_error(j, "routes[0].name", "required");
  j = base();
  j["routes"].push_back(j["routes"][0]);
  j["routes"][1]["match"]["path_prefix"] = "/x/";
  require_one_error(j, "routes[1].name", "duplicate route name \"blob\"");
}

TEST_CASE("route upstream, identity and scope are required", "[config]") {
  Json j = base();
  j["routes"][0].erase("upstream");
  j["routes"][0].erase("identity");
  j["routes"][0].erase("scope");
  auto diags = errors_of(j);
  INFO(dump(diags));
  REQUIRE(diags.size() == 3);
  CHECK(diags[0].path == "routes[0].upstream");
  CHECK(diags[1].path == "routes[0].identity");
  CHECK(diags[2].path == "routes[0].scope");
}

TEST_CASE("upstream must be an https URL without query, fragment or userinfo", "[config]") {
  Json j = base();
  SECTION("http") {
    j["routes"][0]["upstream"] = "http://contoso.blob.core.windows.net";
    require_one_error(j, "routes[0].upstream", "must be an https URL");
  }
  SECTION("query") {
    j["routes"][0]["upstream"] = "https://contoso.blob.core.windows.net/?a=b";
    require_one_error(j, "routes[0].upstream", "query or fragment");
  }
  SECTION("fragment") {
    j["routes"][0]["upstream"] = "https://contoso.blob.core.windows.net/#x";
    require_one_error(j, "routes[0].upstream", "query or fragment");
  }
  SECTION("userinfo") {
    j["routes"][0]["upstream"] = "https://user:pw@contoso.blob.core.windows.net";
    require_one_error(j, "routes[0].upstream", "user info");
  }
  SECTION("bad port") {
    j["routes"][0]["upstream"] = "https://contoso.blob.core.windows.net:0";
    require_one_error(j, "routes[0].upstream", "port");
  }
  SECTION("no host") {
    j["routes"][0]["upstream"] = "https:///path";
    require_one_error(j, "routes[0].upstream", "must name a host");
  }
  SECTION("{host} inside a name") {
    j["routes"][0]["match"]["host"] = "*.blob.core.windows.net";
    j["routes"][0]["upstream"] = "https://{host}.example.com";
    require_one_error(j, "routes[0].upstream", "whole host");
  }
}

TEST_CASE("parse_upstream_url splits host, port and base path", "[config]") {
  auto u = miproxy::config::parse_upstream_url("https://Example.COM:8443/base/path/");
  REQUIRE(u);
  CHECK_FALSE(u->templated);
  CHECK(u->host == "example.com");
  CHECK(u->port == 8443);
  CHECK(u->base_path == "/base/path");
  u = miproxy::config::parse_upstream_url("https://[::1]:9443");
  REQUIRE(u);
  CHECK(u->host == "::1");
  CHECK(u->port == 9443);
  CHECK(u->base_path.empty());
  u = miproxy::config::parse_upstream_url("https://{host}");
  REQUIRE(u);
  CHECK(u->templated);
  CHECK(u->host.empty());
  CHECK(u->port == 443);
}

TEST_CASE("{host} upstream needs a wildcard match.host", "[config]") {
  Json j = base();
  j["routes"][0]["upstream"] = "https://{host}";
  require_one_error(j, "routes[0].upstream", "only allowed when match.host is a wildcard");
  j["routes"][0]["match"].erase("host");
  require_one_error(j, "routes[0].upstream", "only allowed when match.host is a wildcard");
  j["routes"][0]["match"]["host"] = "*.blob.core.windows.net";
  j["routes"][0]["upstream"] = "https://{host}:8443";
  parse_ok(j);
  // An invalid match.host reports itself, not a second error about {host}.
  j["routes"][0]["match"]["host"] = "*.blob.core.windows.net:443";
  require_one_error(j, "routes[0].match.host", "port");
}

TEST_CASE("route identity must be defined", "[config]") {
  Json j = base();
  j["routes"][0]["identity"] = "nope";
  require_one_error(j, "routes[0].identity", "no identity named \"nope\" (defined: mi)");
}

TEST_CASE("scope is an absolute URI, an application id, or auto", "[config]") {
  Json j = base();
  j["routes"][0]["scope"] = "storage";
  require_one_error(j, "routes[0].scope", "auto");
  j["routes"][0]["scope"] = "https://a/.default https://b/.default";
  require_one_error(j, "routes[0].scope", "one Entra scope");
  for (const char* ok : {"auto", "https://management.core.windows.net//.default",
                         "api://9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d/.default",
                         "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d/.default"}) {
    j["routes"][0]["scope"] = ok;
    CHECK(parse_ok(j)->routes[0].scope == ok);
  }
}

TEST_CASE("match.host is lower-cased and * is only a whole first label", "[config]") {
  Json j = base();
  j["routes"][0]["match"]["host"] = "Contoso.Blob.Core.Windows.Net";
  CHECK(parse_ok(j)->routes[0].match_host == "contoso.blob.core.windows.net");
  j["routes"][0]["match"]["host"] = "a*.blob.core.windows.net";
  require_one_error(j, "routes[0].match.host", "whole first label");
  j["routes"][0]["match"]["host"] = "x.*.core.windows.net";
  require_one_error(j, "routes[0].match.host", "whole first label");
  j["routes"][0]["match"]["host"] = "contoso.blob.core.windows.net:443";
  require_one_error(j, "routes[0].match.host", "port");
  j["routes"][0]["match"]["host"] = "";
  require_one_error(j, "routes[0].match.host", "omit");
  j["routes"][0]["match"]["host"] = "[::1]";
  CHECK(parse_ok(j)->routes[0].match_host == "::1");
}

TEST_CASE("match.path_prefix starts with /", "[config]") {
  Json j = base();
  j["routes"][0]["match"]["path_prefix"] = "orders/";
  require_one_error(j, "routes[0].match.path_prefix", "start with '/'");
  j["routes"][0]["match"]["path_prefix"] = "/orders?x";
  require_one_error(j, "routes[0].match.path_prefix", "'?'");
}

TEST_CASE("match.methods are upper-cased tokens", "[config]") {
  Json j = base();
  j["routes"][0]["match"]["methods"] = Json::array({"get", "Head", "GET"});
  CHECK(parse_ok(j)->routes[0].methods == std::vector<std::string>{"GET", "HEAD"});
  j["routes"][0]["match"]["methods"] = Json::array({"GET", "BAD METHOD"});
  require_one_error(j, "routes[0].match.methods[1]", "HTTP method");
  j["routes"][0]["match"]["methods"] = Json::array();
  require_one_error(j, "routes[0].match.methods", "at least one method");
}

TEST_CASE("strip_prefix needs a path_prefix", "[config]") {
  Json j = base();
  j["routes"][0]["strip_prefix"] = true;
  require_one_error(j, "routes[0].strip_prefix", "needs match.path_prefix");
}

TEST_CASE("headers.set and headers.remove refuse headers miproxy owns", "[config]") {
  Json j = base();
  SECTION("set Authorization") {
    j["routes"][0]["headers"] = {{"set", {{"Authorization", "Bearer x"}}}};
    require_one_error(j, "routes[0].headers.set.Authorization",
                      "miproxy sets Authorization from the route's identity");
  }
  SECTION("remove authorization") {
    j["routes"][0]["headers"] = {{"remove", Json::array({"x-a", "authorization"})}};
    require_one_error(j, "routes[0].headers.remove[1]", "cannot be removed");
  }
  SECTION("set Host") {
    j["routes"][0]["headers"] = {{"set", {{"host", "evil.example"}}}};
    require_one_error(j, "routes[0].headers.set.host", "Host");
  }
  SECTION("hop-by-hop") {
    j["routes"][0]["headers"] = {{"remove", Json::array({"Transfer-Encoding"})}};
    require_one_error(j, "routes[0].headers.remove[0]", "hop-by-hop");
    j["routes"][0]["headers"] = {{"set", {{"Connection", "close"}}}};
    require_one_error(j, "routes[0].headers.set.Connection", "hop-by-hop");
  }
  SECTION("values without CR/LF") {
    j["routes"][0]["headers"] = {{"set", {{"x-a", "a\r\nInjected: 1"}}}};
    require_one_error(j, "routes[0].headers.set.x-a", "CR, LF");
  }
  SECTION("accepted rules keep order and lower-case removals") {
    j["routes"][0]["headers"] = {{"set", {{"x-ms-version", "2023-11-03"}, {"X-B", "2"}}},
                                 {"remove", Json::array({"X-Forwarded-For"})}};
    auto c = parse_ok(j);
    const auto& h = c->routes[0].headers;
    REQUIRE(h.set.size() == 2);
    CHECK(h.set[0] == std::pair<std::string, std::string>{"x-ms-version", "2023-11-03"});
    CHECK(h.set[1].first == "X-B");
    CHECK(h.remove == std::vector<std::string>{"x-forwarded-for"});
  }
}

TEST_CASE("route tls, timeouts and inbound_authorization", "[config]") {
  Json j = base();
  j["routes"][0]["timeouts"] = {{"connect", 0}};
  require_one_error(j, "routes[0].timeouts.connect", "> 0");
  j["routes"][0]["timeouts"] = {{"response", "10"}};
  require_one_error(j, "routes[0].timeouts.response", "a number");
  j["routes"][0]["timeouts"] = {{"idle", 1e9}};
  require_one_error(j, "routes[0].timeouts.idle", "at most");
  j["routes"][0]["timeouts"] = {{"connect", 2.5}, {"idle", 30}, {"response", 120}};
  j["routes"][0]["inbound_authorization"] = "drop";
  require_one_error(j, "routes[0].inbound_authorization", "\"replace\" or \"reject\"");
  j["routes"][0]["inbound_authorization"] = "reject";
  j["routes"][0]["tls"] = {{"ca_file", ""}};
  require_one_error(j, "routes[0].tls.ca_file", "empty");
  j["routes"][0]["tls"] = {{"ca_file", "/etc/ca.pem"}};
  auto c = parse_ok(j);
  CHECK(c->routes[0].timeouts.connect == 2.5);
  CHECK(c->routes[0].timeouts.response == 120);
  CHECK(c->routes[0].tls_ca_file == "/etc/ca.pem");
  CHECK(c->routes[0].inbound_authorization == Route::InboundAuthorization::REJECT);
}

// ---------------------------------------------------------------- warnings

TEST_CASE("a route shadowed by an earlier one is a warning", "[config]") {
  Json j = base();
  j["routes"] = Json::array();
  auto route = [](const char* name, Json match) {
    return Json{{"name", name},
                {"match", match},
                {"upstream", "https://contoso.blob.core.windows.net"},
                {"identity", "mi"},
                {"scope", "https://storage.azure.com/.default"}};
  };
  j["routes"].push_back(route("orders", {{"host", "contoso.blob.core.windows.net"},
                                         {"path_prefix", "/orders/"},
                                         {"methods", {"GET"}}}));
  j["routes"].push_back(route("any-blob", {{"host", "*.blob.core.windows.net"}}));
  j["routes"].push_back(route("other", {{"host", "fabrikam.blob.core.windows.net"}}));
  j["routes"].push_back(route(
      "contoso-x",
      {{"host", "contoso.blob.core.windows.net"}, {"path_prefix", "/x/"}, {"methods", {"PUT"}}}));
  // Not shadowed: two labels under the wildcard.
  j["routes"].push_back(route("deep", {{"host", "a.b.blob.core.windows.net"}}));
  std::vector<Diagnostic> warnings;
  parse_ok(j, &warnings);
  INFO(dump(warnings));
  REQUIRE(warnings.size() == 2);
  CHECK(warnings[0].to_string() ==
        "routes[2]: shadowed by routes[1] (\"any-blob\"); it can never match");
  CHECK(warnings[1].path == "routes[3]");
}

TEST_CASE("a narrower method set does not shadow", "[config]") {
  Json j = base();
  j["routes"][0]["match"]["methods"] = Json::array({"GET"});
  j["routes"].push_back(j["routes"][0]);
  j["routes"][1]["name"] = "put";
  j["routes"][1]["match"]["methods"] = Json::array({"PUT"});
  std::vector<Diagnostic> warnings;
  parse_ok(j, &warnings);
  CHECK(warnings.empty());
  j["routes"][1]["match"]["methods"] = Json::array({"GET"});
  j["routes"][1]["match"]["path_prefix"] = "/c/";
  parse_ok(j, &warnings);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].path == "routes[1]");
}

TEST_CASE("an identity no route uses is a warning", "[config]") {
  Json j = base();
  j["identities"]["spare"] = {{"type", "azure_cli"}};
  std::vector<Diagnostic> warnings;
  parse_ok(j, &warnings);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].path == "identities.spare");
}

// ---------------------------------------------------------------- describe / to_string

TEST_CASE("describe lists listeners, admin, workers and every route", "[config]") {
  auto result = miproxy::config::load_file(fixture_path("interface_example.json"));
  REQUIRE(result);
  std::string text = miproxy::config::describe(*result->config);
  INFO(text);
  CHECK(text.find("127.0.0.1:8080") != std::string::npos);
  CHECK(text.find("/run/miproxy/proxy.sock") != std::string::npos);
  CHECK(text.find("admin: 127.0.0.1:9464") != std::string::npos);
  CHECK(text.find("workers: auto") != std::string::npos);
  size_t orders = text.find("[0] orders-blob");
  size_t any = text.find("[1] any-blob");
  size_t vault = text.find("[2] vault");
  REQUIRE(orders != std::string::npos);
  REQUIRE(any != std::string::npos);
  REQUIRE(vault != std::string::npos);
  CHECK(orders < any);
  CHECK(any < vault);
  CHECK(text.find("methods GET HEAD PUT") != std::string::npos);
  CHECK(text.find("path prefix /vault/") != std::string::npos);
  CHECK(text.find("upstream: https://{host}") != std::string::npos);
  CHECK(text.find("identity: orders (managed_identity)") != std::string::npos);
  CHECK(text.find("scope:    auto") != std::string::npos);
  CHECK(text.find("strip_prefix: yes") != std::string::npos);
  CHECK(text.find("inbound_authorization: replace") != std::string::npos);
}

TEST_CASE("to_string spells identity types as the config does", "[config]") {
  using T = Identity::Type;
  CHECK(std::string(miproxy::config::to_string(T::MANAGED_IDENTITY)) == "managed_identity");
  CHECK(std::string(miproxy::config::to_string(T::WORKLOAD_IDENTITY)) == "workload_identity");
  CHECK(std::string(miproxy::config::to_string(T::CLIENT_SECRET)) == "client_secret");
  CHECK(std::string(miproxy::config::to_string(T::CLIENT_CERTIFICATE)) == "client_certificate");
  CHECK(std::string(miproxy::config::to_string(T::AZURE_CLI)) == "azure_cli");
  CHECK(std::string(miproxy::config::to_string(T::DEFAULT)) == "default");
  CHECK(std::string(miproxy::config::to_string(T::TOKEN_FILE)) == "token_file");
}

TEST_CASE("load_file reads a file written at test time", "[config]") {
  char dir_template[] = "/tmp/miproxy-config-test-XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  std::string path = std::string(dir_template) + "/c.json";
  {
    std::ofstream out(path);
    out << base().dump(2);
  }
  auto result = miproxy::config::load_file(path);
  REQUIRE(result);
  CHECK(result->config->source_path == path);
  std::filesystem::remove_all(dir_template);
}

// ---------------------------------------------------------------- more error paths

TEST_CASE("array elements and objects of the wrong shape name their path", "[config]") {
  Json j = base();
  SECTION("a route that is not an object keeps later indices right") {
    j["routes"].insert(j["routes"].begin(), 7);
    j["routes"].push_back(j["routes"][1]);
    j["routes"][2]["name"] = "second";
    j["routes"][2]["upstream"] = "ftp://x";
    auto diags = errors_of(j);
    INFO(dump(diags));
    REQUIRE(diags.size() == 2);
    CHECK(diags[0].to_string() == "routes[0]: must be an object");
    CHECK(diags[1].path == "routes[2].upstream");
  }
  SECTION("a listener that is not an object") {
    j["listeners"][0] = "127.0.0.1:8080";
    require_one_error(j, "listeners[0]", "must be an object");
  }
  SECTION("an identity that is not an object") {
    j["identities"]["mi"] = "managed_identity";
    require_one_error(j, "identities.mi", "must be an object");
  }
  SECTION("match that is not an object") {
    j["routes"][0]["match"] = "contoso.blob.core.windows.net";
    require_one_error(j, "routes[0].match", "must be an object");
  }
  SECTION("routes that is not an array") {
    j["routes"] = Json::object();
    require_one_error(j, "routes", "must be an array");
  }
}

TEST_CASE("tenant_id is a GUID or a tenant domain", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "azure_cli"}, {"tenant_id", "my tenant"}};
  require_one_error(j, "identities.mi.tenant_id", "tenant id");
  j["identities"]["mi"]["tenant_id"] = "72f988bf-86f1-41af-91ab-2d7cd011db47";
  CHECK(parse_ok(j)->identities.at("mi").tenant_id == "72f988bf-86f1-41af-91ab-2d7cd011db47");
}

TEST_CASE("file paths must not be empty", "[config]") {
  Json j = base();
  j["identities"]["mi"] = {{"type", "token_file"}, {"path", ""}};
  require_one_error(j, "identities.mi.path", "must not be empty");
  j["identities"]["mi"] = {{"type", "workload_identity"}, {"federated_token_file", ""}};
  require_one_error(j, "identities.mi.federated_token_file", "must not be empty");
  j["listeners"][0] = {{"unix", ""}};
  j["identities"]["mi"] = {{"type", "azure_cli"}};
  require_one_error(j, "listeners[0].unix", "socket path");
}

TEST_CASE("header rules: names are tokens, set once, and not also removed", "[config]") {
  Json j = base();
  j["routes"][0]["headers"] = {{"set", {{"bad header", "x"}}}};
  require_one_error(j, "routes[0].headers.set[\"bad header\"]", "header name");
  j["routes"][0]["headers"] = {{"set", {{"X-A", "1"}, {"x-a", "2"}}}};
  require_one_error(j, "routes[0].headers.set.x-a", "set twice");
  j["routes"][0]["headers"] = {{"set", {{"X-A", "1"}}}, {"remove", Json::array({"x-a"})}};
  require_one_error(j, "routes[0].headers.set.X-A", "also listed in \"remove\"");
  j["routes"][0]["headers"] = {{"set", {{"X-A", 1}}}};
  require_one_error(j, "routes[0].headers.set.X-A", "must be a string");
}

TEST_CASE("describe shows unix listener details and a disabled admin", "[config]") {
  Json j = base();
  j["listeners"].push_back(
      {{"unix", "/tmp/miproxy.sock"}, {"mode", "0600"}, {"allowed_uids", {1000, 1001}}});
  j["workers"] = 3;
  std::string text = miproxy::config::describe(*parse_ok(j));
  INFO(text);
  CHECK(text.find("unix /tmp/miproxy.sock  mode 0600  allowed_uids 1000 1001") !=
        std::string::npos);
  CHECK(text.find("admin: off") != std::string::npos);
  CHECK(text.find("workers: 3") != std::string::npos);
  CHECK(text.find("[0] blob") != std::string::npos);
}

// ---------------------------------------------------------------- browser and Host defences

TEST_CASE("listeners[].allowed_origins are exact origins, stored as browsers send them",
          "[config]") {
  Json j = base();
  j["listeners"][0]["allowed_origins"] = {"https://App.Example", "http://localhost:3000",
                                          "https://app.example:443", "http://[::1]:8080",
                                          "http://127.0.0.1:80"};
  auto c = parse_ok(j);
  CHECK(c->listeners[0].allowed_origins ==
        std::vector<std::string>{"https://app.example", "http://localhost:3000",
                                 "http://[::1]:8080", "http://127.0.0.1"});
  CHECK(parse_ok(base())->listeners[0].allowed_origins.empty());
  for (const char* bad : {"null", "*", "app.example", "https://app.example/",
                          "https://app.example/path", "https://user@app.example",
                          "https://app.example:0", "https://app.example:99999", "https://",
                          "https://bad_host!"}) {
    INFO(bad);
    Json k = base();
    k["listeners"][0]["allowed_origins"] = {bad};
    auto diags = errors_of(k);
    INFO(dump(diags));
    REQUIRE(diags.size() == 1);
    CHECK(diags[0].path == "listeners[0].allowed_origins[0]");
  }
  Json n = base();
  n["listeners"][0]["allowed_origins"] = {"null"};
  require_one_error(n, "listeners[0].allowed_origins[0]", "Origin: null");
  Json u = base();
  u["listeners"][0] = {{"unix", "/tmp/x.sock"}, {"allowed_origins", {"https://app.example"}}};
  CHECK(parse_ok(u)->listeners[0].allowed_origins.size() == 1);
}

TEST_CASE("match.allowed_hosts: host names for a route without match.host", "[config]") {
  Json j = base();
  j["routes"][0]["match"] = {{"path_prefix", "/c/"},
                             {"allowed_hosts", {"App.Internal", "*.svc.internal", "[fd00::1]"}}};
  auto c = parse_ok(j);
  CHECK(c->routes[0].allowed_hosts ==
        std::vector<std::string>{"app.internal", "*.svc.internal", "fd00::1"});
  Json with_host = base();
  with_host["routes"][0]["match"]["allowed_hosts"] = {"app.internal"};
  require_one_error(with_host, "routes[0].match.allowed_hosts", "without match.host");
  Json bad = base();
  bad["routes"][0]["match"] = {{"allowed_hosts", {"app.internal:8080"}}};
  require_one_error(bad, "routes[0].match.allowed_hosts[0]", "port");
  bad["routes"][0]["match"] = {{"allowed_hosts", {"a*.internal"}}};
  require_one_error(bad, "routes[0].match.allowed_hosts[0]", "'*'");
  bad["routes"][0]["match"] = {{"allowed_hosts", {7}}};
  require_one_error(bad, "routes[0].match.allowed_hosts[0]", "host name");
}

TEST_CASE("limits.max_learned_scopes is at least 1", "[config]") {
  Json j = base();
  CHECK(parse_ok(j)->limits.max_learned_scopes == 1024);
  j["limits"] = {{"max_learned_scopes", 0}};
  require_one_error(j, "limits.max_learned_scopes", "from 1");
  j["limits"] = {{"max_learned_scopes", 8}};
  CHECK(parse_ok(j)->limits.max_learned_scopes == 8);
}

TEST_CASE("shadowing follows segment-boundary prefixes: /kv does not cover /kvx", "[config]") {
  Json j = base();
  j["routes"][0]["match"] = {{"path_prefix", "/kv"}};
  j["routes"].push_back(j["routes"][0]);
  j["routes"][1]["name"] = "kvx";
  j["routes"][1]["match"]["path_prefix"] = "/kvx";
  std::vector<Diagnostic> warnings;
  parse_ok(j, &warnings);
  CHECK(warnings.empty());
  j["routes"][1]["match"]["path_prefix"] = "/kv/x";
  parse_ok(j, &warnings);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].path == "routes[1]");
}
