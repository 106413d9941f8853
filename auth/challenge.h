#pragma once
// Bearer challenges in WWW-Authenticate (azure-services.md §2.3, §3, §5): Key Vault's
// comma-separated quoted form, Storage's space-separated unquoted form, and CAE claims
// challenges. Pure functions.

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace miproxy::auth {

struct BearerChallenge {
  std::map<std::string, std::string> params;  // names lower-cased, values unquoted
  std::string authorization;  // authorization or authorization_uri
  std::string resource;       // resource or resource_id
  std::string scope;          // scope
  std::string tenant;         // first path segment of authorization
  std::string error;          // e.g. "insufficient_claims", "invalid_token"
  std::string claims;         // decoded claims JSON (the header carries base64)
};

// Parses the first "Bearer ..." challenge of a WWW-Authenticate value. nullopt when there is
// no Bearer challenge.
std::optional<BearerChallenge> parse_bearer_challenge(std::string_view header);

// The v2 scope a challenge asks for: `scope` if present, else resource + "/.default".
// Returns "" unless it is exactly one scope, an https URL whose authority is a host name (and
// port) without userinfo, query or fragment, and its host is the upstream host's service
// domain: the upstream host must equal it or end with "." + it, a parent of two labels or more
// (myvault.vault.azure.net accepts https://vault.azure.net; https://evil.example,
// https://net, "https://a/.default https://b/.default" and
// https://graph.microsoft.com@localhost are refused).
std::string scope_from_challenge(const BearerChallenge& challenge, std::string_view upstream_host);

// The resource (audience) part of a v2 scope: ".../.default" without "/.default".
std::string resource_of_scope(std::string_view scope);

}  // namespace miproxy::auth
