#pragma once
// Whether a request may use the identities at all, decided from its head before anything is
// forwarded: the defences against cross-site request forgery and DNS rebinding
// (docs/security.md). A web page the user visits can make the browser send requests to
// 127.0.0.1, or to a name of the attacker's that resolves to 127.0.0.1; miproxy would add a
// token to them. Browsers mark such requests (Origin, Sec-Fetch-Site) and, when rebinding,
// name the attacker's host in Host. Pure functions of the headers and the config.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "proxy/errors.h"
#include "proxy/http1.h"

namespace miproxy::proxy::admission {

struct Refusal {
  Error error = Error::BROWSER_REQUEST_REFUSED;  // or HOST_NOT_ALLOWED, BAD_REQUEST
  std::string message;
};

// A request that carries Origin, or Sec-Fetch-Site other than "none", comes from a web page
// (or a script that chose to look like one): refused unless its Origin is exactly one of
// |allowed_origins| (lower-case "scheme://host[:port]", as config stores them). "null" and a
// missing Origin never match.
std::optional<Refusal> check_browser(const HeaderList& headers,
                                     const std::vector<std::string>& allowed_origins);

// True for a host (any case, no port or brackets) that always means this machine: localhost,
// 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z). Dotted-decimal only: "0x7f.1" is no address.
bool is_loopback_host(std::string_view host);

// The Host check against DNS rebinding. |host|: the Host header as sent (port ignored; "" when
// the request had none, which an HTTP/1.0 client may do). Allowed: a loopback host, the
// listener's own address |listener_host| (an IP literal; for 0.0.0.0 or :: any IP literal
// except those), or one of |allowed_hosts| (exact, or "*.b.c" for one leading label).
// |where| names the listener or route in the message.
std::optional<Refusal> check_host(std::string_view host, std::string_view listener_host,
                                  const std::vector<std::string>& allowed_hosts,
                                  std::string_view where);

// The proxy listener: the browser check for every request; then, for a request in origin
// form on a TCP listener matching a route without match.host, the Host check (with the route's
// match.allowed_hosts). A route with match.host answers only that host already; a request in
// absolute form (an app using miproxy as HTTP_PROXY) names its upstream, not miproxy, and is
// never what a browser sends to a server it takes for the origin; a Unix socket is beyond a
// browser's reach. |route| is null when no route matched.
std::optional<Refusal> admit(const config::Listener& listener, const HeaderList& headers,
                             std::string_view host, bool absolute_form,
                             const config::Route* route);

// The admin listener (bound to |admin_host|): the browser check with no origin allowed, then
// the Host check.
std::optional<Refusal> admit_admin(const HeaderList& headers, std::string_view admin_host);

}  // namespace miproxy::proxy::admission
