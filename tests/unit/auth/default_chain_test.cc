// The `default` chain: environment -> workload identity -> managed identity -> Azure CLI.

#include <catch2/catch.hpp>

#include "tests/unit/auth/fakes.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;

namespace {

constexpr char kScope[] = "https://storage.azure.com/.default";
constexpr char kEntraOk[] = R"({"token_type":"Bearer","expires_in":3599,"access_token":"e"})";
constexpr char kImdsOk[] = R"({"access_token":"m","expires_in":"86399","expires_on":"1767311999"})";
constexpr char kSkippedEnv[] =
    "environment: AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or "
    "AZURE_CLIENT_CERTIFICATE_PATH not set";

config::Identity default_identity() {
  config::Identity id;
  id.name = "auto";
  id.type = config::Identity::Type::DEFAULT;
  return id;
}

}  // namespace

TEST_CASE("default: environment client secret comes first", "[auth]") {
  Harness h;
  h.env["AZURE_TENANT_ID"] = "tenant-1";
  h.env["AZURE_CLIENT_ID"] = "client-1";
  h.env["AZURE_CLIENT_SECRET"] = "env-secret";
  h.env["AZURE_FEDERATED_TOKEN_FILE"] = "/var/run/secrets/azure/tokens/azure-identity-token";
  auto source = build_source(h, default_identity());
  CHECK(source->name() == "default");
  CHECK(source->last_source() == "default");
  h.fetcher.reply(200, kEntraOk);
  auto out = fetch_once(h, *source, kScope);
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  REQUIRE(out.ok());
  CHECK(source->last_source() == "client_secret");
  CHECK(source->supports_claims());
  REQUIRE(h.fetcher.requests.size() == 1);
  CHECK(h.fetcher.requests[0].url ==
        "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token");
  auto form = to_map(parse_form(h.fetcher.requests[0].body).value());
  CHECK((form["client_secret"] == "env-secret"));
  CHECK(form["client_id"] == "client-1");
}

TEST_CASE("default: environment certificate path when there is no secret", "[auth]") {
  Harness h;
  h.env["AZURE_TENANT_ID"] = "tenant-1";
  h.env["AZURE_CLIENT_ID"] = "client-1";
  h.env["AZURE_CLIENT_CERTIFICATE_PATH"] = "/nonexistent/sp.pem";
  auto source = build_source(h, default_identity());
  auto out = fetch_once(h, *source, kScope);
  REQUIRE_FALSE(out.ok());
  // It applies, so its failure ends the chain: no managed identity request was made.
  CHECK(out.error().message.rfind("client_certificate: client certificate: cannot open "
                                  "/nonexistent/sp.pem",
                                  0) == 0);
  CHECK_FALSE(out.error().unavailable);
  CHECK(h.fetcher.requests.empty());
}

TEST_CASE("default: workload identity when its variables are present", "[auth]") {
  Harness h;
  TempDir dir;
  h.env["AZURE_TENANT_ID"] = "tenant-1";
  h.env["AZURE_CLIENT_ID"] = "client-1";
  h.env["AZURE_FEDERATED_TOKEN_FILE"] = dir.write("token", "federated");
  auto source = build_source(h, default_identity());
  h.fetcher.reply(200, kEntraOk);
  REQUIRE(fetch_once(h, *source, kScope).ok());
  CHECK(source->last_source() == "workload_identity");
  auto form = to_map(parse_form(h.fetcher.requests.at(0).body).value());
  CHECK((form["client_assertion"] == "federated"));
}

TEST_CASE("default: managed identity (IMDS) otherwise, AZURE_CLIENT_ID as selector", "[auth]") {
  Harness h;
  auto source = build_source(h, default_identity());
  h.fetcher.reply(200, kImdsOk);
  REQUIRE(fetch_once(h, *source, kScope).ok());
  CHECK(source->last_source() == "imds");
  CHECK_FALSE(source->supports_claims());
  UrlParts url = split_url(h.fetcher.requests.at(0).url);
  CHECK(url.base == "http://169.254.169.254/metadata/identity/oauth2/token");
  CHECK(to_map(url.query).count("client_id") == 0);

  Harness with_id;
  with_id.env["AZURE_CLIENT_ID"] = "uami-client";
  auto selected = build_source(with_id, default_identity());
  with_id.fetcher.reply(200, kImdsOk);
  REQUIRE(fetch_once(with_id, *selected, kScope).ok());
  CHECK(to_map(split_url(with_id.fetcher.requests.at(0).url).query)["client_id"] == "uami-client");
}

TEST_CASE("default: an applicable source that fails ends the chain and says what was skipped",
          "[auth]") {
  Harness h;
  auto source = build_source(h, default_identity());
  h.fetcher.reply(400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  auto out = fetch_once(h, *source, kScope);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().message ==
        std::string("imds: IMDS answered 400: invalid_request: Identity not found "
                    "(system-assigned) (skipped: ") +
            kSkippedEnv +
            "; workload_identity: workload identity: AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, "
            "AZURE_TENANT_ID not set)");
  CHECK(out.error().http_status == 400);
  CHECK_FALSE(out.error().unavailable);
  CHECK(h.processes.calls.empty());
  CHECK(source->last_source() == "default");

  // Retry advice passes through.
  h.fetcher.reply(503, "");
  CHECK(fetch_once(h, *source, kScope).error().retryable);
}

TEST_CASE("default: a member whose configuration is broken fails the chain", "[auth]") {
  Harness h;
  h.env["MSI_ENDPOINT"] = "http://localhost:50342/oauth2/token";  // Cloud Shell
  config::Identity id = default_identity();
  id.client_id = "uami-client";
  auto source = build_source(h, id);
  auto out = fetch_once(h, *source, kScope);
  CHECK(out.calls_inside_fetch == 0);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().message.rfind(
            "managed_identity: Cloud Shell cannot select a user-assigned identity (client_id "
            "given) (skipped: ",
            0) == 0);
  CHECK(h.fetcher.requests.empty());
}

TEST_CASE("a source destroyed while its request is out still answers exactly once", "[auth]") {
  std::vector<config::Identity> identities;
  identities.push_back(default_identity());
  config::Identity mi;
  mi.type = config::Identity::Type::MANAGED_IDENTITY;
  identities.push_back(mi);
  config::Identity wi;
  wi.type = config::Identity::Type::WORKLOAD_IDENTITY;
  wi.tenant_id = "tenant-1";
  wi.client_id = "client-1";
  identities.push_back(wi);
  for (const auto& id : identities) {
    Harness h;
    TempDir dir;
    h.env["AZURE_FEDERATED_TOKEN_FILE"] = dir.write("token", "federated");
    auto source = build_source(h, id);
    h.fetcher.reply(200, id.type == config::Identity::Type::WORKLOAD_IDENTITY ? kEntraOk : kImdsOk);
    int calls = 0;
    bool ok = false;
    source->fetch(kScope, "", [&](SourceResult r) {
      ++calls;
      ok = r.has_value();
    });
    source.reset();
    h.run();
    CHECK(calls == 1);
    CHECK(ok);
  }
}
