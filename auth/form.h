#pragma once
// URL and form encoding for token requests (token-sources.md §0.4: the `resource` value is
// URL-encoded in query strings; form bodies of §6-§9 are application/x-www-form-urlencoded).

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace miproxy::auth {

using FormFields = std::vector<std::pair<std::string, std::string>>;

// Percent-encodes every byte except the RFC 3986 unreserved set (ALPHA DIGIT - . _ ~), so
// "https://vault.azure.net" becomes "https%3A%2F%2Fvault.azure.net". Space becomes "%20".
std::string url_encode(std::string_view text);

// "k1=v1&k2=v2" with keys and values url_encode()d, in the given order.
std::string form_encode(const FormFields& fields);

// Reverses url_encode; with |plus_is_space| a '+' decodes to ' ' (form bodies). nullopt on a
// malformed escape ("%4", "%zz").
std::optional<std::string> url_decode(std::string_view text, bool plus_is_space = true);

// Splits "a=1&b=2" into decoded pairs, keeping order and duplicates (so a fake endpoint can
// reject duplicate keys). nullopt when an escape is malformed.
std::optional<FormFields> parse_form(std::string_view text);

// Removes trailing spaces, tabs, CR and LF (secret files, token files end in a newline).
std::string trim_trailing_whitespace(std::string text);
// Removes leading and trailing whitespace.
std::string trim_whitespace(std::string_view text);

}  // namespace miproxy::auth
