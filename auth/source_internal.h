#pragma once
// Pieces shared by the token sources (not part of the public auth/ interface): the per-kind
// constructors make_source() dispatches to, response/error normalisation, and retry rules.

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "auth/http_fetcher.h"
#include "auth/source.h"
#include "base/ascii.h"
#include "config/config.h"

namespace miproxy::auth::detail {

// First header named |name| (ASCII case-insensitive), or "".
std::string header_value(const FetchResponse& response, std::string_view name);
using miproxy::iequals;

// §0.1: removes exactly one trailing "/.default" ("https://x//.default" -> "https://x/").
std::string scope_to_resource(const std::string& scope);

// Replaces JWT-looking runs ("eyJ...") and any run of 40 or more base64/base64url characters
// (between "/" and "." separators)
// by "[redacted]", and control characters by spaces, so endpoint or CLI text can be shown.
std::string redact_token_like(std::string_view text);

// Which statuses are worth another attempt (token-sources.md §1, §2, §5, §11).
enum class RetryRule {
  IMDS,              // 404, 408, 429, 5xx; 410 = retry for >= 70 s
  MANAGED_IDENTITY,  // 404, 408, 429, 500, 503, 504 (App Service, 2017, Arc, Cloud Shell)
  SERVICE_FABRIC,    // 429 and 5xx, never 404
  ENTRA,             // 429 and 5xx
};
bool status_retryable(RetryRule rule, int status);

// "<label> answered <status>: <detail>[ (<context>)]" with detail taken from the three
// managed-identity error shapes ({"error","error_description"}, {"statusCode","message",
// "correlationId"}, {"error":{"code","message"}}) or the redacted text of the body.
SourceError http_error(std::string_view label, const FetchResponse& response, RetryRule rule,
                       Clock::time_point now, std::string_view context);
// Same for the Entra token endpoint: error, description's first line (it carries the AADSTS
// code), the AADSTS code from error_codes when the description lacks it, trace_id and
// correlation_id.
SourceError entra_error(const FetchResponse& response, Clock::time_point now,
                        std::string_view context);
// The error body part of http_error, exposed for tests.
std::string describe_error_body(std::string_view body);

// |req.timeout| from deps.request_timeout, when set. Every source calls it on each request.
void apply_request_timeout(const SourceDeps& deps, FetchRequest& req);

// No HTTP answer: DNS, connect, timeout and protocol errors are retryable; TLS (including a
// Service Fabric thumbprint mismatch), oversize answers and cancellation are not.
SourceError transport_error(std::string_view label, const FetchError& error,
                            std::string_view context);

// A 2xx answer: JSON object with a non-empty |token_field| and an expiry per §12. |sent| is when
// the request went out.
SourceResult parse_token_body(std::string_view label, const FetchResponse& response,
                              std::string_view token_field, Clock::time_point sent,
                              Clock::time_point now);

SourceError make_error(std::string message, bool retryable = false);
SourceError make_unavailable(std::string message);

// Reports |result| through deps.defer (never inline).
void defer_result(const SourceDeps& deps, std::function<void(SourceResult)> done,
                  SourceResult result);

// Reads a regular file of at most |max_bytes|. Error text names the path and errno words.
std::expected<std::string, std::string> read_small_file(const std::string& path, size_t max_bytes);

// "https://login.microsoftonline.com/" -> "https://login.microsoftonline.com"; errors when not
// https or without a host.
std::expected<std::string, std::string> normalise_authority(std::string_view authority);
// Letters, digits, '-' and '.' (GUIDs and domain names), not empty.
bool valid_tenant_id(std::string_view tenant);

// A URL with |query| appended after '?' or '&'.
std::string append_query(const std::string& url, const std::string& query);

// A source that answers every fetch with the same error (a `default` chain member that does
// not apply, or a member whose configuration is broken).
std::unique_ptr<TokenSource> make_failing_source(std::string name, SourceError error,
                                                 const SourceDeps& deps);

// Per-type constructors. |identity| fields override the environment where the type allows.
std::expected<std::unique_ptr<TokenSource>, std::string> make_managed_identity_source(
    const config::Identity& identity, const SourceDeps& deps, bool selector_from_env);

enum class EntraKind { WORKLOAD_IDENTITY, CLIENT_SECRET, CLIENT_CERTIFICATE };
struct EntraSettings {
  EntraKind kind = EntraKind::CLIENT_SECRET;
  std::string tenant_id;
  std::string client_id;
  std::string authority_host;  // "" = https://login.microsoftonline.com
  // WORKLOAD_IDENTITY: the federated token file; CLIENT_SECRET: the secret file (unless
  // secret_env is set); CLIENT_CERTIFICATE: the PEM file.
  std::string file;
  std::string secret_env;  // CLIENT_SECRET from the environment (AZURE_CLIENT_SECRET)
  bool send_certificate_chain = false;
  // When not empty, every fetch fails with this, marked unavailable (missing variables).
  std::string unavailable_reason;
};
std::expected<std::unique_ptr<TokenSource>, std::string> make_entra_source(EntraSettings settings,
                                                                           const SourceDeps& deps);
// Workload identity settings from |identity| and the AZURE_* variables.
EntraSettings workload_identity_settings(const config::Identity& identity, const SourceDeps& deps);

std::expected<std::unique_ptr<TokenSource>, std::string> make_azure_cli_source(
    const config::Identity& identity, const SourceDeps& deps);
std::expected<std::unique_ptr<TokenSource>, std::string> make_token_file_source(
    const config::Identity& identity, const SourceDeps& deps);
std::expected<std::unique_ptr<TokenSource>, std::string> make_default_chain(
    const config::Identity& identity, const SourceDeps& deps);

}  // namespace miproxy::auth::detail
