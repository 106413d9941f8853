#include "proxy/errors.h"

#include <array>
#include <charconv>

#include "base/json_string.h"
#include "proxy/http1.h"

namespace miproxy::proxy {
namespace {

constexpr std::array kTable = {
    ErrorInfo{Error::BAD_REQUEST, 400, "BadRequest",
              "malformed or ambiguous HTTP (CL with TE, duplicate CL, bad chunk); connection closed"},
    ErrorInfo{Error::BAD_PATH, 400, "BadPath",
              "on a route with a `path_prefix`: a dot segment, `..;`, backslash, `%2F` or `%5C` "
              "in the path sent upstream"},
    ErrorInfo{Error::CLIENT_NOT_ALLOWED, 403, "ClientNotAllowed",
              "peer uid not in a Unix listener's `allowed_uids`"},
    ErrorInfo{Error::BROWSER_REQUEST_REFUSED, 403, "BrowserRequestRefused",
              "`Origin`, or `Sec-Fetch-Site` other than `none`, without an origin in "
              "`allowed_origins`"},
    ErrorInfo{Error::NO_ROUTE, 404, "NoRoute", "no route matched"},
    ErrorInfo{Error::METHOD_NOT_ALLOWED, 405, "MethodNotAllowed",
              "the route's `methods` exclude the method (and CONNECT)"},
    ErrorInfo{Error::REQUEST_TIMEOUT, 408, "RequestTimeout",
              "the request head did not arrive within `limits.header_timeout`, or the request body "
              "made no progress for `limits.body_stall_timeout`; connection closed"},
    ErrorInfo{Error::HOST_NOT_ALLOWED, 421, "HostNotAllowed",
              "a route without `match.host` (or the admin listener) got a Host that is not "
              "loopback, the listener's own address or in `match.allowed_hosts`"},
    ErrorInfo{Error::HEADERS_TOO_LARGE, 431, "RequestHeaderFieldsTooLarge",
              "header or request-line limits"},
    ErrorInfo{Error::TOKEN_ACQUISITION_FAILED, 502, "TokenAcquisitionFailed",
              "no valid token for the route's identity and scope; the message has the token "
              "endpoint's words"},
    ErrorInfo{Error::UPSTREAM_TLS_FAILED, 502, "UpstreamTlsFailed",
              "the upstream's certificate chain or host name did not verify, or the handshake failed"},
    ErrorInfo{Error::UPSTREAM_PROTOCOL_ERROR, 502, "UpstreamProtocolError",
              "the upstream closed the connection or sent a malformed response"},
    ErrorInfo{Error::UPSTREAM_UNAVAILABLE, 503, "UpstreamUnavailable", "connect failed"},
    ErrorInfo{Error::UPSTREAM_TIMEOUT, 504, "UpstreamTimeout",
              "connect or response timeout, or the upstream took no request body bytes for "
              "`limits.body_stall_timeout`"},
};

// The enum's order is the table's order.
constexpr bool table_in_enum_order() {
  for (size_t i = 0; i < kTable.size(); ++i) {
    if (static_cast<size_t>(kTable[i].error) != i) return false;
  }
  return true;
}
static_assert(table_in_enum_order());

void append_number(std::string& out, size_t n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, r.ptr);
}

}  // namespace

std::span<const ErrorInfo> error_table() { return kTable; }

const ErrorInfo& error_info(Error e) { return kTable[static_cast<size_t>(e)]; }

void render_error_response(std::string& out, Error e, std::string_view message,
                           const ErrorContext& ctx, bool close, bool head_request) {
  const ErrorInfo& info = error_info(e);
  std::string body;
  body.reserve(64 + message.size() + ctx.route.size() + ctx.identity.size());
  body.append("{\"error\":{\"code\":");
  append_json_string(body, info.code);
  body.append(",\"message\":");
  append_json_string(body, message);
  if (!ctx.route.empty()) {
    body.append(",\"route\":");
    append_json_string(body, ctx.route);
    body.append(",\"identity\":");
    append_json_string(body, ctx.identity);
  }
  body.append("}}");

  out.reserve(out.size() + 192 + body.size());
  out.append("HTTP/1.1 ");
  append_number(out, static_cast<size_t>(info.status));
  out.push_back(' ');
  out.append(reason_phrase(info.status));
  out.append("\r\nContent-Type: application/json\r\nx-miproxy-error: ");
  out.append(info.code);
  out.append("\r\nContent-Length: ");
  append_number(out, body.size());
  if (close) out.append("\r\nConnection: close");
  out.append("\r\n\r\n");
  if (!head_request) out.append(body);
}

}  // namespace miproxy::proxy
