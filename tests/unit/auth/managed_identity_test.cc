// Managed-identity sources against fakes written from token-sources.md §0-§3, §5, §6, §15.

#include <openssl/evp.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "auth/jwt.h"
#include "tests/unit/auth/fakes.h"
#include "tests/unit/auth/test_certs.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;
using std::chrono::seconds;

namespace {

constexpr char kVault[] = "https://vault.azure.net/.default";
constexpr char kClientId[] = "11111111-2222-3333-4444-555555555555";
constexpr char kImdsUrl[] = "http://169.254.169.254/metadata/identity/oauth2/token";

// IMDS 200: every value a JSON string (§1).
const std::string kImdsBody =
    R"({"access_token":"imds-token-value","client_id":"00000000-1111-2222-3333-444444444444",)"
    R"("expires_in":"86399","expires_on":"1767311999","ext_expires_in":"86399",)"
    R"("not_before":"1767225600","resource":"https://vault.azure.net","token_type":"Bearer"})";

config::Identity managed(std::string client_id = "", std::string object_id = "",
                         std::string resource_id = "") {
  config::Identity id;
  id.name = "mi";
  id.type = config::Identity::Type::MANAGED_IDENTITY;
  id.client_id = std::move(client_id);
  id.object_id = std::move(object_id);
  id.resource_id = std::move(resource_id);
  return id;
}

int64_t posix(Clock::time_point t) {
  return std::chrono::duration_cast<seconds>(t.time_since_epoch()).count();
}

void check_no_forbidden_headers(const FetchRequest& req) {
  CHECK(header_values(req, "X-Forwarded-For").empty());
  CHECK(header_values(req, "Authorization").empty());
}

}  // namespace

TEST_CASE("IMDS request: GET, api-version, encoded resource, Metadata: true", "[auth]") {
  Harness h;
  auto source = build_source(h, managed());
  CHECK(source->name() == "imds");
  CHECK_FALSE(source->supports_claims());
  h.fetcher.reply(200, kImdsBody);
  auto out = fetch_once(h, *source, kVault);

  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  REQUIRE(h.fetcher.requests.size() == 1);
  const FetchRequest& req = h.fetcher.requests[0];
  CHECK(req.method == "GET");
  CHECK(req.body.empty());
  UrlParts url = split_url(req.url);
  CHECK(url.base == kImdsUrl);
  CHECK(req.url.find("resource=https%3A%2F%2Fvault.azure.net") != std::string::npos);
  CHECK_FALSE(has_duplicate_keys(url.query));
  CHECK(to_map(url.query) ==
        std::map<std::string, std::string>{{"api-version", "2018-02-01"},
                                           {"resource", "https://vault.azure.net"}});
  CHECK(header_values(req, "Metadata") == std::vector<std::string>{"true"});
  check_no_forbidden_headers(req);
  CHECK(req.pinned_sha1.empty());

  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "imds-token-value"));
  // expires_in (string) counted from the send time.
  CHECK(out.token().expires_at == h.now + seconds{86399});
  CHECK_FALSE(out.token().refresh_at.has_value());
}

TEST_CASE("IMDS selectors use client_id, object_id and msi_res_id", "[auth]") {
  struct Case {
    config::Identity identity;
    std::string key;
    std::string value;
  };
  std::string rid =
      "/subscriptions/s/resourceGroups/g/providers/"
      "Microsoft.ManagedIdentity/userAssignedIdentities/fleet";
  for (const auto& c : {Case{managed(kClientId), "client_id", kClientId},
                        Case{managed("", "oid-1"), "object_id", "oid-1"},
                        Case{managed("", "", rid), "msi_res_id", rid}}) {
    Harness h;
    auto source = build_source(h, c.identity);
    h.fetcher.reply(200, kImdsBody);
    auto out = fetch_once(h, *source, kVault);
    REQUIRE(out.ok());
    auto query = to_map(split_url(h.fetcher.requests.at(0).url).query);
    CHECK(query.size() == 3);
    CHECK(query[c.key] == c.value);
    CHECK(query.count("mi_res_id") == 0);
  }
}

TEST_CASE("scope to resource strips exactly one /.default", "[auth]") {
  Harness h;
  auto source = build_source(h, managed());
  h.fetcher.reply(200, kImdsBody);
  h.fetcher.reply(200, kImdsBody);
  h.fetcher.reply(200, kImdsBody);
  fetch_once(h, *source, "https://management.core.windows.net//.default");
  fetch_once(h, *source, "https://storage.azure.com/.default");
  fetch_once(h, *source, "https://example.com/.default/.default");
  CHECK(to_map(split_url(h.fetcher.requests[0].url).query)["resource"] ==
        "https://management.core.windows.net/");
  CHECK(to_map(split_url(h.fetcher.requests[1].url).query)["resource"] ==
        "https://storage.azure.com");
  CHECK(to_map(split_url(h.fetcher.requests[2].url).query)["resource"] ==
        "https://example.com/.default");
}

TEST_CASE("IMDS address overrides: pod identity host and a full endpoint", "[auth]") {
  SECTION("AZURE_POD_IDENTITY_AUTHORITY_HOST replaces the base URL") {
    Harness h;
    h.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:40001/";
    auto source = build_source(h, managed());
    fetch_once(h, *source, kVault);
    CHECK(split_url(h.fetcher.requests.at(0).url).base ==
          "http://127.0.0.1:40001/metadata/identity/oauth2/token");
  }
  SECTION("endpoint is the token URL in full") {
    Harness h;
    h.env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:40001";
    config::Identity id = managed();
    id.endpoint = "http://127.0.0.1:40000/custom/token";
    auto source = build_source(h, id);
    CHECK(source->name() == "imds");
    fetch_once(h, *source, kVault);
    CHECK(split_url(h.fetcher.requests.at(0).url).base == "http://127.0.0.1:40000/custom/token");
  }
}

TEST_CASE("IMDS errors become operator words with retry advice", "[auth]") {
  Harness h;
  auto source = build_source(h, managed(kClientId));

  h.fetcher.reply(400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  auto out = fetch_once(h, *source, kVault);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().message ==
        "IMDS answered 400: invalid_request: Identity not found (client_id "
        "11111111-2222-3333-4444-555555555555)");
  CHECK(out.error().http_status == 400);
  CHECK_FALSE(out.error().retryable);
  CHECK_FALSE(out.error().unavailable);

  for (int status : {404, 408, 429, 500, 502, 503, 504}) {
    h.fetcher.reply(status, "");
    out = fetch_once(h, *source, kVault);
    INFO(status);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().retryable);
    CHECK(out.error().retry_for == seconds{0});
  }
  for (int status : {401, 403, 405}) {
    h.fetcher.reply(status, "");
    out = fetch_once(h, *source, kVault);
    INFO(status);
    CHECK_FALSE(out.error().retryable);
  }

  h.fetcher.reply(410, "");
  out = fetch_once(h, *source, kVault);
  CHECK(out.error().retryable);
  CHECK(out.error().retry_for == seconds{70});
  CHECK(out.error().message.rfind("IMDS answered 410", 0) == 0);

  h.fetcher.reply(429, R"({"error":"throttled"})", {{"Retry-After", "7"}});
  out = fetch_once(h, *source, kVault);
  CHECK(out.error().retry_after == seconds{7});

  h.fetcher.reply(503, "", {{"retry-after", "Thu, 01 Jan 2026 00:01:00 GMT"}});
  out = fetch_once(h, *source, kVault);
  CHECK(out.error().retry_after == seconds{60});

  h.fetcher.reply(
      500,
      R"({"error":"unknown","error_description":"Failed to retrieve token from the Active directory"})");
  out = fetch_once(h, *source, kVault);
  CHECK(out.error().message ==
        "IMDS answered 500: unknown: Failed to retrieve token from the Active directory "
        "(client_id 11111111-2222-3333-4444-555555555555)");
}

TEST_CASE("network failures: retryable except TLS", "[auth]") {
  Harness h;
  auto source = build_source(h, managed());
  h.fetcher.fail(FetchError::Kind::CONNECT, "connect to 169.254.169.254:80: timed out");
  auto out = fetch_once(h, *source, kVault);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().http_status == 0);
  CHECK(out.error().retryable);
  CHECK(out.error().message ==
        "IMDS request failed: connect to 169.254.169.254:80: timed out (system-assigned)");
  h.fetcher.fail(FetchError::Kind::TIMEOUT, "timed out");
  CHECK(fetch_once(h, *source, kVault).error().retryable);
  h.fetcher.fail(FetchError::Kind::TLS, "certificate verify failed");
  CHECK_FALSE(fetch_once(h, *source, kVault).error().retryable);
}

TEST_CASE("each request takes limits.token_request_timeout as it is now; a timeout is marked",
          "[auth]") {
  Harness h;
  std::chrono::milliseconds timeout{2500};
  SourceDeps deps = h.deps();
  deps.request_timeout = [&timeout] { return timeout; };
  auto made = make_source(managed(), deps);
  REQUIRE(made);
  auto& source = **made;
  h.fetcher.fail(FetchError::Kind::TIMEOUT, "request to IMDS timed out after 2500 ms");
  auto out = fetch_once(h, source, kVault);
  REQUIRE(h.fetcher.requests.size() == 1);
  CHECK(h.fetcher.requests[0].timeout == std::chrono::milliseconds(2500));
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().timed_out);
  CHECK(out.error().retryable);
  timeout = std::chrono::milliseconds(700);  // a reload
  h.fetcher.fail(FetchError::Kind::CONNECT, "connection refused");
  CHECK_FALSE(fetch_once(h, source, kVault).error().timed_out);
  REQUIRE(h.fetcher.requests.size() == 2);
  CHECK(h.fetcher.requests[1].timeout == std::chrono::milliseconds(700));
}

TEST_CASE("unusable 200 answers are errors, never guessed", "[auth]") {
  Harness h;
  auto source = build_source(h, managed());
  h.fetcher.reply(200, R"({"access_token":"t","token_type":"Bearer"})");
  CHECK(fetch_once(h, *source, kVault).error().message ==
        "IMDS answered 200 without a usable expiry (response has neither expires_in nor "
        "expires_on)");
  h.fetcher.reply(200, R"({"access_token":"t","expires_in":"-5"})");
  CHECK(fetch_once(h, *source, kVault).error().message ==
        "IMDS answered 200 without a usable expiry (response has an unparseable expires_in)");
  h.fetcher.reply(200, "<html>gateway</html>");
  CHECK(fetch_once(h, *source, kVault).error().message ==
        "IMDS answered 200 with a body that is not a JSON object");
  h.fetcher.reply(200, R"({"expires_in":"3600"})");
  CHECK(fetch_once(h, *source, kVault).error().message == "IMDS answered 200 without access_token");
  // Already expired (clock skew): refused.
  h.fetcher.reply(200, R"({"access_token":"t","expires_on":"1767225000"})");
  CHECK(fetch_once(h, *source, kVault).error().message ==
        "IMDS returned a token that has already expired (check the clock)");
}

namespace {

void app_service_env(Harness& h) {
  h.env["IDENTITY_ENDPOINT"] = "http://127.0.0.1:41234/msi/token";
  h.env["IDENTITY_HEADER"] = "853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a";
}

const std::string kAppServiceBody =
    R"({"access_token":"app-service-token","expires_on":"1767229200",)"
    R"("resource":"https://vault.azure.net","token_type":"Bearer","client_id":"5E29463D"})";

}  // namespace

TEST_CASE("App Service request: X-IDENTITY-HEADER and api-version 2019-08-01", "[auth]") {
  Harness h;
  app_service_env(h);
  auto source = build_source(h, managed());
  CHECK(source->name() == "app_service");
  h.fetcher.reply(200, kAppServiceBody);
  auto out = fetch_once(h, *source, kVault);
  CHECK(out.calls_inside_fetch == 0);
  REQUIRE(h.fetcher.requests.size() == 1);
  const FetchRequest& req = h.fetcher.requests[0];
  CHECK(req.method == "GET");
  UrlParts url = split_url(req.url);
  CHECK(url.base == "http://127.0.0.1:41234/msi/token");
  CHECK_FALSE(has_duplicate_keys(url.query));
  CHECK(to_map(url.query) ==
        std::map<std::string, std::string>{{"api-version", "2019-08-01"},
                                           {"resource", "https://vault.azure.net"}});
  CHECK(header_values(req, "X-IDENTITY-HEADER") ==
        std::vector<std::string>{"853b9a84-5bfa-4b22-a3f3-0b9a43d9ad8a"});
  check_no_forbidden_headers(req);
  // String expires_on, no expires_in.
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "app-service-token"));
  CHECK(posix(out.token().expires_at) == 1767229200);
}

TEST_CASE("App Service selectors: client_id, principal_id, mi_res_id (never msi_res_id)",
          "[auth]") {
  struct Case {
    config::Identity identity;
    std::string key;
  };
  for (const auto& c :
       {Case{managed(kClientId), "client_id"}, Case{managed("", "oid-1"), "principal_id"},
        Case{managed("", "", "/subscriptions/s/x"), "mi_res_id"}}) {
    Harness h;
    app_service_env(h);
    auto source = build_source(h, c.identity);
    fetch_once(h, *source, kVault);
    auto query = to_map(split_url(h.fetcher.requests.at(0).url).query);
    CHECK(query.size() == 3);
    CHECK(query.count(c.key) == 1);
    CHECK(query.count("msi_res_id") == 0);
    CHECK(query.count("object_id") == 0);
  }
}

TEST_CASE("App Service errors: statusCode/message/correlationId and its retry set", "[auth]") {
  Harness h;
  app_service_env(h);
  auto source = build_source(h, managed());
  h.fetcher.reply(
      400,
      R"({"statusCode":400,"message":"Unable to load the proper Managed Identity.","correlationId":"7f1c2a3b-0000-4000-8000-000000000001"})");
  auto out = fetch_once(h, *source, kVault);
  CHECK(out.error().message ==
        "App Service answered 400: Unable to load the proper Managed Identity. (correlation_id "
        "7f1c2a3b-0000-4000-8000-000000000001) (system-assigned)");
  CHECK_FALSE(out.error().retryable);
  for (int status : {404, 408, 429, 500, 503, 504}) {
    h.fetcher.reply(status, "");
    INFO(status);
    CHECK(fetch_once(h, *source, kVault).error().retryable);
  }
  for (int status : {401, 403, 410, 502}) {
    h.fetcher.reply(status, "");
    INFO(status);
    CHECK_FALSE(fetch_once(h, *source, kVault).error().retryable);
  }
}

TEST_CASE("App Service without its header variable fails, still asynchronously", "[auth]") {
  Harness h;
  h.env["IDENTITY_ENDPOINT"] = "http://127.0.0.1:41234/msi/token";
  config::Identity id = managed();
  id.source = "app_service";
  auto source = build_source(h, id);
  auto out = fetch_once(h, *source, kVault);
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  CHECK(out.error().message == "App Service: IDENTITY_HEADER is not set");
  CHECK(h.fetcher.requests.empty());
}

TEST_CASE("legacy MSI_ENDPOINT+MSI_SECRET: secret header, 2017-09-01, clientid", "[auth]") {
  Harness h;
  h.env["MSI_ENDPOINT"] = "http://127.0.0.1:41235/MSI/token/";
  h.env["MSI_SECRET"] = "legacy-secret";
  auto source = build_source(h, managed(kClientId));
  CHECK(source->name() == "app_service_2017");
  h.fetcher.reply(200, R"({"access_token":"t","expires_on":"11/05/2021 15:18:31 +00:00"})");
  h.now = Clock::time_point{seconds{1636120000}};
  auto out = fetch_once(h, *source, kVault);
  const FetchRequest& req = h.fetcher.requests.at(0);
  UrlParts url = split_url(req.url);
  CHECK(url.base == "http://127.0.0.1:41235/MSI/token/");
  CHECK(to_map(url.query) ==
        std::map<std::string, std::string>{{"api-version", "2017-09-01"},
                                           {"resource", "https://vault.azure.net"},
                                           {"clientid", kClientId}});
  CHECK(header_values(req, "secret") == std::vector<std::string>{"legacy-secret"});
  check_no_forbidden_headers(req);
  REQUIRE(out.ok());
  CHECK(posix(out.token().expires_at) == 1636125511);
}

TEST_CASE("legacy 2017 expires_on in each date form and as POSIX string", "[auth]") {
  struct Case {
    const char* expires_on;
    int64_t expected;
  };
  for (const auto& c :
       {Case{"11/05/2021 15:18:31 +00:00", 1636125511},
        Case{"1/10/2020 8:01:28 AM +00:00", 1578643288},
        Case{"1/10/2020 8:01:28 PM +00:00", 1578686488}, Case{"1578643288", 1578643288}}) {
    Harness h;
    h.now = Clock::time_point{seconds{1500000000}};
    h.env["MSI_ENDPOINT"] = "http://127.0.0.1:41235/MSI/token/";
    h.env["MSI_SECRET"] = "legacy-secret";
    auto source = build_source(h, managed());
    h.fetcher.reply(200,
                    std::string(R"({"access_token":"t","expires_on":")") + c.expires_on + "\"}");
    auto out = fetch_once(h, *source, kVault);
    INFO(c.expires_on);
    REQUIRE(out.ok());
    CHECK(posix(out.token().expires_at) == c.expected);
  }
}

TEST_CASE("legacy 2017: Azure ML default identity, and no object or resource selector", "[auth]") {
  Harness h;
  h.env["MSI_ENDPOINT"] = "http://127.0.0.1:41235/MSI/token/";
  h.env["MSI_SECRET"] = "legacy-secret";
  h.env["DEFAULT_IDENTITY_CLIENT_ID"] = "aml-default-id";
  auto source = build_source(h, managed());
  fetch_once(h, *source, kVault);
  CHECK(to_map(split_url(h.fetcher.requests.at(0).url).query)["clientid"] == "aml-default-id");

  auto bad = make_source(managed("", "oid-1"), h.deps());
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error() ==
        "App Service 2017 (MSI_ENDPOINT) can select a user-assigned identity only by client_id "
        "(object_id given)");
}

namespace {

void service_fabric_env(Harness& h) {
  h.env["IDENTITY_ENDPOINT"] = "https://localhost:2377/metadata/identity/oauth2/token";
  h.env["IDENTITY_HEADER"] = "sf-secret";
  h.env["IDENTITY_SERVER_THUMBPRINT"] =
      "ab:cd:ef:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:ab:cd:ef:01";
}

}  // namespace

TEST_CASE("Service Fabric request: Secret header, pinned thumbprint, api-version", "[auth]") {
  Harness h;
  service_fabric_env(h);
  auto source = build_source(h, managed());
  CHECK(source->name() == "service_fabric");
  CHECK(source->supports_claims());
  h.fetcher.reply(
      200,
      R"({"token_type":"Bearer","access_token":"sf-token","expires_on":1767229200,"resource":"https://vault.azure.net/"})");
  auto out = fetch_once(h, *source, "https://vault.azure.net//.default");
  const FetchRequest& req = h.fetcher.requests.at(0);
  CHECK(req.method == "GET");
  UrlParts url = split_url(req.url);
  CHECK(url.base == "https://localhost:2377/metadata/identity/oauth2/token");
  CHECK(to_map(url.query) ==
        std::map<std::string, std::string>{{"api-version", "2019-07-01-preview"},
                                           {"resource", "https://vault.azure.net/"}});
  CHECK(header_values(req, "Secret") == std::vector<std::string>{"sf-secret"});
  CHECK(header_values(req, "Accept") == std::vector<std::string>{"application/json"});
  CHECK(header_values(req, "X-IDENTITY-HEADER").empty());
  check_no_forbidden_headers(req);
  CHECK(req.pinned_sha1 == "abcdef0123456789ABCDEF0123456789abcdef01");
  REQUIRE(out.ok());
  CHECK(posix(out.token().expires_at) == 1767229200);

  // String expires_on (observed) works too.
  h.fetcher.reply(200, R"({"access_token":"sf-token","expires_on":"1767229300"})");
  out = fetch_once(h, *source, kVault);
  REQUIRE(out.ok());
  CHECK(posix(out.token().expires_at) == 1767229300);
}

TEST_CASE("Service Fabric errors: nested error object, 429/5xx retryable, 404 never", "[auth]") {
  Harness h;
  service_fabric_env(h);
  auto source = build_source(h, managed());
  h.fetcher.reply(
      404,
      R"({"error":{"correlationId":"c-1","code":"ManagedIdentityNotFound","message":"No identity."}})");
  auto out = fetch_once(h, *source, kVault);
  CHECK(out.error().message ==
        "Service Fabric answered 404: ManagedIdentityNotFound: No identity. (correlation_id c-1) "
        "(system-assigned)");
  CHECK_FALSE(out.error().retryable);
  for (int status : {429, 500, 502, 503}) {
    h.fetcher.reply(status, R"({"error":{"code":"InternalServerError","message":"x"}})");
    INFO(status);
    CHECK(fetch_once(h, *source, kVault).error().retryable);
  }
  h.fetcher.reply(408, "");
  CHECK_FALSE(fetch_once(h, *source, kVault).error().retryable);
}

TEST_CASE("Service Fabric claims: xms_cc and the SHA-256 of the token to refresh", "[auth]") {
  Harness h;
  service_fabric_env(h);
  auto source = build_source(h, managed());
  h.fetcher.reply(200, R"({"access_token":"old-token","expires_on":1767229200})");
  h.fetcher.reply(200, R"({"access_token":"new-token","expires_on":1767229300})");
  REQUIRE(fetch_once(h, *source, kVault).ok());
  REQUIRE(fetch_once(h, *source, kVault, R"({"access_token":{"nbf":{"essential":true}}})").ok());
  auto first = to_map(split_url(h.fetcher.requests.at(0).url).query);
  auto second = to_map(split_url(h.fetcher.requests.at(1).url).query);
  CHECK(first.count("xms_cc") == 0);
  CHECK(second["xms_cc"] == "cp1");
  CHECK(second["token_sha256_to_refresh"] ==
        hex_encode(sha_digest(EVP_sha256(), "old-token"), false));
}

TEST_CASE("Service Fabric and Cloud Shell refuse user-assigned selectors", "[auth]") {
  Harness h;
  service_fabric_env(h);
  auto sf = make_source(managed(kClientId), h.deps());
  REQUIRE_FALSE(sf.has_value());
  CHECK(sf.error() ==
        "Service Fabric cannot select a user-assigned identity; the application's configuration "
        "fixes it (client_id given)");

  Harness cs;
  cs.env["MSI_ENDPOINT"] = "http://localhost:50342/oauth2/token";
  auto shell = make_source(managed("", "", "/subscriptions/x"), cs.deps());
  REQUIRE_FALSE(shell.has_value());
  CHECK(shell.error() == "Cloud Shell cannot select a user-assigned identity (resource_id given)");
}

TEST_CASE("Cloud Shell request: POST form body, Metadata: true, no query", "[auth]") {
  Harness h;
  h.env["MSI_ENDPOINT"] = "http://localhost:50342/oauth2/token";
  auto source = build_source(h, managed());
  CHECK(source->name() == "cloud_shell");
  h.fetcher.reply(
      200,
      R"({"access_token":"cs","expires_in":"3599","expires_on":"1767229199","not_before":"1767225600","resource":"https://management.azure.com/","token_type":"Bearer"})");
  auto out = fetch_once(h, *source, "https://management.azure.com//.default");
  const FetchRequest& req = h.fetcher.requests.at(0);
  CHECK(req.method == "POST");
  CHECK(req.url == "http://localhost:50342/oauth2/token");
  CHECK(req.body == "resource=https%3A%2F%2Fmanagement.azure.com%2F");
  CHECK(header_values(req, "Metadata") == std::vector<std::string>{"true"});
  CHECK(header_values(req, "Content-Type") ==
        std::vector<std::string>{"application/x-www-form-urlencoded"});
  check_no_forbidden_headers(req);
  REQUIRE(out.ok());
  CHECK(out.token().expires_at == h.now + seconds{3599});

  h.fetcher.reply(400, R"({"error":{"code":"BadRequest","message":"Unknown resource"}})");
  CHECK(fetch_once(h, *source, kVault).error().message ==
        "Cloud Shell answered 400: BadRequest: Unknown resource (system-assigned)");
}

TEST_CASE("managed identity detection follows section 0.3", "[auth]") {
  struct Case {
    std::map<std::string, std::string> env;
    std::string expected;
  };
  std::vector<Case> cases = {
      {{{"IDENTITY_ENDPOINT", "https://x"},
        {"IDENTITY_HEADER", "h"},
        {"IDENTITY_SERVER_THUMBPRINT", "t"},
        {"MSI_ENDPOINT", "m"},
        {"MSI_SECRET", "s"}},
       "service_fabric"},
      {{{"IDENTITY_ENDPOINT", "http://x"},
        {"IDENTITY_HEADER", "h"},
        {"MSI_ENDPOINT", "m"},
        {"MSI_SECRET", "s"},
        {"IMDS_ENDPOINT", "i"}},
       "app_service"},
      {{{"MSI_ENDPOINT", "m"}, {"MSI_SECRET", "s"}, {"IDENTITY_ENDPOINT", "e"}},
       "app_service_2017"},
      {{{"MSI_ENDPOINT", "m"}, {"IDENTITY_ENDPOINT", "e"}, {"IMDS_ENDPOINT", "i"}}, "cloud_shell"},
      {{{"IDENTITY_ENDPOINT", "http://localhost:40342/metadata/identity/oauth2/token"},
        {"IMDS_ENDPOINT", "http://localhost:40342"}},
       "arc"},
      {{{"IDENTITY_ENDPOINT", "e"}}, "imds"},
      {{{"IDENTITY_HEADER", "h"}}, "imds"},
      {{}, "imds"},
      // Empty means unset.
      {{{"IDENTITY_ENDPOINT", "e"}, {"IDENTITY_HEADER", ""}, {"MSI_ENDPOINT", ""}}, "imds"},
  };
  for (const auto& c : cases) {
    Harness h;
    h.env = c.env;
    auto source = build_source(h, managed());
    CHECK(source->name() == c.expected);
  }
}

TEST_CASE("Arc is detected by its agent binary, and source forces a kind", "[auth]") {
  TempDir dir;
  Harness h;
  SourceDeps deps = h.deps();
  deps.arc_agent_binary = dir.write("himds", "#!/bin/sh\n", 0755);
  auto arc = make_source(managed(), deps);
  REQUIRE(arc.has_value());
  CHECK((*arc)->name() == "arc");

  h.env["MSI_ENDPOINT"] = "http://localhost:50342/oauth2/token";
  for (auto [forced, expected] :
       std::vector<std::pair<std::string, std::string>>{{"imds", "imds"},
                                                        {"app_service", "app_service"},
                                                        {"arc", "arc"},
                                                        {"service_fabric", "service_fabric"},
                                                        {"cloud_shell", "cloud_shell"}}) {
    config::Identity id = managed();
    id.source = forced;
    CHECK(build_source(h, id)->name() == expected);
  }
  config::Identity bad = managed();
  bad.source = "vm";
  CHECK(make_source(bad, h.deps()).error() ==
        "unknown managed identity source \"vm\" (imds, app_service, arc, service_fabric, "
        "cloud_shell)");
  CHECK(make_source(managed(kClientId, "oid"), h.deps()).error() ==
        "at most one of client_id, object_id and resource_id may be given");
}
