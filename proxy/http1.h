#pragma once
// HTTP/1.1 pieces shared by the downstream server and the upstream client: header storage that
// survives across read buffers, a static table of the header names the proxy acts on,
// hop-by-hop rules, request/response head serialisation, chunk framing, and the access log's
// query redaction. Pure functions and small value types: unit-tested without a loop.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/ascii.h"

namespace miproxy::proxy {

// Header names the proxy treats specially, recognised once when a header is stored so the
// forwarding code never compares strings in loops.
enum class HeaderToken : uint8_t {
  OTHER,
  AUTHORIZATION,
  CONNECTION,
  CONTENT_LENGTH,
  EXPECT,
  HOST,
  KEEP_ALIVE,
  PROXY_AUTHENTICATE,
  PROXY_AUTHORIZATION,
  PROXY_CONNECTION,
  TE,
  TRAILER,
  TRANSFER_ENCODING,
  UPGRADE,
  X_MS_CLIENT_REQUEST_ID,
  X_MS_VERSION,
};

HeaderToken classify_header(std::string_view name);
// Connection, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade.
bool is_hop_by_hop(HeaderToken token);
using miproxy::iequals;
using miproxy::to_lower;

// Headers copied out of the parser's read buffers into one arena. llhttp may deliver a name or
// value in several pieces (across reads); append_* concatenate until finish_*(). Cleared per
// message without giving back capacity, so steady-state requests do not allocate.
class HeaderList {
 public:
  void clear();
  void append_name(const char* data, size_t len);
  void append_value(const char* data, size_t len);
  // Called when a value is complete: classifies the name and trims the value's trailing
  // whitespace (llhttp already skips leading whitespace).
  void finish_value();

  size_t size() const { return entries_.size(); }
  std::string_view name(size_t i) const;
  std::string_view value(size_t i) const;
  HeaderToken token(size_t i) const { return entries_[i].token; }
  // First value with |token|, or nullptr.
  const std::string_view* find(HeaderToken token, std::string_view* out) const;
  // Number of headers with |token|.
  size_t count(HeaderToken token) const;
  // True when any Connection header (there may be several) lists |name| (RFC 9110 §7.6.1: the
  // names it lists are hop-by-hop and are not forwarded).
  bool connection_lists_name(std::string_view name) const;
  // Case-insensitive lookup for names without a token.
  bool find_name(std::string_view name, std::string_view* out) const;
  size_t bytes() const { return arena_.size(); }

 private:
  struct Entry {
    uint32_t name_off, name_len, value_off, value_len;
    HeaderToken token;
  };
  std::string arena_;
  std::vector<Entry> entries_;
  bool in_value_ = false;
};

// True when |list| (a Connection header value) names |name| (comma-separated, any case).
bool connection_lists(std::string_view list, std::string_view name);

// Appends "<hex>\r\n" for a chunk of |len| bytes.
void append_chunk_header(std::string& out, size_t len);
inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

// Standard reason phrase for |status| ("OK", "Not Found", ...; "Unknown" otherwise).
std::string_view reason_phrase(int status);

// Redacts the values of credential-bearing query parameters (SAS: sig, se, st, sp, skoid,
// sktid, skt, ske, sks, skv, saoid, suoid, scid, sr, srt, ss, spr, sv, sdd, signature,
// code, client_secret, token, access_token; any name containing "sig" or "token" too) so the
// path can be logged: "/c/b?sv=2021&sig=abc" -> "/c/b?sv=2021&sig=REDACTED".
std::string redact_query(std::string_view path_and_query);

// Removes Shared Access Signature parameters from a query string (Storage routes under
// inbound_authorization "replace": a half-migrated app may still append a SAS). Returns the
// path with the remaining query (no trailing '?').
std::string strip_sas_params(std::string_view path_and_query);

// A random version-4 UUID in canonical lower-case text form.
std::string new_uuid();

// Storage x-ms-version handling (interface.md; azure-services.md §2.1): the minimum version that
// accepts bearer tokens for the upstream's Storage service, and the version miproxy raises a
// missing or older one to.
inline constexpr std::string_view kStorageBearerVersion = "2024-11-04";
std::string_view storage_min_version(std::string_view upstream_host);
// The x-ms-version to send: |client| when it is at least the minimum, else kStorageBearerVersion.
std::string_view storage_version_to_send(std::string_view upstream_host, std::string_view client);

}  // namespace miproxy::proxy
