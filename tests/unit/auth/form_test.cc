#include "auth/form.h"

#include <catch2/catch.hpp>

using namespace miproxy::auth;

TEST_CASE("url_encode keeps only unreserved characters", "[auth]") {
  CHECK(url_encode("https://vault.azure.net") == "https%3A%2F%2Fvault.azure.net");
  CHECK(url_encode("a b+c&d=e~f-g_h.i") == "a%20b%2Bc%26d%3De~f-g_h.i");
  CHECK(url_encode("\xc3\xa9") == "%C3%A9");
}

TEST_CASE("form_encode joins encoded pairs in order", "[auth]") {
  CHECK(form_encode({{"resource", "https://x/"}, {"a b", "c"}}) ==
        "resource=https%3A%2F%2Fx%2F&a%20b=c");
}

TEST_CASE("url_decode and parse_form reverse the encoding and reject bad escapes", "[auth]") {
  CHECK(url_decode("a%20b+c").value() == "a b c");
  CHECK(url_decode("a+b", false).value() == "a+b");
  CHECK_FALSE(url_decode("%4").has_value());
  CHECK_FALSE(url_decode("%zz").has_value());
  auto fields = parse_form("a=1&b=x%2Fy&a=2&empty=");
  REQUIRE(fields.has_value());
  REQUIRE(fields->size() == 4);
  CHECK((*fields)[1] == std::pair<std::string, std::string>{"b", "x/y"});
  CHECK((*fields)[2].second == "2");
  CHECK((*fields)[3].second.empty());
}

TEST_CASE("trimming removes newlines and blanks", "[auth]") {
  CHECK(trim_trailing_whitespace("secret\r\n") == "secret");
  CHECK(trim_trailing_whitespace(" a b \t\n") == " a b");
  CHECK(trim_whitespace("\n  tok \n") == "tok");
}
