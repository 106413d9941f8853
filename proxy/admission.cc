#include "proxy/admission.h"

#include <arpa/inet.h>

#include <cstring>

#include "routing/router.h"

namespace miproxy::proxy::admission {
namespace {

// The values of every header named |name| (Origin and Sec-Fetch-Site have no HeaderToken).
size_t values_of(const HeaderList& headers, std::string_view name, std::string_view* first) {
  size_t n = 0;
  for (size_t i = 0; i < headers.size(); ++i) {
    if (headers.token(i) == HeaderToken::OTHER && iequals(headers.name(i), name)) {
      if (n++ == 0) *first = headers.value(i);
    }
  }
  return n;
}

std::optional<in_addr> ipv4(std::string_view host) {
  if (host.size() > 15) return std::nullopt;
  char buf[16];
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = 0;
  in_addr a{};
  // inet_pton takes exactly four decimal parts, without leading zeros: no "0x7f.1" or "0127.1".
  if (inet_pton(AF_INET, buf, &a) != 1) return std::nullopt;
  return a;
}

std::optional<in6_addr> ipv6(std::string_view host) {
  if (host.size() > 45) return std::nullopt;
  char buf[46];
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = 0;
  in6_addr a{};
  if (inet_pton(AF_INET6, buf, &a) != 1) return std::nullopt;
  return a;
}

bool same_ip(std::string_view a, std::string_view b) {
  if (auto a4 = ipv4(a)) {
    auto b4 = ipv4(b);
    return b4 && a4->s_addr == b4->s_addr;
  }
  auto a6 = ipv6(a);
  auto b6 = ipv6(b);
  return a6 && b6 && std::memcmp(a6->s6_addr, b6->s6_addr, 16) == 0;
}

bool is_unspecified(std::string_view host) {
  static const uint8_t zero[16] = {};
  if (auto a4 = ipv4(host)) return a4->s_addr == 0;
  auto a6 = ipv6(host);
  return a6 && std::memcmp(a6->s6_addr, zero, 16) == 0;
}

bool listed(std::string_view host, const std::vector<std::string>& allowed_hosts) {
  for (const auto& h : allowed_hosts) {
    if (h.starts_with("*.")) {
      std::string_view suffix = std::string_view(h).substr(1);  // ".b.c"
      if (host.size() > suffix.size() && host.ends_with(suffix) &&
          host.substr(0, host.size() - suffix.size()).find('.') == std::string_view::npos) {
        return true;
      }
    } else if (host == h || same_ip(host, h)) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::optional<Refusal> check_browser(const HeaderList& headers,
                                     const std::vector<std::string>& allowed_origins) {
  std::string_view origin, site;
  size_t origins = values_of(headers, "origin", &origin);
  size_t sites = values_of(headers, "sec-fetch-site", &site);
  if (origins == 0 && (sites == 0 || (sites == 1 && iequals(site, "none")))) {
    return std::nullopt;  // not from a web page (or a navigation the user typed)
  }
  if (origins == 1) {
    std::string lowered = to_lower(origin);
    for (const auto& allowed : allowed_origins) {
      if (lowered == allowed) return std::nullopt;
    }
  }
  Refusal r{Error::BROWSER_REQUEST_REFUSED, ""};
  if (origins > 1) {
    r.message = "more than one Origin header";
  } else if (origins == 1) {
    r.message = "requests from web pages are refused: Origin '" + std::string(origin) +
                "' is not in this listener's allowed_origins";
  } else {
    r.message = "requests from web pages are refused: Sec-Fetch-Site '" + std::string(site) +
                "' without an Origin listed in this listener's allowed_origins";
  }
  return r;
}

bool is_loopback_host(std::string_view host) {
  std::string h = to_lower(host);
  if (h == "localhost") return true;
  if (auto a4 = ipv4(h)) return (ntohl(a4->s_addr) >> 24) == 127;
  if (auto a6 = ipv6(h)) {
    static const uint8_t loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(a6->s6_addr, loopback, 16) == 0 ||
           (std::memcmp(a6->s6_addr, mapped, 12) == 0 && a6->s6_addr[12] == 127);
  }
  return false;
}

std::optional<Refusal> check_host(std::string_view host, std::string_view listener_host,
                                  const std::vector<std::string>& allowed_hosts,
                                  std::string_view where) {
  std::string h = routing::normalize_host(host);
  if (h.empty() || is_loopback_host(h) || listed(h, allowed_hosts)) return std::nullopt;
  if (!listener_host.empty()) {
    // A listener on 0.0.0.0 or :: answers on every local address: an IP literal names one of
    // them (a rebinding page always uses a DNS name of its own), the unspecified address never.
    if (is_unspecified(listener_host) ? (ipv4(h) || ipv6(h)) && !is_unspecified(h)
                                      : same_ip(h, listener_host)) {
      return std::nullopt;
    }
  }
  bool route = where.starts_with("route ");
  return Refusal{Error::HOST_NOT_ALLOWED,
                 std::string(where) + " answers only Host localhost, a loopback address" +
                     (route ? ", the listener's own address or a name in match.allowed_hosts"
                            : " or its own address") +
                     ", not '" + h + "' (a web page reached through DNS rebinding sends its own " +
                     "host name)"};
}

std::optional<Refusal> admit(const config::Listener& listener, const HeaderList& headers,
                             std::string_view host, bool absolute_form,
                             const config::Route* route) {
  if (auto r = check_browser(headers, listener.allowed_origins)) return r;
  if (!route || !route->match_host.empty() || absolute_form ||
      listener.kind != config::Listener::Kind::TCP) {
    return std::nullopt;
  }
  return check_host(host, listener.host, route->allowed_hosts, "route '" + route->name + "'");
}

std::optional<Refusal> admit_admin(const HeaderList& headers, std::string_view admin_host) {
  static const std::vector<std::string> none;
  if (auto r = check_browser(headers, none)) return r;
  std::string_view host;
  if (headers.count(HeaderToken::HOST) > 1) {
    return Refusal{Error::BAD_REQUEST, "more than one Host header"};
  }
  headers.find(HeaderToken::HOST, &host);
  return check_host(host, admin_host, none, "the admin listener");
}

}  // namespace miproxy::proxy::admission
