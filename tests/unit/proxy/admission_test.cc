#include "proxy/admission.h"

#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

using miproxy::proxy::HeaderList;
namespace admission = miproxy::proxy::admission;

namespace {

HeaderList headers(const std::vector<std::pair<std::string, std::string>>& list) {
  HeaderList h;
  for (const auto& [name, value] : list) {
    h.append_name(name.data(), name.size());
    h.append_value(value.data(), value.size());
    h.finish_value();
  }
  return h;
}

miproxy::config::Listener tcp(std::string host, std::vector<std::string> origins = {}) {
  miproxy::config::Listener l;
  l.kind = miproxy::config::Listener::Kind::TCP;
  l.host = std::move(host);
  l.allowed_origins = std::move(origins);
  return l;
}

miproxy::config::Route route(std::string match_host = "", std::vector<std::string> hosts = {}) {
  miproxy::config::Route r;
  r.name = "r";
  r.match_host = std::move(match_host);
  r.allowed_hosts = std::move(hosts);
  return r;
}

// "" when admitted, else "<status> <code>".
std::string verdict(const std::optional<admission::Refusal>& r) {
  if (!r) return "";
  const auto& info = miproxy::proxy::error_info(r->error);
  return std::to_string(info.status) + " " + std::string(info.code);
}

}  // namespace

TEST_CASE("requests without browser headers pass the browser check", "[admission]") {
  CHECK(verdict(admission::check_browser(headers({{"Host", "127.0.0.1"}}), {})) == "");
  CHECK(verdict(admission::check_browser(headers({{"Sec-Fetch-Site", "none"}}), {})) == "");
  CHECK(verdict(admission::check_browser(headers({{"sec-fetch-site", "None"}}), {})) == "");
}

TEST_CASE("Origin or Sec-Fetch-Site other than none is refused unless listed", "[admission]") {
  std::vector<std::string> allowed = {"https://app.example", "http://localhost:3000"};
  auto check = [&](std::vector<std::pair<std::string, std::string>> h) {
    return verdict(admission::check_browser(headers(h), allowed));
  };
  CHECK(check({{"Origin", "https://evil.example"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Origin", "null"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Origin", ""}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Sec-Fetch-Site", "cross-site"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Sec-Fetch-Site", "same-site"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Sec-Fetch-Site", "same-origin"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Sec-Fetch-Site", "none"}, {"Sec-Fetch-Site", "cross-site"}}) ==
        "403 BrowserRequestRefused");
  CHECK(check({{"Sec-Fetch-Site", "none"}, {"Origin", "https://evil.example"}}) ==
        "403 BrowserRequestRefused");
  // Listed origins pass, compared as browsers serialise them (any case here, exact otherwise).
  CHECK(check({{"Origin", "https://app.example"}, {"Sec-Fetch-Site", "cross-site"}}) == "");
  CHECK(check({{"Origin", "HTTPS://App.Example"}}) == "");
  CHECK(check({{"Origin", "http://localhost:3000"}}) == "");
  CHECK(check({{"Origin", "https://app.example:8443"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Origin", "https://app.example.evil"}}) == "403 BrowserRequestRefused");
  CHECK(check({{"Origin", "https://app.example"}, {"Origin", "https://app.example"}}) ==
        "403 BrowserRequestRefused");
  // No listed origin with no Origin header: a Sec-Fetch-Site alone never passes.
  CHECK(check({{"Sec-Fetch-Site", "same-origin"}}) == "403 BrowserRequestRefused");
  auto r = admission::check_browser(headers({{"Origin", "https://evil.example"}}), allowed);
  REQUIRE(r);
  CHECK(r->message.find("https://evil.example") != std::string::npos);
  CHECK(r->message.find("allowed_origins") != std::string::npos);
}

TEST_CASE("loopback hosts", "[admission]") {
  using admission::is_loopback_host;
  CHECK(is_loopback_host("localhost"));
  CHECK(is_loopback_host("LocalHost"));
  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("127.1.2.3"));
  CHECK(is_loopback_host("::1"));
  CHECK(is_loopback_host("::ffff:127.0.0.1"));
  CHECK_FALSE(is_loopback_host("0x7f.0.0.1"));
  CHECK_FALSE(is_loopback_host("0127.0.0.1"));
  CHECK_FALSE(is_loopback_host("2130706433"));
  CHECK_FALSE(is_loopback_host("128.0.0.1"));
  CHECK_FALSE(is_loopback_host("0.0.0.0"));
  CHECK_FALSE(is_loopback_host("::"));
  CHECK_FALSE(is_loopback_host("localhost.evil.example"));
  CHECK_FALSE(is_loopback_host("evil.example"));
}

TEST_CASE("the Host check: loopback, the listener's own address, listed names", "[admission]") {
  auto check = [](std::string_view host, std::string_view listener,
                  std::vector<std::string> allowed = {}) {
    return verdict(admission::check_host(host, listener, allowed, "route 'r'"));
  };
  CHECK(check("127.0.0.1:8080", "127.0.0.1") == "");
  CHECK(check("localhost:8080", "127.0.0.1") == "");
  CHECK(check("[::1]:8080", "127.0.0.1") == "");
  CHECK(check("", "127.0.0.1") == "");
  CHECK(check("rebind.evil.example:8080", "127.0.0.1") == "421 HostNotAllowed");
  CHECK(check("contoso.blob.core.windows.net", "127.0.0.1") == "421 HostNotAllowed");
  CHECK(check("user@127.0.0.1", "127.0.0.1") == "421 HostNotAllowed");
  CHECK(check("0.0.0.0:8080", "127.0.0.1") == "421 HostNotAllowed");
  // The listener's own address.
  CHECK(check("10.1.2.3:8080", "10.1.2.3") == "");
  CHECK(check("10.1.2.4:8080", "10.1.2.3") == "421 HostNotAllowed");
  CHECK(check("[fd00::1]:8080", "fd00::1") == "");
  // A listener on every address: any IP literal but the unspecified one; never a name.
  CHECK(check("10.1.2.3:9464", "0.0.0.0") == "");
  CHECK(check("0.0.0.0:9464", "0.0.0.0") == "421 HostNotAllowed");
  CHECK(check("[fd00::2]:9464", "::") == "");
  CHECK(check("rebind.evil.example", "0.0.0.0") == "421 HostNotAllowed");
  // Names the route lists: exact, or one leading label under "*.".
  CHECK(check("app.internal:8080", "127.0.0.1", {"app.internal"}) == "");
  CHECK(check("App.Internal.", "127.0.0.1", {"app.internal"}) == "");
  CHECK(check("x.svc.internal", "127.0.0.1", {"*.svc.internal"}) == "");
  CHECK(check("a.x.svc.internal", "127.0.0.1", {"*.svc.internal"}) == "421 HostNotAllowed");
  CHECK(check("app.internal.evil", "127.0.0.1", {"app.internal"}) == "421 HostNotAllowed");
  auto r = admission::check_host("rebind.evil.example", "127.0.0.1", {}, "route 'r'");
  REQUIRE(r);
  CHECK(r->message.find("rebind.evil.example") != std::string::npos);
  CHECK(r->message.find("match.allowed_hosts") != std::string::npos);
}

TEST_CASE("admit: browser check everywhere, Host check for host-less routes on TCP",
          "[admission]") {
  auto none = headers({{"Host", "rebind.evil.example"}});
  auto host_less = route();
  auto with_host = route("contoso.blob.core.windows.net");
  auto listed = route("", {"rebind.evil.example"});
  auto l = tcp("127.0.0.1", {"https://app.example"});
  CHECK(verdict(admission::admit(l, none, "rebind.evil.example", false, &host_less)) ==
        "421 HostNotAllowed");
  CHECK(verdict(admission::admit(l, none, "rebind.evil.example", false, &listed)) == "");
  CHECK(verdict(admission::admit(l, none, "contoso.blob.core.windows.net", false, &with_host)) ==
        "");
  // Absolute form (an app using HTTP_PROXY) names the upstream; no route: nothing to protect.
  CHECK(verdict(admission::admit(l, none, "rebind.evil.example", true, &host_less)) == "");
  CHECK(verdict(admission::admit(l, none, "rebind.evil.example", false, nullptr)) == "");
  // A Unix socket is out of a browser's reach; the browser check still applies.
  miproxy::config::Listener unix_listener;
  unix_listener.kind = miproxy::config::Listener::Kind::UNIX;
  CHECK(verdict(admission::admit(unix_listener, none, "rebind.evil.example", false,
                                 &host_less)) == "");
  auto browser = headers({{"Host", "127.0.0.1"}, {"Origin", "https://evil.example"}});
  CHECK(verdict(admission::admit(unix_listener, browser, "127.0.0.1", false, &host_less)) ==
        "403 BrowserRequestRefused");
  CHECK(verdict(admission::admit(l, browser, "127.0.0.1", false, &with_host)) ==
        "403 BrowserRequestRefused");
  CHECK(verdict(admission::admit(l, browser, "127.0.0.1", false, nullptr)) ==
        "403 BrowserRequestRefused");
  auto allowed = headers({{"Host", "127.0.0.1"}, {"Origin", "https://app.example"}});
  CHECK(verdict(admission::admit(l, allowed, "127.0.0.1", false, &host_less)) == "");
}

TEST_CASE("admit_admin: no browser origin, loopback or own Host only", "[admission]") {
  CHECK(verdict(admission::admit_admin(headers({{"Host", "127.0.0.1:9464"}}), "127.0.0.1")) ==
        "");
  CHECK(verdict(admission::admit_admin(headers({}), "127.0.0.1")) == "");
  CHECK(verdict(admission::admit_admin(headers({{"Host", "10.0.0.7:9464"}}), "0.0.0.0")) == "");
  CHECK(verdict(admission::admit_admin(headers({{"Host", "rebind.evil.example:9464"}}),
                                       "127.0.0.1")) == "421 HostNotAllowed");
  CHECK(verdict(admission::admit_admin(
            headers({{"Host", "127.0.0.1"}, {"Origin", "http://127.0.0.1:9464"}}), "127.0.0.1")) ==
        "403 BrowserRequestRefused");
  CHECK(verdict(admission::admit_admin(
            headers({{"Host", "127.0.0.1"}, {"Sec-Fetch-Site", "cross-site"}}), "127.0.0.1")) ==
        "403 BrowserRequestRefused");
  CHECK(verdict(admission::admit_admin(headers({{"Host", "127.0.0.1"}, {"Host", "evil"}}),
                                       "127.0.0.1")) == "400 BadRequest");
}
