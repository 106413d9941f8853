#pragma once
// JSON string escaping that never fails: every JSON text miproxy writes (errors, logs, readiness,
// doctor) carries bytes from outside (Host and path from a client, challenge text from an
// upstream, error bodies from a token endpoint). RFC 8259 wants UTF-8: valid sequences pass
// through, each byte of an invalid one becomes U+FFFD, and control bytes are escaped.

#include <string>
#include <string_view>

namespace miproxy {

// Appends |s| to |out| as a quoted JSON string.
void append_json_string(std::string& out, std::string_view s);

// Length of the valid UTF-8 sequence at the start of |s| (1 to 4), or 0 when the first byte does
// not start one (stray continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated).
size_t utf8_sequence_length(std::string_view s);

// |s| with every invalid UTF-8 byte replaced by U+FFFD (for text handed to a JSON library).
std::string to_valid_utf8(std::string_view s);

}  // namespace miproxy
