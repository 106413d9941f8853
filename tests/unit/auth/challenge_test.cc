#include <catch2/catch.hpp>

#include "auth/challenge.h"

using namespace miproxy::auth;

TEST_CASE("Key Vault challenge: quoted, comma-separated; tenant and scope derived", "[challenge]") {
  auto c = parse_bearer_challenge(
      "Bearer authorization=\"https://login.microsoftonline.com/72f988bf-0000\", "
      "resource=\"https://vault.azure.net\"");
  REQUIRE(c);
  CHECK(c->tenant == "72f988bf-0000");
  CHECK(c->resource == "https://vault.azure.net");
  CHECK(scope_from_challenge(*c, "contoso-kv.vault.azure.net") ==
        "https://vault.azure.net/.default");
}

TEST_CASE("Storage challenge: unquoted, space-separated authorization_uri/resource_id",
          "[challenge]") {
  auto c = parse_bearer_challenge(
      "Bearer authorization_uri=https://login.microsoftonline.com/tid-1/oauth2/authorize "
      "resource_id=https://storage.azure.com");
  REQUIRE(c);
  CHECK(c->tenant == "tid-1");
  CHECK(c->resource == "https://storage.azure.com");
  CHECK(scope_from_challenge(*c, "acct.blob.core.windows.net") ==
        "https://storage.azure.com/.default");
}

TEST_CASE("a challenge naming a foreign resource is refused", "[challenge]") {
  auto c = parse_bearer_challenge(
      "Bearer authorization=\"https://login.microsoftonline.com/t\", "
      "resource=\"https://evil.example\"");
  REQUIRE(c);
  CHECK(scope_from_challenge(*c, "contoso-kv.vault.azure.net").empty());
  // Suffix tricks: "notvault.azure.net" is not under "vault.azure.net".
  auto d = parse_bearer_challenge("Bearer authorization=\"x\", resource=\"https://vault.azure.net\"");
  REQUIRE(d);
  CHECK(scope_from_challenge(*d, "kv.notvault.azure.net").empty());
  CHECK(scope_from_challenge(*d, "vault.azure.net.evil.example").empty());
}

TEST_CASE("scope parameter wins over resource", "[challenge]") {
  auto c = parse_bearer_challenge(
      "Bearer authorization=\"https://login.microsoftonline.com/t\", "
      "scope=\"https://vault.azure.net/.default\", resource=\"https://other\"");
  REQUIRE(c);
  CHECK(scope_from_challenge(*c, "a.vault.azure.net") == "https://vault.azure.net/.default");
}

TEST_CASE("CAE claims challenge carries error and base64 claims", "[challenge]") {
  // claims = {"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}
  auto c = parse_bearer_challenge(
      "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/"
      "authorize\", error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7"
      "ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzAwMDAwMDAwIn19fQ==\"");
  REQUIRE(c);
  CHECK(c->error == "insufficient_claims");
  CHECK(c->claims == R"({"access_token":{"nbf":{"essential":true,"value":"1700000000"}}})");
}

TEST_CASE("no Bearer challenge yields nullopt", "[challenge]") {
  CHECK_FALSE(parse_bearer_challenge("Basic realm=/var/opt/azcmagent/tokens/x.key"));
  CHECK_FALSE(parse_bearer_challenge(""));
}

TEST_CASE("resource_of_scope strips exactly one /.default", "[challenge]") {
  CHECK(resource_of_scope("https://vault.azure.net/.default") == "https://vault.azure.net");
  CHECK(resource_of_scope("https://management.core.windows.net//.default") ==
        "https://management.core.windows.net/");
  CHECK(resource_of_scope("api://x") == "api://x");
}

TEST_CASE("a challenge's scope is validated like a configured one", "[challenge]") {
  auto scope_of = [](const std::string& header, std::string_view host) {
    auto c = parse_bearer_challenge(header);
    REQUIRE(c);
    return scope_from_challenge(*c, host);
  };
  // Two scopes in one challenge: which one would the token be for? Refused.
  CHECK(scope_of("Bearer scope=\"https://localhost/.default https://graph.microsoft.com/.default\"",
                 "localhost")
            .empty());
  CHECK(scope_of("Bearer scope=\"https://localhost/.default,https://graph.microsoft.com/.default\"",
                 "localhost")
            .empty());
  // Userinfo: the host is what follows '@', the scope names another service.
  CHECK(scope_of("Bearer resource=\"https://graph.microsoft.com@localhost\"", "localhost").empty());
  CHECK(scope_of("Bearer scope=\"https://graph.microsoft.com@localhost/.default\"", "localhost")
            .empty());
  CHECK(scope_of("Bearer resource=\"https://graph.microsoft.com\\\\@localhost\"", "localhost")
            .empty());
  // Not https, no host, query, fragment, control bytes, odd host bytes.
  CHECK(scope_of("Bearer resource=\"http://vault.azure.net\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"vault.azure.net\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://vault.azure.net?x=1\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://vault.azure.net#x\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://vault.azure.net\tx\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://vault%2eazure.net\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://vault.azure.net:x\"", "kv.vault.azure.net").empty());
  // A bare top-level domain is no service domain.
  CHECK(scope_of("Bearer resource=\"https://net\"", "kv.vault.azure.net").empty());
  CHECK(scope_of("Bearer resource=\"https://.net\"", "kv.vault.azure.net").empty());
  // What services really send still passes.
  CHECK(scope_of("Bearer resource=\"https://Vault.Azure.Net/\"", "kv.vault.azure.net") ==
        "https://Vault.Azure.Net/.default");
  CHECK(scope_of("Bearer resource=\"https://localhost:8443\"", "localhost") ==
        "https://localhost:8443/.default");
  CHECK(scope_of("Bearer scope=\"https://vault.azure.net/.default\"", "kv.vault.azure.net") ==
        "https://vault.azure.net/.default");
}
