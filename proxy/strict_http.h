#pragma once
// A strict RFC 9112 reading of the request stream of one client connection, in front of llhttp.
// llhttp 8.1 (what Debian ships) is lenient where a front proxy may not be: it takes any two
// bytes as the CRLF after chunk data, a bare CR as a line end, names with a space inside, a
// request line with two spaces. Two readers that disagree on where a request ends let a client
// smuggle a request past the front proxy, so every byte a client sends goes through this checker
// first, once and in order, and only the prefix it accepts reaches llhttp.
//
// The checker tracks message boundaries itself (request line, field lines, then a chunked body
// when a Transfer-Encoding field is present, else a Content-Length body, else none; then the
// next pipelined message) in constant memory: a state enum and a few counters. It leaves to
// ClientConn::framing_problem what llhttp already reports at the end of a head (a coding other
// than chunked, Transfer-Encoding with Content-Length, two of either, Transfer-Encoding in
// HTTP/1.0), so whenever both accept a message they read the same boundaries. The differential
// corpus in tests/unit/proxy/strict_http_test.cc and the fuzz target fuzz_strict_http pin that.
// Pure: no I/O, no allocation.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace miproxy::proxy {

class StrictRequestReader {
 public:
  // What a run of accepted bytes is, for an observer (tests and the fuzz target; the proxy runs
  // without one). Head parts come a byte at a time, body data in runs; MESSAGE_END has no bytes.
  enum class Part : uint8_t {
    METHOD,
    TARGET,
    VERSION,       // "HTTP/1.x"
    FIELD_NAME,    // also trailer field names (after the body)
    FIELD_VALUE,   // as sent, optional whitespace included
    FIELD_END,     // no bytes: the field line ended
    HEAD_END,      // no bytes: the request head ended
    BODY,          // content: Content-Length bytes or chunk data
    MESSAGE_END,
  };
  using Observer = void (*)(void* ctx, Part part, const char* at, size_t len);

  // Feeds the next |len| bytes of the stream. Returns how many of them are acceptable: |len|,
  // or, at the first byte a strict reader must refuse, the number of bytes before it; from then
  // on the reader stays failed and accepts nothing.
  size_t feed(const char* data, size_t len);

  bool failed() const { return reason_ != nullptr; }
  // Why the stream was refused (a static string), or nullptr.
  const char* reason() const { return reason_; }
  // Requests read to their end so far; while failed(), the index of the refused one.
  uint64_t messages_done() const { return messages_done_; }
  // True when the current (or refused) request's method is HEAD.
  bool head_request() const { return head_request_; }
  // True between messages (nothing of a next request seen but empty lines).
  bool between_messages() const { return state_ == State::START || state_ == State::START_LF; }
  void set_observer(Observer observer, void* ctx) {
    observer_ = observer;
    observer_ctx_ = ctx;
  }

 private:
  enum class State : uint8_t {
    START,             // before a request line (empty lines are skipped, RFC 9112 §2.2)
    START_LF,          // CR of an empty line seen
    METHOD,
    TARGET_START,
    TARGET,
    VERSION,
    REQUEST_LINE_LF,
    FIELD_START,       // start of a field line or of the final CRLF (head or trailers)
    FIELD_NAME,
    FIELD_VALUE,
    FIELD_LF,
    HEAD_LF,
    BODY,              // Content-Length bytes
    CHUNK_SIZE_START,
    CHUNK_SIZE,
    CHUNK_SIZE_WS,     // whitespace after the size: only an extension may follow
    CHUNK_EXT,
    CHUNK_SIZE_LF,
    CHUNK_DATA,
    CHUNK_DATA_CR,
    CHUNK_DATA_LF,
  };
  // What the field being read is, found while its name streams in.
  enum class Name : uint8_t { OTHER, CONTENT_LENGTH, TRANSFER_ENCODING };

  size_t fail(const char* reason, size_t at);
  void head_complete();
  void message_complete();
  const char* field_value_byte(unsigned char c);  // why |c| is refused, or nullptr
  void note(Part part, const char* at, size_t len) {
    if (observer_ != nullptr) [[unlikely]] {
      observer_(observer_ctx_, part, at, len);
    }
  }

  State state_ = State::START;
  const char* reason_ = nullptr;
  bool in_trailers_ = false;
  bool head_request_ = false;
  bool chunked_ = false;          // a Transfer-Encoding field was seen
  bool has_length_ = false;       // a Content-Length field was seen
  Name name_ = Name::OTHER;
  uint8_t name_pos_ = 0;          // bytes of the name matched against the known names
  bool name_other_ = false;       // the name is none of them
  uint8_t length_state_ = 0;      // Content-Length value: 0 before, 1 in, 2 after the digits
  uint8_t count_ = 0;             // method/version bytes, chunk-size digits
  uint64_t remaining_ = 0;        // Content-Length or chunk bytes still to come
  uint64_t messages_done_ = 0;
  Observer observer_ = nullptr;
  void* observer_ctx_ = nullptr;
};

// Why |authority| (a Host field value, or the authority of an absolute-form request target) is
// not uri-host [":" port] as RFC 3986 §3.2.2 writes it (reg-name, IPv4address or an IPv6
// IP-literal; no userinfo, no path, no whitespace; a port of at most 65535): nullptr when it is.
// An empty value is allowed (RFC 9110 §7.2: a client sends an empty Host when the target URI
// has no authority).
const char* authority_problem(std::string_view authority);

}  // namespace miproxy::proxy
