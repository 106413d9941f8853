#include "auth/expiry.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <ctime>

using namespace miproxy::auth;
using nlohmann::json;
using std::chrono::seconds;

namespace {

int64_t posix(const std::optional<Clock::time_point>& t) {
  REQUIRE(t.has_value());
  return std::chrono::duration_cast<seconds>(t->time_since_epoch()).count();
}

// Sets TZ for the scope and restores it afterwards.
class ScopedTz {
 public:
  explicit ScopedTz(const char* tz) {
    const char* old = std::getenv("TZ");
    had_ = old != nullptr;
    old_ = old ? old : "";
    ::setenv("TZ", tz, 1);
    ::tzset();
  }
  ~ScopedTz() {
    if (had_) {
      ::setenv("TZ", old_.c_str(), 1);
    } else {
      ::unsetenv("TZ");
    }
    ::tzset();
  }

 private:
  bool had_ = false;
  std::string old_;
};

const Clock::time_point kSent{seconds{1767225600}};  // 2026-01-01T00:00:00Z
const Clock::time_point kReceived{seconds{1767225602}};

}  // namespace

TEST_CASE("parse_decimal accepts only round-tripping non-negative integers", "[auth]") {
  CHECK(parse_decimal("0") == 0);
  CHECK(parse_decimal("3599") == 3599);
  CHECK_FALSE(parse_decimal("").has_value());
  CHECK_FALSE(parse_decimal("-1").has_value());
  CHECK_FALSE(parse_decimal("+5").has_value());
  CHECK_FALSE(parse_decimal("0123").has_value());
  CHECK_FALSE(parse_decimal("12a").has_value());
  CHECK_FALSE(parse_decimal(" 12").has_value());
  CHECK_FALSE(parse_decimal("1234567890123456789").has_value());
}

TEST_CASE("relative seconds: integer or decimal string within 2^31-1", "[auth]") {
  CHECK(parse_relative_seconds(json(3599)) == seconds{3599});
  CHECK(parse_relative_seconds(json("86399")) == seconds{86399});
  CHECK(parse_relative_seconds(json(2147483647)) == seconds{2147483647});
  CHECK_FALSE(parse_relative_seconds(json(2147483648LL)).has_value());
  CHECK_FALSE(parse_relative_seconds(json(-1)).has_value());
  CHECK_FALSE(parse_relative_seconds(json("-1")).has_value());
  CHECK_FALSE(parse_relative_seconds(json(35.5)).has_value());
  CHECK_FALSE(parse_relative_seconds(json("soon")).has_value());
  CHECK_FALSE(parse_relative_seconds(json(nullptr)).has_value());
}

TEST_CASE("expires_on as POSIX seconds, integer or string", "[auth]") {
  CHECK(posix(parse_expires_on(json(1565244611))) == 1565244611);
  CHECK(posix(parse_expires_on(json("1586984735"))) == 1586984735);
  CHECK_FALSE(parse_expires_on(json(-5)).has_value());
  CHECK_FALSE(parse_expires_on(json("-5")).has_value());
  CHECK_FALSE(parse_expires_on(json(253402300800LL)).has_value());     // year 10000
  CHECK_FALSE(parse_expires_on(json(253402300799LL)).has_value());     // past Clock's range (2262)
  CHECK(posix(parse_expires_on(json(4102444800LL))) == 4102444800LL);  // 2100-01-01
  CHECK_FALSE(parse_expires_on(json("9999-12-31T23:59:59Z")).has_value());
}

TEST_CASE("expires_on as RFC 3339 with 7 fractional digits and offsets", "[auth]") {
  CHECK(posix(parse_expires_on(json("2024-10-18T19:51:37.0000000+00:00"))) == 1729281097);
  CHECK(posix(parse_expires_on(json("2024-10-18T19:51:37Z"))) == 1729281097);
  CHECK(posix(parse_expires_on(json("2024-10-18T21:51:37.5+02:00"))) == 1729281097);
  CHECK(posix(parse_expires_on(json("2024-10-18T14:51:37-05:00"))) == 1729281097);
  // yyyy-MM-dd HH:mm:ss (no zone: UTC)
  CHECK(posix(parse_expires_on(json("2024-10-18 19:51:37"))) == 1729281097);
  CHECK_FALSE(parse_expires_on(json("2024-10-18T19:51:37.+00:00")).has_value());
  CHECK_FALSE(parse_expires_on(json("2024-02-30T00:00:00Z")).has_value());
  CHECK_FALSE(parse_expires_on(json("2024-10-18T25:00:00Z")).has_value());
  CHECK_FALSE(parse_expires_on(json("2024-10-18T19:51:37+0000")).has_value());
}

TEST_CASE("expires_on in the App Service 2017 forms, 24 h and AM/PM", "[auth]") {
  CHECK(posix(parse_expires_on(json("11/05/2021 15:18:31 +00:00"))) == 1636125511);
  CHECK(posix(parse_expires_on(json("09/14/2017 00:00:00 +00:00"))) == 1505347200);
  CHECK(posix(parse_expires_on(json("1/10/2020 8:01:28 AM +00:00"))) == 1578643288);
  CHECK(posix(parse_expires_on(json("1/10/2020 8:01:28 PM +00:00"))) == 1578643288 + 12 * 3600);
  CHECK(posix(parse_expires_on(json("1/10/2020 12:01:28 AM +00:00"))) == 1578614488);
  CHECK(posix(parse_expires_on(json("1/10/2020 12:01:28 PM +00:00"))) == 1578657688);
  CHECK_FALSE(parse_expires_on(json("1/10/2020 13:01:28 PM +00:00")).has_value());
  CHECK_FALSE(parse_expires_on(json("13/10/2020 08:01:28 +00:00")).has_value());
}

TEST_CASE("expires_on and Retry-After in RFC 1123", "[auth]") {
  CHECK(posix(parse_expires_on(json("Sun, 06 Nov 1994 08:49:37 GMT"))) == 784111777);
  CHECK(posix(parse_rfc1123("Thu, 01 Jan 2026 00:00:30 GMT")) == 1767225630);
  CHECK_FALSE(parse_rfc1123("Sun, 06 Nov 1994 08:49:37").has_value());
  CHECK_FALSE(parse_rfc1123("Sunday, 06-Nov-94 08:49:37 GMT").has_value());
}

TEST_CASE("garbage expiry values are rejected", "[auth]") {
  for (const char* text : {"", "tomorrow", "1e9", "12:00", "2024-13-01T00:00:00Z", "0x10"}) {
    INFO(text);
    CHECK_FALSE(parse_expires_on(json(text)).has_value());
  }
  CHECK_FALSE(parse_expires_on(json(true)).has_value());
  CHECK_FALSE(parse_expires_on(json::object()).has_value());
}

TEST_CASE("Azure CLI expiresOn is local time", "[auth]") {
  {
    ScopedTz tz("UTC0");
    CHECK(posix(parse_cli_local_time("2026-01-01 12:34:56.000000")) == 1767270896);
    CHECK(posix(parse_cli_local_time("2026-01-01 12:34:56")) == 1767270896);
  }
  {
    ScopedTz tz("EST5");  // fixed UTC-5, no daylight saving
    CHECK(posix(parse_cli_local_time("2026-01-01 12:34:56.123456")) == 1767270896 + 5 * 3600);
  }
  CHECK_FALSE(parse_cli_local_time("2026-01-01T12:34:56").has_value());
  CHECK_FALSE(parse_cli_local_time("2026-02-31 12:34:56.000000").has_value());
  CHECK_FALSE(parse_cli_local_time("garbage").has_value());
}

TEST_CASE("parse_lifetime follows the order of section 12", "[auth]") {
  SECTION("expires_in counts from the send time and wins over expires_on") {
    auto life = parse_lifetime(json{{"expires_in", 3599}, {"expires_on", "1"}}, kSent, kReceived);
    REQUIRE(life.has_value());
    CHECK(life->expires_at == kSent + seconds{3599});
    CHECK_FALSE(life->refresh_at.has_value());
  }
  SECTION("string expires_in") {
    auto life = parse_lifetime(json{{"expires_in", "86399"}}, kSent, kReceived);
    REQUIRE(life.has_value());
    CHECK(life->expires_at == kSent + seconds{86399});
  }
  SECTION("refresh_in counts from the receive time") {
    auto life =
        parse_lifetime(json{{"expires_in", 86399}, {"refresh_in", 43199}}, kSent, kReceived);
    REQUIRE(life.has_value());
    REQUIRE(life->refresh_at.has_value());
    CHECK(*life->refresh_at == kReceived + seconds{43199});
  }
  SECTION("falls back to expires_on when expires_in is unusable") {
    auto life =
        parse_lifetime(json{{"expires_in", "-3"}, {"expires_on", 1767229200}}, kSent, kReceived);
    REQUIRE(life.has_value());
    CHECK(posix(life->expires_at) == 1767229200);
  }
  SECTION("neither field: an error, no guessed lifetime") {
    auto life = parse_lifetime(json{{"access_token", "x"}}, kSent, kReceived);
    REQUIRE_FALSE(life.has_value());
    CHECK(life.error() == "response has neither expires_in nor expires_on");
  }
  SECTION("unparseable field named") {
    auto life = parse_lifetime(json{{"expires_on", "later"}}, kSent, kReceived);
    REQUIRE_FALSE(life.has_value());
    CHECK(life.error() == "response has an unparseable expires_on");
  }
}

TEST_CASE("Retry-After as seconds or HTTP-date", "[auth]") {
  CHECK(parse_retry_after("5", kSent) == seconds{5});
  CHECK(parse_retry_after(" 120 ", kSent) == seconds{120});
  CHECK(parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", kSent) == seconds{30});
  CHECK(parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", kSent) == seconds{0});
  CHECK_FALSE(parse_retry_after("-1", kSent).has_value());
  CHECK_FALSE(parse_retry_after("soon", kSent).has_value());
}
