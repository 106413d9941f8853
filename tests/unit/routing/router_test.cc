#include "routing/router.h"

#include <catch2/catch.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "config/config.h"

using miproxy::routing::MatchResult;
using miproxy::routing::Table;
using Json = nlohmann::ordered_json;
using Outcome = MatchResult::Outcome;

namespace {

Json route(const char* name, Json match, const char* upstream = "https://up.example.com",
           const char* scope = "https://vault.azure.net/.default") {
  return Json{{"name", name},
              {"match", match},
              {"upstream", upstream},
              {"identity", "mi"},
              {"scope", scope}};
}

Json stripping(Json r) {
  r["strip_prefix"] = true;
  return r;
}

// Builds a Table from |routes| through the real config parser.
std::unique_ptr<Table> table(const Json& routes) {
  Json doc = {{"listeners", Json::array({{{"address", "127.0.0.1:0"}}})},
              {"identities", {{"mi", {{"type", "managed_identity"}}}}},
              {"routes", routes}};
  auto result = miproxy::config::parse(doc.dump());
  if (!result) {
    std::string all;
    for (const auto& d : result.error()) {
      all += d.to_string() + "\n";
    }
    INFO(all);
    REQUIRE(result.has_value());
  }
  return std::make_unique<Table>(result->config);
}

std::string matched_name(const Table& t, std::string_view host, std::string_view path,
                         std::string_view method = "GET") {
  MatchResult m = t.match(host, path, method);
  if (m.outcome != Outcome::MATCHED) {
    return m.outcome == Outcome::NO_ROUTE ? "<none>" : "<405>";
  }
  return m.route->route->name;
}

}  // namespace

TEST_CASE("exact host matches ignoring case, port and a trailing dot", "[routing]") {
  auto t = table(Json::array({route("c", {{"host", "contoso.blob.core.windows.net"}})}));
  CHECK(matched_name(*t, "contoso.blob.core.windows.net", "/") == "c");
  CHECK(matched_name(*t, "Contoso.BLOB.core.windows.net:8080", "/x") == "c");
  CHECK(matched_name(*t, "contoso.blob.core.windows.net.", "/x") == "c");
  CHECK(matched_name(*t, "fabrikam.blob.core.windows.net", "/") == "<none>");
  CHECK(matched_name(*t, "contoso.blob.core.windows.net.evil", "/") == "<none>");
  CHECK(matched_name(*t, "", "/") == "<none>");
}

TEST_CASE("a wildcard matches exactly one leading label", "[routing]") {
  auto t = table(Json::array({route("w", {{"host", "*.blob.core.windows.net"}})}));
  CHECK(matched_name(*t, "a.blob.core.windows.net", "/") == "w");
  CHECK(matched_name(*t, "A.Blob.Core.Windows.Net:443", "/") == "w");
  CHECK(matched_name(*t, "blob.core.windows.net", "/") == "<none>");
  CHECK(matched_name(*t, "a.b.blob.core.windows.net", "/") == "<none>");
  CHECK(matched_name(*t, ".blob.core.windows.net", "/") == "<none>");
  CHECK(matched_name(*t, "ablob.core.windows.net", "/") == "<none>");
}

TEST_CASE("no match.host matches any host, including none", "[routing]") {
  auto t = table(Json::array({route("any", {{"path_prefix", "/vault/"}})}));
  CHECK(matched_name(*t, "whatever.example", "/vault/x") == "any");
  CHECK(matched_name(*t, "", "/vault/x") == "any");
  CHECK(matched_name(*t, "[::1]:8080", "/vault/x") == "any");
}

TEST_CASE("IPv6 hosts match with and without brackets and port", "[routing]") {
  auto t = table(Json::array({route("v6", {{"host", "[::1]"}})}));
  CHECK(matched_name(*t, "[::1]:8080", "/") == "v6");
  CHECK(matched_name(*t, "[::1]", "/") == "v6");
  CHECK(matched_name(*t, "::1", "/") == "v6");
  CHECK(matched_name(*t, "[::2]:8080", "/") == "<none>");
}

TEST_CASE("path prefix matches the path before the query at a segment boundary", "[routing]") {
  auto t = table(Json::array({route("orders", {{"path_prefix", "/orders/"}}),
                              route("kv", {{"path_prefix", "/kv"}})}));
  CHECK(matched_name(*t, "h", "/orders/") == "orders");
  CHECK(matched_name(*t, "h", "/orders/a/b?comp=list") == "orders");
  CHECK(matched_name(*t, "h", "/orders") == "<none>");
  CHECK(matched_name(*t, "h", "/Orders/a") == "<none>");
  CHECK(matched_name(*t, "h", "/other?x=/orders/") == "<none>");
  // "/kv" names the segment "kv", not every path that begins with those bytes.
  CHECK(matched_name(*t, "h", "/kv") == "kv");
  CHECK(matched_name(*t, "h", "/kv/") == "kv");
  CHECK(matched_name(*t, "h", "/kv/secrets/a") == "kv");
  CHECK(matched_name(*t, "h", "/kv?api-version=7.4") == "kv");
  CHECK(matched_name(*t, "h", "/kvx/secrets") == "<none>");
  CHECK(matched_name(*t, "h", "/kv../tenant-b/x") == "<none>");
  CHECK(matched_name(*t, "h", "/kv;x/") == "<none>");
}

namespace {

// The outcome of matching |path| and, for BAD_PATH, that the route is named.
std::string path_outcome(const Table& t, std::string_view path) {
  MatchResult m = t.match("h", path, "GET");
  switch (m.outcome) {
    case Outcome::MATCHED:
      return m.route->route->name;
    case Outcome::BAD_PATH:
      REQUIRE(m.route != nullptr);
      CHECK_FALSE(m.problem.empty());
      return "<400 " + m.route->route->name + ">";
    case Outcome::NO_ROUTE:
      return "<none>";
    default:
      return "<other>";
  }
}

}  // namespace

TEST_CASE("a path_prefix route refuses dot segments instead of forwarding them", "[routing]") {
  auto t = table(
      Json::array({route("orders", {{"path_prefix", "/orders/"}}), route("any", Json::object())}));
  CHECK(path_outcome(*t, "/orders/../secret/x") == "<400 orders>");
  CHECK(path_outcome(*t, "/orders/%2e%2E/secret") == "<400 orders>");
  CHECK(path_outcome(*t, "/orders/.%2e/secret") == "<400 orders>");
  CHECK(path_outcome(*t, "/orders/./x") == "<400 orders>");
  CHECK(path_outcome(*t, "/orders/x/..") == "<400 orders>");
  CHECK(path_outcome(*t, "/orders/a..b/x") == "orders");
  CHECK(path_outcome(*t, "/orders/.../x") == "orders");
  CHECK(path_outcome(*t, "/orders/x?q=/../") == "orders");
  // Outside the prefix the catch-all route decides, as before.
  CHECK(path_outcome(*t, "/other/../x") == "any");
  CHECK(miproxy::routing::has_dot_segment("/a/.."));
  CHECK_FALSE(miproxy::routing::has_dot_segment("/a/...b"));
}

TEST_CASE("a path_prefix route refuses each escape shape", "[routing]") {
  auto t = table(
      Json::array({route("orders", {{"path_prefix", "/orders/"}}), route("any", Json::object())}));
  const char* shapes[] = {
      "/orders/..%2fsecret",     "/orders/..%2Fsecret",   "/orders/%2e%2e%2fsecret",
      "/orders/%2E%2E%2Fsecret", "/orders/..\\secret",    "/orders/..%5csecret",
      "/orders/..%5Csecret",     "/orders/..;/secret",    "/orders/..;x/secret",
      "/orders/.;/x",            "/orders/..%3b/secret",  "/orders/a%2fb",
      "/orders/a\\b",            "/orders/%5c",           "/orders/x/..;",
  };
  for (const char* path : shapes) {
    INFO(path);
    CHECK(path_outcome(*t, path) == "<400 orders>");
  }
  using miproxy::routing::path_escape;
  CHECK(path_escape("/a/..%2fb") == "an encoded '/' (%2F) in the path");
  CHECK(path_escape("/a\\b") == "a backslash in the path (some servers read it as '/')");
  CHECK(path_escape("/a/..;/b") == "a '.' or '..' segment in the path");
  CHECK(path_escape("/a/%2").empty());
  CHECK(path_escape("/a/b%20c;v=1/x").empty());
  CHECK(path_escape("/a/b?x=%2f..\\").empty());
}

TEST_CASE("the dot-segment check runs on the path as it goes upstream", "[routing]") {
  auto t = table(Json::array({
      stripping(route("kv", {{"path_prefix", "/kv"}}, "https://kv.example.com/tenant-a")),
      stripping(route("slash", {{"path_prefix", "/s/"}}, "https://kv.example.com/tenant-a")),
      route("any", Json::object()),
  }));
  // "/kv../tenant-b/x" is not under "/kv": stripping "/kv" from it would send
  // "/tenant-a/../tenant-b/x" upstream.
  CHECK(path_outcome(*t, "/kv../tenant-b/x") == "any");
  CHECK(path_outcome(*t, "/kv/../tenant-b/x") == "<400 kv>");
  CHECK(path_outcome(*t, "/kv/..") == "<400 kv>");
  CHECK(path_outcome(*t, "/s/../tenant-b/x") == "<400 slash>");
  CHECK(path_outcome(*t, "/s/..") == "<400 slash>");
  CHECK(path_outcome(*t, "/s/%2e%2e/x") == "<400 slash>");
  CHECK(path_outcome(*t, "/kv/secrets/x") == "kv");
  auto up = miproxy::routing::resolve_upstream(t->routes()[0], "h");
  CHECK(miproxy::routing::upstream_path(t->routes()[0], up, "/kv/secrets/x") ==
        "/tenant-a/secrets/x");
}

TEST_CASE("methods: METHOD_NOT_ALLOWED only when no later route fully matches", "[routing]") {
  auto t = table(Json::array({
      route("read", {{"path_prefix", "/c/"}, {"methods", {"GET", "HEAD"}}}),
      route("write", {{"path_prefix", "/c/w/"}, {"methods", {"PUT"}}}),
  }));
  CHECK(matched_name(*t, "h", "/c/x", "GET") == "read");
  CHECK(matched_name(*t, "h", "/c/w/x", "PUT") == "write");
  MatchResult m = t->match("h", "/c/x", "DELETE");
  CHECK(m.outcome == Outcome::METHOD_NOT_ALLOWED);
  REQUIRE(m.route != nullptr);
  CHECK(m.route->route->name == "read");
  CHECK(t->match("h", "/c/w/x", "DELETE").route->route->name == "read");
  CHECK(t->match("h", "/d", "GET").outcome == Outcome::NO_ROUTE);
  CHECK(t->match("h", "/d", "GET").route == nullptr);
  // Methods compare exactly: HTTP methods are case-sensitive.
  CHECK(t->match("h", "/c/x", "get").outcome == Outcome::METHOD_NOT_ALLOWED);
}

TEST_CASE("the first full match in config order wins", "[routing]") {
  auto t = table(Json::array({
      route("narrow", {{"host", "a.example.com"}, {"path_prefix", "/x/"}}),
      route("wild", {{"host", "*.example.com"}}),
      route("exact", {{"host", "a.example.com"}}),
  }));
  CHECK(matched_name(*t, "a.example.com", "/x/1") == "narrow");
  CHECK(matched_name(*t, "a.example.com", "/y") == "wild");
  CHECK(matched_name(*t, "b.example.com", "/x/1") == "wild");
  REQUIRE(t->routes().size() == 3);
  CHECK(t->routes()[2].route->name == "exact");
}

TEST_CASE("{host} takes the request host, lower-cased and without port", "[routing]") {
  auto t =
      table(Json::array({route("w", {{"host", "*.blob.core.windows.net"}}, "https://{host}")}));
  MatchResult m = t->match("Contoso.Blob.Core.Windows.Net:8080", "/c/b", "GET");
  REQUIRE(m.outcome == Outcome::MATCHED);
  CHECK(m.route->upstream_templated);
  auto up = miproxy::routing::resolve_upstream(*m.route, "Contoso.Blob.Core.Windows.Net:8080");
  CHECK(up.host == "contoso.blob.core.windows.net");
  CHECK(up.port == 443);
  CHECK(up.tls);
  CHECK(up.authority() == "contoso.blob.core.windows.net");
}

TEST_CASE("{host} must be a DNS name: no IP spellings, userinfo or odd bytes", "[routing]") {
  auto t = table(Json::array({
      route("num", {{"host", "*.0.0.1"}}, "https://{host}"),
      route("w", {{"host", "*.blob.core.windows.net"}}, "https://{host}"),
      route("fixed", {{"host", "*.fixed.example"}}, "https://up.example.com"),
  }));
  auto outcome = [&](std::string_view host) {
    MatchResult m = t->match(host, "/c/b", "GET");
    if (m.outcome == Outcome::BAD_HOST) {
      CHECK_FALSE(m.problem.empty());
      return "<400 " + m.route->route->name + ">";
    }
    return m.outcome == Outcome::MATCHED ? m.route->route->name : std::string("<none>");
  };
  CHECK(outcome("0x7f.0.0.1") == "<400 num>");
  CHECK(outcome("0127.0.0.1") == "<400 num>");
  CHECK(outcome("127.0.0.1") == "<400 num>");
  CHECK(outcome("evil@x.blob.core.windows.net") == "<400 w>");
  CHECK(outcome("a_b.blob.core.windows.net") == "<400 w>");
  CHECK(outcome("-a.blob.core.windows.net") == "<400 w>");
  CHECK(outcome("a-.blob.core.windows.net") == "<400 w>");
  CHECK(outcome("a%2e.blob.core.windows.net") == "<400 w>");
  CHECK(outcome(std::string(64, 'a') + ".blob.core.windows.net") == "<400 w>");
  CHECK(outcome("acct-1.blob.core.windows.net") == "w");
  CHECK(outcome("ACCT.Blob.Core.Windows.Net:443") == "w");
  CHECK(outcome("acct.blob.core.windows.net.") == "w");
  // A fixed upstream does not take the request's host anywhere: matching alone decides.
  CHECK(outcome("a_b.fixed.example") == "fixed");
  using miproxy::routing::is_dns_host_name;
  CHECK(is_dns_host_name("a.b-c.example"));
  CHECK(is_dns_host_name("123.example.com"));
  CHECK_FALSE(is_dns_host_name("2130706433"));
  CHECK_FALSE(is_dns_host_name("a..b"));
  CHECK_FALSE(is_dns_host_name(""));
  CHECK_FALSE(is_dns_host_name("::1"));
  CHECK_FALSE(is_dns_host_name(std::string(254, 'a')));
}

TEST_CASE("a fixed upstream keeps its host and port", "[routing]") {
  auto t = table(Json::array({route("f", Json::object(), "https://Kv.Example.com:8443/base/")}));
  const auto& r = t->routes()[0];
  CHECK_FALSE(r.upstream_templated);
  auto up = miproxy::routing::resolve_upstream(r, "ignored.example:1");
  CHECK(up.host == "kv.example.com");
  CHECK(up.port == 8443);
  CHECK(up.base_path == "/base");
  CHECK(up.authority() == "kv.example.com:8443");
}

TEST_CASE("authority brackets IPv6 hosts", "[routing]") {
  miproxy::routing::Upstream up;
  up.host = "::1";
  up.port = 9443;
  CHECK(up.authority() == "[::1]:9443");
  up.port = 443;
  CHECK(up.authority() == "[::1]");
}

TEST_CASE("without strip_prefix the path is kept and the base path prepended", "[routing]") {
  auto t = table(Json::array({
      route("vault", {{"path_prefix", "/vault/"}}, "https://kv.vault.azure.net"),
      route("keep", {{"path_prefix", "/keep/"}}, "https://svc.example.com/base"),
  }));
  auto& rs = t->routes();
  auto path = [&](size_t i, std::string_view p) {
    auto up = miproxy::routing::resolve_upstream(rs[i], "h");
    return miproxy::routing::upstream_path(rs[i], up, p);
  };
  CHECK(path(0, "/vault/secrets/x?api-version=7.4") == "/vault/secrets/x?api-version=7.4");
  CHECK(path(1, "/keep/a?b=c") == "/base/keep/a?b=c");
}

TEST_CASE("strip_prefix keeps a leading slash; base path is prepended", "[routing]") {
  auto stripped = table(Json::array({
      stripping(route("vault", {{"path_prefix", "/vault/"}}, "https://kv.vault.azure.net")),
      stripping(route("bare", {{"path_prefix", "/bare"}}, "https://kv.vault.azure.net")),
      stripping(route("based", {{"path_prefix", "/api/"}}, "https://svc.example.com/v2/")),
  }));
  auto& ss = stripped->routes();
  auto spath = [&](size_t i, std::string_view p) {
    auto up = miproxy::routing::resolve_upstream(ss[i], "h");
    return miproxy::routing::upstream_path(ss[i], up, p);
  };
  CHECK(spath(0, "/vault/secrets/x?api-version=7.4") == "/secrets/x?api-version=7.4");
  CHECK(spath(0, "/vault/") == "/");
  CHECK(spath(0, "/vault/?x=1") == "/?x=1");
  CHECK(spath(1, "/bare") == "/");
  CHECK(spath(1, "/bare/") == "/");
  CHECK(spath(1, "/bare/k?q") == "/k?q");
  CHECK(spath(1, "/bare?q") == "/?q");
  CHECK(spath(2, "/api/items/1") == "/v2/items/1");
  CHECK(spath(2, "/api/") == "/v2/");
}

TEST_CASE("storage flag: storage hosts under core.windows.net or the storage scope", "[routing]") {
  auto t = table(Json::array({
      route("blob", {{"host", "a.example.com"}}, "https://acct.blob.core.windows.net"),
      route("dfs", {{"host", "b.example.com"}}, "https://acct.DFS.core.windows.net"),
      route("wild", {{"host", "*.queue.core.windows.net"}}, "https://{host}"),
      route("scope", {{"host", "c.example.com"}}, "https://storage.internal.example",
            "https://storage.azure.com/.default"),
      route("vault", {{"host", "d.example.com"}}, "https://kv.vault.azure.net"),
      route("mgmt", {{"host", "e.example.com"}}, "https://management.core.windows.net"),
      route("wild-other", {{"host", "*.vault.azure.net"}}, "https://{host}"),
  }));
  const auto& r = t->routes();
  CHECK(r[0].storage);
  CHECK(r[1].storage);
  CHECK(r[2].storage);
  CHECK(r[3].storage);
  CHECK_FALSE(r[4].storage);
  CHECK_FALSE(r[5].storage);
  CHECK_FALSE(r[6].storage);
  CHECK(miproxy::routing::is_storage_host("x.file.core.windows.net"));
  CHECK(miproxy::routing::is_storage_host("x.TABLE.core.windows.net"));
  CHECK_FALSE(miproxy::routing::is_storage_host("blob.core.windows.net"));
  CHECK_FALSE(miproxy::routing::is_storage_host("x.blob.core.windows.net.evil.com"));
}

TEST_CASE("normalize_host strips port and brackets and lower-cases", "[routing]") {
  using miproxy::routing::normalize_host;
  CHECK(normalize_host("[::1]:8080") == "::1");
  CHECK(normalize_host("[::1]") == "::1");
  CHECK(normalize_host("Host:8080") == "host");
  CHECK(normalize_host("EXAMPLE.com") == "example.com");
  CHECK(normalize_host("example.com.") == "example.com");
  CHECK(normalize_host("::1") == "::1");
  CHECK(normalize_host("") == "");
}

TEST_CASE("a hand-built route with a bad upstream never matches", "[routing]") {
  auto config = std::make_shared<miproxy::config::Config>();
  miproxy::config::Route r;
  r.name = "bad";
  r.upstream = "http://plain.example.com";
  config->routes.push_back(r);
  r.name = "good";
  r.upstream = "https://ok.example.com";
  r.methods = {"get"};
  config->routes.push_back(r);
  Table t(config);
  CHECK_FALSE(t.routes()[0].usable);
  CHECK(matched_name(t, "any", "/") == "good");
  // Methods are upper-cased at compile time for hand-built configs too.
  CHECK(t.routes()[1].methods == std::vector<std::string>{"GET"});
}

TEST_CASE("match keeps pointing into the config the table holds", "[routing]") {
  auto t = table(Json::array({route("only", Json::object())}));
  auto m = t->match("h", "/", "GET");
  REQUIRE(m.route != nullptr);
  CHECK(m.route->route == &t->config().routes[0]);
  CHECK(t->config_ptr().get() == &t->config());
}
