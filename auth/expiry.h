#pragma once
// Token lifetimes as the endpoints send them (token-sources.md §12), and Retry-After.
//
// Accepted, in this order: refresh_in (seconds), expires_in (JSON integer or decimal string,
// counted from the moment the request was sent), expires_on as POSIX seconds (integer or
// decimal string), RFC 3339 (any number of fractional digits, "Z" or an offset, or no zone =
// UTC, so "yyyy-MM-dd HH:mm:ss" is covered), "M/d/yyyy h:mm:ss [AM|PM] [+hh:mm]" (App Service
// 2017) and RFC 1123. The Azure CLI's `expiresOn` is local time and has its own parser.
// Limits from the C++ SDK: relative values 0..2^31-1 s, absolute instants up to year 9999 (in
// effect April 2262, where Clock ends);
// negative numbers, signs, leading zeros and garbage are rejected. Nothing is ever guessed.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <expected>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "auth/token.h"

namespace miproxy::auth {

// The last POSIX second an instant may have: year 9999 as the C++ SDK allows, but in effect
// April 2262, where Clock (system_clock in nanoseconds) ends. Later instants are refused, since
// converting them to a Clock::time_point would overflow.
inline constexpr int64_t kMaxPosixSeconds = std::min<int64_t>(
    253402300799,
    std::chrono::duration_cast<std::chrono::seconds>(Clock::duration::max()).count() - 1);

// A non-negative decimal integer that round-trips: digits only, no sign, no leading zero
// (except "0"), at most 18 digits.
std::optional<int64_t> parse_decimal(std::string_view text);

// expires_in / refresh_in: JSON integer or decimal string, 0..2^31-1 seconds.
std::optional<std::chrono::seconds> parse_relative_seconds(const nlohmann::json& value);

// expires_on: JSON integer or decimal string of POSIX seconds, or one of the date strings above.
std::optional<Clock::time_point> parse_expires_on(const nlohmann::json& value);

// The date-string forms only (RFC 3339, App Service 2017 forms, RFC 1123), all UTC-based.
std::optional<Clock::time_point> parse_date_text(std::string_view text);
// "Sun, 06 Nov 1994 08:49:37 GMT".
std::optional<Clock::time_point> parse_rfc1123(std::string_view text);
// Azure CLI `expiresOn`: "YYYY-MM-DD HH:MM:SS[.ffffff]" in the machine's LOCAL time zone (the
// TZ environment), resolved with mktime (DST ambiguity: mktime decides).
std::optional<Clock::time_point> parse_cli_local_time(std::string_view text);

struct Lifetime {
  Clock::time_point expires_at;
  std::optional<Clock::time_point> refresh_at;  // from refresh_in
};

// Applies §12 to a token response object. |sent| is when the request went out (base of
// expires_in), |received| when the answer came (base of refresh_in). Error text names the
// fields that were missing or unparseable, never their neighbours' values.
std::expected<Lifetime, std::string> parse_lifetime(const nlohmann::json& body,
                                                    Clock::time_point sent,
                                                    Clock::time_point received);

// Retry-After: delta seconds or an HTTP-date (RFC 1123); a date in the past gives 0 s.
std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      Clock::time_point now);

}  // namespace miproxy::auth
