#include "auth/expiry.h"

#include <algorithm>
#include <ctime>
#include <limits>

namespace miproxy::auth {
namespace {

constexpr int64_t kMaxRelative = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxAbsolute = kMaxPosixSeconds;

// A tiny left-to-right reader for fixed date layouts.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}
  bool done() const { return pos_ == text_.size(); }
  char peek() const { return done() ? '\0' : text_[pos_]; }
  bool eat(char c) {
    if (peek() == c && !done()) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool eat(std::string_view word) {
    if (text_.substr(pos_, word.size()) == word) {
      pos_ += word.size();
      return true;
    }
    return false;
  }
  // Between |min| and |max| digits; nullopt otherwise.
  std::optional<int> digits(size_t min, size_t max) {
    size_t start = pos_;
    int value = 0;
    while (pos_ < text_.size() && pos_ - start < max && text_[pos_] >= '0' && text_[pos_] <= '9') {
      value = value * 10 + (text_[pos_] - '0');
      ++pos_;
    }
    if (pos_ - start < min) {
      return std::nullopt;
    }
    return value;
  }
  size_t skip_digits() {
    size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      ++pos_;
    }
    return pos_ - start;
  }

 private:
  std::string_view text_;
  size_t pos_ = 0;
};

// "HH:MM:SS" (the hour with |min_hour_digits| to 2 digits), without any fraction.
struct TimeOfDay {
  int hour, minute, second;
};
std::optional<TimeOfDay> read_time(Cursor& c, size_t min_hour_digits = 2) {
  auto hour = c.digits(min_hour_digits, 2);
  if (!hour || !c.eat(':')) {
    return std::nullopt;
  }
  auto minute = c.digits(2, 2);
  if (!minute || !c.eat(':')) {
    return std::nullopt;
  }
  auto second = c.digits(2, 2);
  if (!second) {
    return std::nullopt;
  }
  return TimeOfDay{*hour, *minute, *second};
}

std::optional<Clock::time_point> make_utc(int year, int month, int day, int hour, int minute,
                                          int second, int offset_minutes) {
  if (year < 1970 || year > 9999 || hour > 23 || minute > 59 || second > 59) {
    return std::nullopt;
  }
  std::chrono::year_month_day ymd{std::chrono::year{year},
                                  std::chrono::month{static_cast<unsigned>(month)},
                                  std::chrono::day{static_cast<unsigned>(day)}};
  if (!ymd.ok()) {
    return std::nullopt;
  }
  auto tp = std::chrono::sys_days{ymd} + std::chrono::hours{hour} + std::chrono::minutes{minute} +
            std::chrono::seconds{second} - std::chrono::minutes{offset_minutes};
  int64_t secs = std::chrono::duration_cast<std::chrono::seconds>(tp.time_since_epoch()).count();
  if (secs < 0 || secs > kMaxAbsolute) {
    return std::nullopt;
  }
  return Clock::time_point{std::chrono::seconds{secs}};
}

// "+hh:mm", "-hh:mm", "Z"/"z", or nothing (UTC). Returns the offset in minutes east of UTC.
std::optional<int> read_offset(Cursor& c, bool allow_none) {
  if (c.done()) {
    return allow_none ? std::optional<int>(0) : std::nullopt;
  }
  if (c.eat('Z') || c.eat('z')) {
    return 0;
  }
  int sign = 0;
  if (c.eat('+')) {
    sign = 1;
  } else if (c.eat('-')) {
    sign = -1;
  } else {
    return std::nullopt;
  }
  auto hh = c.digits(2, 2);
  if (!hh || !c.eat(':')) {
    return std::nullopt;
  }
  auto mm = c.digits(2, 2);
  if (!mm || *hh > 23 || *mm > 59) {
    return std::nullopt;
  }
  return sign * (*hh * 60 + *mm);
}

// 2024-10-18T19:51:37.0000000+00:00, 2024-10-18 19:51:37, 2024-10-18T19:51:37Z
std::optional<Clock::time_point> parse_rfc3339(std::string_view text) {
  Cursor c(text);
  auto year = c.digits(4, 4);
  if (!year || !c.eat('-')) {
    return std::nullopt;
  }
  auto month = c.digits(2, 2);
  if (!month || !c.eat('-')) {
    return std::nullopt;
  }
  auto day = c.digits(2, 2);
  if (!day || !(c.eat('T') || c.eat('t') || c.eat(' '))) {
    return std::nullopt;
  }
  auto time = read_time(c);
  if (!time) {
    return std::nullopt;
  }
  auto hour = std::optional<int>(time->hour);
  auto minute = std::optional<int>(time->minute);
  auto second = std::optional<int>(time->second);
  if (c.eat('.') && c.skip_digits() == 0) {
    return std::nullopt;
  }
  auto offset = read_offset(c, true);
  if (!offset || !c.done()) {
    return std::nullopt;
  }
  return make_utc(*year, *month, *day, *hour, *minute, *second, *offset);
}

// 11/05/2021 15:18:31 +00:00 and 1/10/2020 8:01:28 AM +00:00
std::optional<Clock::time_point> parse_us_date(std::string_view text) {
  Cursor c(text);
  auto month = c.digits(1, 2);
  if (!month || !c.eat('/')) {
    return std::nullopt;
  }
  auto day = c.digits(1, 2);
  if (!day || !c.eat('/')) {
    return std::nullopt;
  }
  auto year = c.digits(4, 4);
  if (!year || !c.eat(' ')) {
    return std::nullopt;
  }
  auto time = read_time(c, 1);
  if (!time) {
    return std::nullopt;
  }
  auto hour = std::optional<int>(time->hour);
  auto minute = std::optional<int>(time->minute);
  auto second = std::optional<int>(time->second);
  int h = *hour;
  if (c.eat(" AM") || c.eat(" am")) {
    if (h < 1 || h > 12) {
      return std::nullopt;
    }
    h = h == 12 ? 0 : h;
  } else if (c.eat(" PM") || c.eat(" pm")) {
    if (h < 1 || h > 12) {
      return std::nullopt;
    }
    h = h == 12 ? 12 : h + 12;
  }
  int offset = 0;
  if (c.eat(' ')) {
    auto parsed = read_offset(c, false);
    if (!parsed) {
      return std::nullopt;
    }
    offset = *parsed;
  }
  if (!c.done()) {
    return std::nullopt;
  }
  return make_utc(*year, *month, *day, h, *minute, *second, offset);
}

}  // namespace

std::optional<int64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 18) {
    return std::nullopt;
  }
  if (text.size() > 1 && text[0] == '0') {
    return std::nullopt;
  }
  int64_t value = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') {
      return std::nullopt;
    }
    value = value * 10 + (ch - '0');
  }
  return value;
}

std::optional<std::chrono::seconds> parse_relative_seconds(const nlohmann::json& value) {
  std::optional<int64_t> n;
  if (value.is_number_integer()) {
    int64_t v = value.get<int64_t>();
    if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(kMaxRelative)) {
      return std::nullopt;
    }
    n = v;
  } else if (value.is_string()) {
    n = parse_decimal(value.get_ref<const std::string&>());
  }
  if (!n || *n < 0 || *n > kMaxRelative) {
    return std::nullopt;
  }
  return std::chrono::seconds{*n};
}

std::optional<Clock::time_point> parse_expires_on(const nlohmann::json& value) {
  std::optional<int64_t> n;
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(kMaxAbsolute)) {
      return std::nullopt;
    }
    n = value.get<int64_t>();
  } else if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    n = parse_decimal(text);
    if (!n) {
      return parse_date_text(text);
    }
  } else {
    return std::nullopt;
  }
  if (!n || *n < 0 || *n > kMaxAbsolute) {
    return std::nullopt;
  }
  return Clock::time_point{std::chrono::seconds{*n}};
}

std::optional<Clock::time_point> parse_date_text(std::string_view text) {
  if (auto t = parse_rfc3339(text)) {
    return t;
  }
  if (auto t = parse_us_date(text)) {
    return t;
  }
  return parse_rfc1123(text);
}

std::optional<Clock::time_point> parse_rfc1123(std::string_view text) {
  static constexpr std::string_view kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  Cursor c(text);
  bool day_ok = false;
  for (auto name : kDays) {
    if (c.eat(name)) {
      day_ok = true;
      break;
    }
  }
  if (!day_ok || !c.eat(", ")) {
    return std::nullopt;
  }
  auto day = c.digits(2, 2);
  if (!day || !c.eat(' ')) {
    return std::nullopt;
  }
  int month = 0;
  for (int i = 0; i < 12; ++i) {
    if (c.eat(kMonths[i])) {
      month = i + 1;
      break;
    }
  }
  if (month == 0 || !c.eat(' ')) {
    return std::nullopt;
  }
  auto year = c.digits(4, 4);
  if (!year || !c.eat(' ')) {
    return std::nullopt;
  }
  auto hour = c.digits(2, 2);
  if (!hour || !c.eat(':')) {
    return std::nullopt;
  }
  auto minute = c.digits(2, 2);
  if (!minute || !c.eat(':')) {
    return std::nullopt;
  }
  auto second = c.digits(2, 2);
  if (!second || !(c.eat(" GMT") || c.eat(" UTC")) || !c.done()) {
    return std::nullopt;
  }
  return make_utc(*year, month, *day, *hour, *minute, *second, 0);
}

std::optional<Clock::time_point> parse_cli_local_time(std::string_view text) {
  Cursor c(text);
  auto year = c.digits(4, 4);
  if (!year || !c.eat('-')) {
    return std::nullopt;
  }
  auto month = c.digits(2, 2);
  if (!month || !c.eat('-')) {
    return std::nullopt;
  }
  auto day = c.digits(2, 2);
  if (!day || !c.eat(' ')) {
    return std::nullopt;
  }
  auto time = read_time(c);
  if (!time) {
    return std::nullopt;
  }
  auto hour = std::optional<int>(time->hour);
  auto minute = std::optional<int>(time->minute);
  auto second = std::optional<int>(time->second);
  if (c.eat('.') && c.skip_digits() == 0) {
    return std::nullopt;
  }
  if (!c.done()) {
    return std::nullopt;
  }
  // Validate the calendar date and ranges first (mktime would normalise 2026-02-31).
  if (!make_utc(*year, *month, *day, *hour, *minute, *second, 0)) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *month - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *minute;
  tm.tm_sec = *second;
  tm.tm_isdst = -1;
  std::time_t t = std::mktime(&tm);
  if (t == static_cast<std::time_t>(-1) || t < 0 || t > kMaxAbsolute) {
    return std::nullopt;
  }
  return Clock::time_point{std::chrono::seconds{static_cast<int64_t>(t)}};
}

std::expected<Lifetime, std::string> parse_lifetime(const nlohmann::json& body,
                                                    Clock::time_point sent,
                                                    Clock::time_point received) {
  if (!body.is_object()) {
    return std::unexpected(std::string("response is not a JSON object"));
  }
  Lifetime out;
  if (auto it = body.find("refresh_in"); it != body.end() && !it->is_null()) {
    if (auto secs = parse_relative_seconds(*it)) {
      out.refresh_at = received + *secs;
    }
  }
  if (auto it = body.find("expires_in"); it != body.end() && !it->is_null()) {
    if (auto secs = parse_relative_seconds(*it)) {
      out.expires_at = sent + *secs;
      return out;
    }
  }
  if (auto it = body.find("expires_on"); it != body.end() && !it->is_null()) {
    if (auto when = parse_expires_on(*it)) {
      out.expires_at = *when;
      return out;
    }
  }
  bool has_in = body.contains("expires_in");
  bool has_on = body.contains("expires_on");
  if (!has_in && !has_on) {
    return std::unexpected(std::string("response has neither expires_in nor expires_on"));
  }
  return std::unexpected(std::string("response has an unparseable ") +
                         (has_in && has_on ? "expires_in and expires_on"
                          : has_in         ? "expires_in"
                                           : "expires_on"));
}

std::optional<std::chrono::seconds> parse_retry_after(std::string_view value,
                                                      Clock::time_point now) {
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  if (auto n = parse_decimal(value)) {
    if (*n > kMaxRelative) {
      return std::nullopt;
    }
    return std::chrono::seconds{*n};
  }
  if (auto when = parse_rfc1123(value)) {
    if (*when <= now) {
      return std::chrono::seconds{0};
    }
    return std::chrono::ceil<std::chrono::seconds>(*when - now);
  }
  return std::nullopt;
}

}  // namespace miproxy::auth
