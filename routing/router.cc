#include "routing/router.h"

#include <algorithm>

#include "base/ascii.h"
namespace miproxy::routing {

namespace {

bool iends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && iequals(text.substr(text.size() - suffix.size()), suffix);
}

// The host part of a Host header or authority, without port, brackets or trailing dot; not
// lower-cased (callers compare case-insensitively). A bare IPv6 literal (several ':' and no
// brackets) is returned whole.
std::string_view host_view(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    // "[::1" is malformed: return it whole so that it matches no host.
    return close == std::string_view::npos ? host : host.substr(1, close - 1);
  }
  size_t colon = host.find(':');
  if (colon != std::string_view::npos && host.find(':', colon + 1) == std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (host.size() > 1 && host.back() == '.') {
    host.remove_suffix(1);
  }
  return host;
}

bool host_matches(const CompiledRoute& r, std::string_view host) {
  if (r.host_suffix.empty()) {
    return true;  // no match.host: any host
  }
  if (!r.host_wildcard) {
    return iequals(host, r.host_suffix);
  }
  // "*.b.c": exactly one non-empty label before ".b.c".
  if (host.size() <= r.host_suffix.size() || !iends_with(host, r.host_suffix)) {
    return false;
  }
  std::string_view label = host.substr(0, host.size() - r.host_suffix.size());
  return label.find('.') == std::string_view::npos;
}

bool method_allowed(const CompiledRoute& r, std::string_view method) {
  if (r.methods.empty()) {
    return true;
  }
  for (const auto& m : r.methods) {
    if (m == method) {
      return true;
    }
  }
  return false;
}

// "." or ".." with any of its dots written as %2e / %2E, optionally followed by path
// parameters (";x", or ";" written as %3B), which some servers strip before normalising.
bool is_dot_segment(std::string_view segment) {
  size_t dots = 0;
  size_t i = 0;
  while (i < segment.size()) {
    if (segment[i] == '.') {
      ++i;
    } else if (segment.size() - i >= 3 && segment[i] == '%' && segment[i + 1] == '2' &&
               ascii_lower(segment[i + 2]) == 'e') {
      i += 3;
    } else if (segment[i] == ';' || (segment.size() - i >= 3 && segment[i] == '%' &&
                                     segment[i + 1] == '3' && ascii_lower(segment[i + 2]) == 'b')) {
      break;
    } else {
      return false;
    }
    ++dots;
  }
  return dots == 1 || dots == 2;
}

// A path_prefix matches at a segment boundary (|path| is without its query).
bool prefix_matches(std::string_view path, std::string_view prefix) {
  if (!path.starts_with(prefix)) {
    return false;
  }
  return prefix.back() == '/' || path.size() == prefix.size() || path[prefix.size()] == '/';
}

constexpr std::string_view STORAGE_SUFFIXES[] = {
    ".blob.core.windows.net", ".queue.core.windows.net", ".table.core.windows.net",
    ".dfs.core.windows.net", ".file.core.windows.net"};

constexpr std::string_view STORAGE_SCOPE = "https://storage.azure.com/.default";

}  // namespace

std::string Upstream::authority() const {
  bool ipv6 = host.find(':') != std::string::npos;
  std::string out = ipv6 ? "[" + host + "]" : host;
  if (port != 443) {
    out += ":" + std::to_string(port);
  }
  return out;
}

Table::Table(std::shared_ptr<const config::Config> config) : config_(std::move(config)) {
  routes_.reserve(config_->routes.size());
  for (const auto& route : config_->routes) {
    CompiledRoute c;
    c.route = &route;
    std::string host = to_lower(route.match_host);
    if (host.starts_with("*.")) {
      c.host_wildcard = true;
      c.host_suffix = host.substr(1);
    } else {
      c.host_suffix = host;
    }
    auto parsed = config::parse_upstream_url(route.upstream);
    if (parsed) {
      c.upstream_templated = parsed->templated;
      c.upstream.host = parsed->host;
      c.upstream.port = parsed->port;
      c.upstream.base_path = parsed->base_path;
    } else {
      c.usable = false;
    }
    c.methods.reserve(route.methods.size());
    for (const auto& m : route.methods) {
      std::string upper(m);
      std::transform(upper.begin(), upper.end(), upper.begin(),
                     [](char ch) { return (ch >= 'a' && ch <= 'z') ? ch - 'a' + 'A' : ch; });
      c.methods.push_back(std::move(upper));
    }
    // A templated upstream forwards to the request host, which the wildcard confines to one
    // label under host_suffix: "x" + ".blob.core.windows.net" stands for every such host.
    std::string target_host =
        c.upstream_templated ? (c.host_wildcard ? "x" + c.host_suffix : "") : c.upstream.host;
    c.storage = is_storage_host(target_host) || route.scope == STORAGE_SCOPE;
    routes_.push_back(std::move(c));
  }
}

MatchResult Table::match(std::string_view host, std::string_view path,
                         std::string_view method) const {
  std::string_view h = host_view(host);
  std::string_view p = path.substr(0, path.find('?'));
  const CompiledRoute* method_miss = nullptr;
  for (const auto& r : routes_) {
    if (!r.usable || !host_matches(r, h)) {
      continue;
    }
    const std::string& prefix = r.route->path_prefix;
    if (!prefix.empty()) {
      if (!prefix_matches(p, prefix)) {
        continue;
      }
      // What the upstream will see of the request path: after strip_prefix, the rest.
      std::string_view sent = r.route->strip_prefix ? p.substr(prefix.size()) : p;
      std::string_view problem = path_escape(sent);
      if (!problem.empty()) {
        return {MatchResult::Outcome::BAD_PATH, &r, problem};
      }
    }
    if (r.upstream_templated && !is_dns_host_name(h)) {
      return {MatchResult::Outcome::BAD_HOST, &r,
              "the host for an https://{host} upstream must be a DNS name (letters, digits and "
              "'-' in dot-separated labels, not an IP address)"};
    }
    if (method_allowed(r, method)) {
      return {MatchResult::Outcome::MATCHED, &r, {}};
    }
    if (method_miss == nullptr) {
      method_miss = &r;
    }
  }
  if (method_miss != nullptr) {
    return {MatchResult::Outcome::METHOD_NOT_ALLOWED, method_miss, {}};
  }
  return {MatchResult::Outcome::NO_ROUTE, nullptr, {}};
}

Upstream resolve_upstream(const CompiledRoute& route, std::string_view request_host) {
  Upstream out = route.upstream;
  if (route.upstream_templated) {
    out.host = normalize_host(request_host);
  }
  return out;
}

std::string upstream_path(const CompiledRoute& route, const Upstream& upstream,
                          std::string_view request_path) {
  std::string_view rest = request_path;
  const std::string& prefix = route.route->path_prefix;
  if (route.route->strip_prefix && !prefix.empty() && rest.starts_with(prefix)) {
    rest.remove_prefix(prefix.size());
  }
  std::string out = upstream.base_path;
  // Keep the path absolute: "" -> "/", "secrets/x" -> "/secrets/x", "?q" -> "/?q".
  if (rest.empty() || rest.front() != '/') {
    out += '/';
  }
  out.append(rest);
  return out;
}

std::string normalize_host(std::string_view host) { return to_lower(host_view(host)); }

bool is_storage_host(std::string_view host) {
  for (auto suffix : STORAGE_SUFFIXES) {
    if (host.size() > suffix.size() && iends_with(host, suffix)) {
      return true;
    }
  }
  return false;
}

bool has_dot_segment(std::string_view path) {
  path = path.substr(0, path.find('?'));
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string_view segment = path.substr(
        start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (is_dot_segment(segment)) {
      return true;
    }
    if (slash == std::string_view::npos) {
      break;
    }
    start = slash + 1;
  }
  return false;
}

std::string_view path_escape(std::string_view path) {
  path = path.substr(0, path.find('?'));
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '\\') {
      return "a backslash in the path (some servers read it as '/')";
    }
    if (path[i] == '%' && path.size() - i >= 3) {
      char a = path[i + 1];
      char b = ascii_lower(path[i + 2]);
      if (a == '2' && b == 'f') {
        return "an encoded '/' (%2F) in the path";
      }
      if (a == '5' && b == 'c') {
        return "an encoded '\\' (%5C) in the path";
      }
    }
  }
  if (has_dot_segment(path)) {
    return "a '.' or '..' segment in the path";
  }
  return {};
}

bool is_dns_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    std::string_view label =
        host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    bool all_digits = true;
    for (char c : label) {
      bool digit = c >= '0' && c <= '9';
      bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      if (!digit && !letter && c != '-') {
        return false;
      }
      all_digits = all_digits && digit;
    }
    if (dot == std::string_view::npos) {
      return !all_digits;  // the last label: "1" would make an IPv4 spelling
    }
    start = dot + 1;
  }
}

}  // namespace miproxy::routing
