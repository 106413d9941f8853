#pragma once
// The errors miproxy answers itself (interface.md "Errors miproxy itself answers"): one enum,
// one table giving each its status, contract code and when it happens — the table README.md
// prints (a unit test compares the two) — and one writer that renders the response. The writer
// never throws and always produces valid JSON, whatever bytes the message carries (a client's
// Host, an upstream's challenge, a token endpoint's error text).

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace miproxy::proxy {

enum class Error : uint8_t {
  BAD_REQUEST,
  CLIENT_NOT_ALLOWED,
  NO_ROUTE,
  METHOD_NOT_ALLOWED,
  REQUEST_TIMEOUT,
  HEADERS_TOO_LARGE,
  TOKEN_ACQUISITION_FAILED,
  UPSTREAM_TLS_FAILED,
  UPSTREAM_PROTOCOL_ERROR,
  UPSTREAM_UNAVAILABLE,
  UPSTREAM_TIMEOUT,
};

struct ErrorInfo {
  Error error;
  int status;
  std::string_view code;  // the contract's name: x-miproxy-error and error.code
  std::string_view when;  // README's description
};

// Every error, in the order README.md lists them.
std::span<const ErrorInfo> error_table();
const ErrorInfo& error_info(Error e);

// Who the error is about: empty for errors answered before a route matched.
struct ErrorContext {
  std::string_view route;
  std::string_view identity;
};

// Appends a complete HTTP/1.1 response for |e| to |out|: status line, Content-Type, the
// x-miproxy-error header, Content-Length, "Connection: close" when |close|, and the JSON body
// {"error":{"code","message"[,"route","identity"]}} unless |head_request| (a response to HEAD
// has no body, RFC 9110 §9.3.2; Content-Length still tells its size).
void render_error_response(std::string& out, Error e, std::string_view message,
                           const ErrorContext& ctx, bool close, bool head_request);

}  // namespace miproxy::proxy
