#include "auth/challenge.h"

#include <cctype>

#include "auth/jwt.h"
#include "base/ascii.h"

namespace miproxy::auth {
namespace {


}  // namespace

std::optional<BearerChallenge> parse_bearer_challenge(std::string_view h) {
  // Find "Bearer" as a scheme token.
  size_t pos = 0;
  while (true) {
    size_t b = to_lower(h).find("bearer", pos);
    if (b == std::string::npos) return std::nullopt;
    bool start_ok = b == 0 || h[b - 1] == ' ' || h[b - 1] == ',';
    bool end_ok = b + 6 == h.size() || h[b + 6] == ' ';
    if (start_ok && end_ok) {
      pos = b + 6;
      break;
    }
    pos = b + 6;
  }
  BearerChallenge c;
  // name=value pairs separated by commas and/or spaces; values optionally quoted.
  while (pos < h.size()) {
    while (pos < h.size() && (h[pos] == ' ' || h[pos] == ',' || h[pos] == '\t')) ++pos;
    size_t eq = h.find('=', pos);
    if (eq == std::string_view::npos) break;
    std::string name = to_lower(h.substr(pos, eq - pos));
    // A new scheme ("Basic realm=..") ends this challenge.
    if (name.find(' ') != std::string::npos) break;
    pos = eq + 1;
    std::string value;
    if (pos < h.size() && h[pos] == '"') {
      ++pos;
      while (pos < h.size() && h[pos] != '"') {
        if (h[pos] == '\\' && pos + 1 < h.size()) ++pos;
        value.push_back(h[pos++]);
      }
      ++pos;
    } else {
      size_t end = h.find_first_of(", ", pos);
      if (end == std::string_view::npos) end = h.size();
      value = std::string(h.substr(pos, end - pos));
      pos = end;
    }
    c.params[name] = value;
  }
  auto get = [&](const char* n) {
    auto it = c.params.find(n);
    return it == c.params.end() ? std::string() : it->second;
  };
  c.authorization = get("authorization");
  if (c.authorization.empty()) c.authorization = get("authorization_uri");
  c.resource = get("resource");
  if (c.resource.empty()) c.resource = get("resource_id");
  c.scope = get("scope");
  c.error = get("error");
  std::string claims = get("claims");
  if (!claims.empty()) {
    auto decoded = base64url_decode(claims);
    c.claims = decoded ? *decoded : claims;
  }
  if (!c.authorization.empty()) {
    std::string_view a = c.authorization;
    size_t p = a.find("://");
    if (p != std::string_view::npos) {
      a = a.substr(p + 3);
      size_t slash = a.find('/');
      if (slash != std::string_view::npos) {
        a = a.substr(slash + 1);
        c.tenant = std::string(a.substr(0, a.find('/')));
      }
    }
  }
  return c;
}

std::string resource_of_scope(std::string_view scope) {
  constexpr std::string_view kDefault = "/.default";
  if (scope.size() > kDefault.size() && scope.ends_with(kDefault)) {
    scope.remove_suffix(kDefault.size());
  }
  return std::string(scope);
}

std::string scope_from_challenge(const BearerChallenge& c, std::string_view upstream_host) {
  std::string scope = c.scope;
  if (scope.empty()) {
    if (c.resource.empty()) return "";
    scope = c.resource;
    while (!scope.empty() && scope.back() == '/') scope.pop_back();
    scope += "/.default";
  }
  // Exactly one scope: a list ("a/.default b/.default") or anything unprintable is refused.
  for (char ch : scope) {
    auto u = static_cast<unsigned char>(ch);
    if (u <= 0x20 || u >= 0x7f || ch == ',') return "";
  }
  // An https URL whose authority is a host name and an optional port: no userinfo
  // ("https://graph.microsoft.com@localhost" names graph, not localhost), no query or fragment.
  if (to_lower(scope.substr(0, 8)) != "https://" ||
      scope.find_first_of("@?#\\") != std::string::npos) {
    return "";
  }
  std::string_view authority = std::string_view(scope).substr(8);
  authority = authority.substr(0, authority.find('/'));
  std::string_view port;
  if (size_t colon = authority.find(':'); colon != std::string_view::npos) {
    port = authority.substr(colon + 1);
    authority = authority.substr(0, colon);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string_view::npos) {
      return "";
    }
  }
  std::string host = to_lower(authority);
  if (host.empty() || host.front() == '.' || host.back() == '.' ||
      host.find("..") != std::string::npos ||
      host.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") != std::string::npos) {
    return "";
  }
  // Within the upstream host's domain: the host itself, or a parent domain of it with at least
  // two labels ("vault.azure.net" for "kv.vault.azure.net"; never a bare "net").
  std::string up = to_lower(upstream_host);
  if (up == host) return scope;
  if (host.find('.') != std::string::npos && up.size() > host.size() &&
      up.ends_with("." + host)) {
    return scope;
  }
  // Services whose resource is not a parent domain of their hosts.
  static constexpr std::pair<std::string_view, std::string_view> kServiceDomains[] = {
      {".core.windows.net", "storage.azure.com"},
  };
  for (const auto& [suffix, resource_host] : kServiceDomains) {
    if (up.ends_with(suffix) && host == resource_host) return scope;
  }
  return "";
}

}  // namespace miproxy::auth
