// Shared normalisation: error bodies, redaction, scope conversion, retry rules.

#include <catch2/catch.hpp>

#include "auth/source_internal.h"

using namespace miproxy::auth;
using namespace miproxy::auth::detail;

TEST_CASE("error bodies of each managed-identity shape become words", "[auth]") {
  CHECK(describe_error_body(
            R"({"error":"invalid_request","error_description":"Identity not found"})") ==
        "invalid_request: Identity not found");
  CHECK(describe_error_body(
            R"({"statusCode":400,"message":"Unable to load.","correlationId":"c"})") ==
        "Unable to load. (correlation_id c)");
  CHECK(
      describe_error_body(
          R"({"error":{"code":"SecretHeaderNotFound","message":"Secret is not found in the request headers.","correlationId":"g"}})") ==
      "SecretHeaderNotFound: Secret is not found in the request headers. (correlation_id g)");
  CHECK(describe_error_body(R"({"error":"bad_request_102"})") == "bad_request_102");
  CHECK(describe_error_body("") == "");
  // JSON without error fields is never echoed (it may hold a token).
  CHECK(describe_error_body(R"({"access_token":"abc","expires_in":"1"})") == "");
  CHECK(describe_error_body("<html>\r\nBad Gateway</html>") == "<html>  Bad Gateway</html>");
  CHECK(describe_error_body(std::string(300, 'x') + " ").size() < 250);
}

TEST_CASE("redaction hides token-like runs and keeps ids and paths", "[auth]") {
  CHECK(redact_token_like("token eyJ0eXAi.eyJzdWIi.c2ln end") == "token [redacted] end");
  CHECK(redact_token_like("secret " + std::string(40, 'A') + "==") == "secret [redacted]==");
  CHECK(redact_token_like("id 255d1aef-8c98-452f-ac51-23d051240864") ==
        "id 255d1aef-8c98-452f-ac51-23d051240864");
  CHECK(redact_token_like("/usr/lib/python3/dist-packages/azure/cli/core/commands.py") ==
        "/usr/lib/python3/dist-packages/azure/cli/core/commands.py");
  CHECK(redact_token_like("line1\nline2\t") == "line1 line2 ");
}

TEST_CASE("scope_to_resource and retry rules per source", "[auth]") {
  CHECK(scope_to_resource("https://vault.azure.net/.default") == "https://vault.azure.net");
  CHECK(scope_to_resource("https://management.core.windows.net//.default") ==
        "https://management.core.windows.net/");
  CHECK(scope_to_resource("https://x") == "https://x");
  CHECK(status_retryable(RetryRule::IMDS, 410));
  CHECK_FALSE(status_retryable(RetryRule::IMDS, 400));
  CHECK_FALSE(status_retryable(RetryRule::MANAGED_IDENTITY, 502));
  CHECK(status_retryable(RetryRule::MANAGED_IDENTITY, 504));
  CHECK_FALSE(status_retryable(RetryRule::SERVICE_FABRIC, 404));
  CHECK(status_retryable(RetryRule::SERVICE_FABRIC, 429));
  CHECK_FALSE(status_retryable(RetryRule::ENTRA, 408));
  CHECK(status_retryable(RetryRule::ENTRA, 599));
}

TEST_CASE("authority and tenant validation", "[auth]") {
  CHECK(normalise_authority("https://login.microsoftonline.com/").value() ==
        "https://login.microsoftonline.com");
  CHECK(normalise_authority("HTTPS://login.example.test//").value() ==
        "HTTPS://login.example.test");
  CHECK_FALSE(normalise_authority("http://login.example.test").has_value());
  CHECK_FALSE(normalise_authority("https://").has_value());
  CHECK_FALSE(normalise_authority("https://x/?a=b").has_value());
  CHECK(valid_tenant_id("72f988bf-86f1-41af-91ab-2d7cd011db47"));
  CHECK(valid_tenant_id("contoso.onmicrosoft.com"));
  CHECK_FALSE(valid_tenant_id(""));
  CHECK_FALSE(valid_tenant_id("a/b"));
  CHECK_FALSE(valid_tenant_id("a?b"));
  CHECK(append_query("http://h/p", "a=1") == "http://h/p?a=1");
  CHECK(append_query("http://h/p?x=1", "a=1") == "http://h/p?x=1&a=1");
}

TEST_CASE("make_source refuses incomplete dependencies", "[auth]") {
  SourceDeps deps;
  deps.getenv = [](const std::string&) { return std::string(); };
  miproxy::config::Identity id;
  CHECK(make_source(id, deps).error() == "internal: SourceDeps.defer is not set");
  deps.defer = [](std::function<void()>) {};
  CHECK(make_source(id, deps).error() == "internal: SourceDeps.fetcher is not set");
}
