#include <catch2/catch.hpp>
#include <string>

#include "main/doctor.h"

using miproxy::app::terminal_safe;

TEST_CASE("terminal_safe keeps printable text and valid UTF-8 as they are", "[doctor]") {
  CHECK(terminal_safe("scope \"auto\": https://vault.azure.net/.default") ==
        "scope \"auto\": https://vault.azure.net/.default");
  CHECK(terminal_safe("M\xc3\xbcller \xe2\x82\xac \xf0\x9f\x94\x91") ==
        "M\xc3\xbcller \xe2\x82\xac \xf0\x9f\x94\x91");
}

TEST_CASE("terminal_safe escapes control bytes and replaces invalid UTF-8", "[doctor]") {
  CHECK(terminal_safe("a\r\nb\x1b]0;owned\x07") == "a\\x0d\\x0ab\\x1b]0;owned\\x07");
  CHECK(terminal_safe("\x7f") == "\\x7f");
  CHECK(terminal_safe("\xc2\x9b" "2J") == "\\x9b2J");  // C1 CSI
  const std::string fffd = "\xef\xbf\xbd";
  CHECK(terminal_safe("\xff\xfe") == fffd + fffd);
  CHECK(terminal_safe("\xc0\xaf") == fffd + fffd);          // overlong
  CHECK(terminal_safe("\xed\xa0\x80") == fffd + fffd + fffd);  // surrogate
  CHECK(terminal_safe("x\xe2\x82") == "x" + fffd + fffd);  // cut short
}
