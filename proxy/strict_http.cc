#include "proxy/strict_http.h"

#include <arpa/inet.h>

#include <cstring>

namespace miproxy::proxy {
namespace {

// tchar (RFC 9110 §5.6.2).
constexpr bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != 0;
}

// Bytes of a request-target: visible ASCII and obs-text; no whitespace, no controls.
constexpr bool is_target_byte(unsigned char c) { return c > 0x20 && c != 0x7f; }

int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

constexpr std::string_view kContentLength = "content-length";
constexpr std::string_view kTransferEncoding = "transfer-encoding";
constexpr std::string_view kVersionPrefix = "HTTP/1.";
constexpr uint64_t kMaxLength = uint64_t{1} << 62;
constexpr uint8_t kMaxChunkSizeDigits = 16;

const char* const kBareCr = "bare CR (not followed by LF)";
const char* const kBareLf = "bare LF as a line end (only CRLF is accepted)";

}  // namespace

size_t StrictRequestReader::fail(const char* reason, size_t at) {
  reason_ = reason;
  return at;
}

void StrictRequestReader::head_complete() {
  note(Part::HEAD_END, nullptr, 0);
  if (in_trailers_) {
    message_complete();
  } else if (chunked_) {
    state_ = State::CHUNK_SIZE_START;
  } else if (has_length_ && remaining_ > 0) {
    state_ = State::BODY;
  } else {
    message_complete();
  }
}

void StrictRequestReader::message_complete() {
  note(Part::MESSAGE_END, nullptr, 0);
  ++messages_done_;
  state_ = State::START;
  in_trailers_ = false;
  head_request_ = false;
  chunked_ = false;
  has_length_ = false;
  remaining_ = 0;
  count_ = 0;
}

const char* StrictRequestReader::field_value_byte(unsigned char c) {
  // field-value: VCHAR, obs-text, SP and HTAB; no other control byte (RFC 9110 §5.5).
  if (c < 0x20 ? c != '\t' : c == 0x7f) return "control byte in a field value";
  if (name_ != Name::CONTENT_LENGTH) return nullptr;
  // Content-Length = 1*DIGIT, with optional whitespace around it.
  if (c == ' ' || c == '\t') {
    if (length_state_ == 1) length_state_ = 2;
    return nullptr;
  }
  if (c < '0' || c > '9' || length_state_ == 2) return "invalid Content-Length";
  if (length_state_ == 0) {
    length_state_ = 1;
    remaining_ = 0;
  }
  if (remaining_ > kMaxLength / 10) return "Content-Length too large";
  remaining_ = remaining_ * 10 + (c - '0');
  return remaining_ <= kMaxLength ? nullptr : "Content-Length too large";
}

size_t StrictRequestReader::feed(const char* data, size_t len) {
  if (reason_ != nullptr) return 0;
  for (size_t i = 0; i < len; ++i) {
    auto c = static_cast<unsigned char>(data[i]);
    switch (state_) {
      case State::START:
        if (c == '\r') {
          state_ = State::START_LF;
        } else if (is_tchar(c)) {
          state_ = State::METHOD;
          count_ = 1;
          head_request_ = c == 'H';
          note(Part::METHOD, data + i, 1);
        } else {
          return fail(c == '\n' ? kBareLf : "invalid request line", i);
        }
        break;
      case State::START_LF:
        if (c != '\n') return fail(kBareCr, i);
        state_ = State::START;
        break;
      case State::METHOD:
        if (c == ' ') {
          head_request_ = head_request_ && count_ == 4;
          state_ = State::TARGET_START;
        } else if (is_tchar(c)) {
          head_request_ = head_request_ && count_ < 4 && c == "HEAD"[count_];
          count_ = count_ < 255 ? count_ + 1 : count_;
          note(Part::METHOD, data + i, 1);
        } else {
          head_request_ = false;  // "HEA\xe5" is no HEAD: its 400 carries a body
          return fail("invalid request method", i);
        }
        break;
      case State::TARGET_START:
        if (!is_target_byte(c)) {
          return fail(c == ' ' ? "request line with more than one space between its parts"
                               : "invalid request target",
                      i);
        }
        state_ = State::TARGET;
        note(Part::TARGET, data + i, 1);
        break;
      case State::TARGET:
        if (c == ' ') {
          state_ = State::VERSION;
          count_ = 0;
        } else if (is_target_byte(c)) {
          note(Part::TARGET, data + i, 1);
        } else {
          return fail(c == '\r' || c == '\n' ? "request line without an HTTP version"
                                             : "invalid request target",
                      i);
        }
        break;
      case State::VERSION:
        if (count_ < kVersionPrefix.size()) {
          if (c != static_cast<unsigned char>(kVersionPrefix[count_])) {
            return fail(c == ' ' ? "request line with more than one space between its parts"
                                 : "unsupported HTTP version (HTTP/1.0 or HTTP/1.1 expected)",
                        i);
          }
        } else if (count_ == kVersionPrefix.size()) {
          if (c != '0' && c != '1') {
            return fail("unsupported HTTP version (HTTP/1.0 or HTTP/1.1 expected)", i);
          }
        } else {
          if (c != '\r') {
            return fail(c == '\n' ? kBareLf : "request line does not end after the version", i);
          }
          state_ = State::REQUEST_LINE_LF;
          break;
        }
        ++count_;
        note(Part::VERSION, data + i, 1);
        break;
      case State::REQUEST_LINE_LF:
        if (c != '\n') return fail(kBareCr, i);
        state_ = State::FIELD_START;
        break;
      case State::FIELD_START:
        if (c == '\r') {
          state_ = State::HEAD_LF;
        } else if (is_tchar(c)) {
          state_ = State::FIELD_NAME;
          c = lower(c);
          name_ = c == 'c' ? Name::CONTENT_LENGTH : c == 't' ? Name::TRANSFER_ENCODING : Name::OTHER;
          name_other_ = name_ == Name::OTHER;
          name_pos_ = 1;
          note(Part::FIELD_NAME, data + i, 1);
        } else if (c == ' ' || c == '\t') {
          return fail("obs-fold or whitespace before a field name", i);
        } else if (c == ':') {
          return fail("empty field name", i);
        } else {
          return fail(c == '\n' ? kBareLf : "invalid byte in a field name", i);
        }
        break;
      case State::FIELD_NAME:
        if (is_tchar(c)) {
          if (!name_other_) {
            std::string_view known =
                name_ == Name::CONTENT_LENGTH ? kContentLength : kTransferEncoding;
            if (name_pos_ >= known.size() || lower(c) != static_cast<unsigned char>(known[name_pos_])) {
              name_other_ = true;
            } else {
              ++name_pos_;
            }
          }
          note(Part::FIELD_NAME, data + i, 1);
          break;
        }
        if (c == ' ' || c == '\t') return fail("whitespace in or after a field name", i);
        if (c != ':') return fail("invalid byte in a field name", i);
        if (name_other_ || name_pos_ != (name_ == Name::CONTENT_LENGTH ? kContentLength.size()
                                                                       : kTransferEncoding.size())) {
          name_ = Name::OTHER;
        }
        if (name_ != Name::OTHER && in_trailers_) {
          return fail("Content-Length or Transfer-Encoding in the trailer section", i);
        }
        if (name_ == Name::TRANSFER_ENCODING) chunked_ = true;
        if (name_ == Name::CONTENT_LENGTH) {
          has_length_ = true;
          length_state_ = 0;
        }
        state_ = State::FIELD_VALUE;
        break;
      case State::FIELD_VALUE:
        if (c == '\r') {
          if (name_ == Name::CONTENT_LENGTH && length_state_ == 0) {
            return fail("invalid Content-Length", i);
          }
          state_ = State::FIELD_LF;
          break;
        }
        if (c == '\n') return fail(kBareLf, i);
        if (const char* problem = field_value_byte(c)) return fail(problem, i);
        note(Part::FIELD_VALUE, data + i, 1);
        break;
      case State::FIELD_LF:
        if (c != '\n') return fail(kBareCr, i);
        note(Part::FIELD_END, nullptr, 0);
        state_ = State::FIELD_START;
        break;
      case State::HEAD_LF:
        if (c != '\n') return fail(kBareCr, i);
        head_complete();
        break;
      case State::BODY: {
        size_t n = len - i < remaining_ ? len - i : static_cast<size_t>(remaining_);
        note(Part::BODY, data + i, n);
        remaining_ -= n;
        i += n - 1;
        if (remaining_ == 0) message_complete();
        break;
      }
      case State::CHUNK_SIZE_START:
        if (hex_value(c) < 0) {
          return fail(c == '\n' ? kBareLf : "chunk size without hex digits", i);
        }
        remaining_ = static_cast<uint64_t>(hex_value(c));
        count_ = 1;
        state_ = State::CHUNK_SIZE;
        break;
      case State::CHUNK_SIZE:
        if (int v = hex_value(c); v >= 0) {
          if (++count_ > kMaxChunkSizeDigits || remaining_ > (kMaxLength >> 4)) {
            return fail("chunk size too large", i);
          }
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(v);
        } else if (c == '\r') {
          state_ = State::CHUNK_SIZE_LF;
        } else if (c == ';') {
          state_ = State::CHUNK_EXT;
        } else if (c == ' ' || c == '\t') {
          state_ = State::CHUNK_SIZE_WS;
        } else {
          return fail(c == '\n' ? kBareLf : "invalid byte in a chunk size", i);
        }
        break;
      case State::CHUNK_SIZE_WS:
        if (c == ';') {
          state_ = State::CHUNK_EXT;
        } else if (c != ' ' && c != '\t') {
          return fail("invalid byte after a chunk size", i);
        }
        break;
      case State::CHUNK_EXT:
        // chunk-ext bytes are never forwarded as framing; refuse what could end or fold a line.
        if (c == '\r') {
          state_ = State::CHUNK_SIZE_LF;
        } else if (c < 0x20 ? c != '\t' : c == 0x7f) {
          return fail(c == '\n' ? kBareLf : "control byte in a chunk extension", i);
        }
        break;
      case State::CHUNK_SIZE_LF:
        if (c != '\n') return fail(kBareCr, i);
        if (remaining_ == 0) {
          in_trailers_ = true;
          state_ = State::FIELD_START;
        } else {
          state_ = State::CHUNK_DATA;
        }
        break;
      case State::CHUNK_DATA: {
        size_t n = len - i < remaining_ ? len - i : static_cast<size_t>(remaining_);
        note(Part::BODY, data + i, n);
        remaining_ -= n;
        i += n - 1;
        if (remaining_ == 0) state_ = State::CHUNK_DATA_CR;
        break;
      }
      case State::CHUNK_DATA_CR:
        if (c != '\r') return fail("chunk data not followed by CRLF", i);
        state_ = State::CHUNK_DATA_LF;
        break;
      case State::CHUNK_DATA_LF:
        if (c != '\n') return fail("chunk data not followed by CRLF", i);
        state_ = State::CHUNK_SIZE_START;
        break;
    }
  }
  return len;
}

const char* authority_problem(std::string_view authority) {
  if (authority.empty()) return nullptr;
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return "unterminated IP literal";
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return "bytes after an IP literal";
    if (!rest.empty()) port = rest.substr(1);
    char buf[INET6_ADDRSTRLEN + 1];
    in6_addr addr;
    if (host.empty() || host.size() >= sizeof buf) return "invalid IPv6 address";
    // Hex digits, ':' and '.' only: inet_pton would stop at a NUL ("[::1\0\t]" read as ::1).
    for (char c : host) {
      if (hex_value(c) < 0 && c != ':' && c != '.') return "invalid IPv6 address";
    }
    std::memcpy(buf, host.data(), host.size());
    buf[host.size()] = 0;
    if (inet_pton(AF_INET6, buf, &addr) != 1) return "invalid IPv6 address";
  } else {
    size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.find(':') != std::string_view::npos) return "more than one ':'";
    }
    if (host.empty()) return "empty host";
    // reg-name = *( unreserved / pct-encoded / sub-delims ); IPv4address is one.
    for (size_t i = 0; i < host.size(); ++i) {
      auto c = static_cast<unsigned char>(host[i]);
      if (c == '%') {
        if (i + 2 >= host.size() || hex_value(host[i + 1]) < 0 || hex_value(host[i + 2]) < 0) {
          return "invalid percent-encoding";
        }
        i += 2;
        continue;
      }
      bool unreserved = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                        (c >= 'A' && c <= 'Z') || c == '-' || c == '.' || c == '_' || c == '~';
      bool sub_delim = c != 0 && std::strchr("!$&'()*+,;=", c) != nullptr;
      if (!unreserved && !sub_delim) {
        return c == '@' ? "userinfo is not allowed" : "invalid byte in the host";
      }
    }
  }
  if (port.size() > 5) return "port out of range";
  uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return "invalid port";
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) return "port out of range";
  return nullptr;
}

}  // namespace miproxy::proxy
