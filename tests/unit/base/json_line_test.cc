#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cmath>

#include "base/json_line.h"
#include "base/json_string.h"

TEST_CASE("JsonLine builds a valid object that nlohmann parses back", "[log]") {
  std::string text = miproxy::JsonLine()
                         .add("path", "/a?b=\"c\"\\d\n\x01")
                         .add("status", 200)
                         .add("bytes", uint64_t{18446744073709551615ULL})
                         .add("ms", 1.23456)
                         .finish();
  auto j = nlohmann::json::parse(text);
  CHECK(j["path"] == "/a?b=\"c\"\\d\n\x01");
  CHECK(j["status"] == 200);
  CHECK(j["bytes"].get<uint64_t>() == 18446744073709551615ULL);
  CHECK(j["ms"].get<double>() == Approx(1.235));
}

TEST_CASE("an empty JsonLine is an empty object", "[log]") {
  CHECK(miproxy::JsonLine().finish() == "{}");
}

TEST_CASE("JsonLine lines are valid JSON whatever bytes a client sent", "[log]") {
  // Invalid UTF-8 (stray bytes, overlongs, surrogates, beyond U+10FFFF, truncated) is replaced
  // by U+FFFD; valid multi-byte text is kept; NaN has no JSON form and becomes null.
  std::string text = miproxy::JsonLine()
                         .add("path", "/x\xff\xfe\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80\xe2\x82")
                         .add("host", "h\xc3\xa9\xf0\x9f\x98\x80")
                         .add("ms", std::nan(""))
                         .finish();
  auto j = nlohmann::json::parse(text);
  CHECK(j["path"] == "/x\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                     "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // 13 bytes, 13 replacements
  CHECK(j["host"] == "h\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(j["ms"].is_null());
}

TEST_CASE("utf8_sequence_length follows RFC 3629", "[log]") {
  using miproxy::utf8_sequence_length;
  CHECK(utf8_sequence_length("a") == 1);
  CHECK(utf8_sequence_length("\xc3\xa9") == 2);
  CHECK(utf8_sequence_length("\xc1\xbf") == 0);          // overlong
  CHECK(utf8_sequence_length("\xe0\x9f\xbf") == 0);      // overlong
  CHECK(utf8_sequence_length("\xed\x9f\xbf") == 3);      // U+D7FF
  CHECK(utf8_sequence_length("\xed\xa0\x80") == 0);      // surrogate
  CHECK(utf8_sequence_length("\xf4\x8f\xbf\xbf") == 4);  // U+10FFFF
  CHECK(utf8_sequence_length("\xf4\x90\x80\x80") == 0);  // beyond
  CHECK(utf8_sequence_length("\xe2\x82") == 0);          // truncated
  CHECK(utf8_sequence_length("\x80") == 0);
  CHECK(miproxy::to_valid_utf8("a\xffz") == "a\xEF\xBF\xBDz");
}
