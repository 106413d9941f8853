#include <catch2/catch.hpp>

#include "base/log.h"

TEST_CASE("parse_level accepts the documented names and rejects others") {
  miproxy::log::Level l;
  REQUIRE(miproxy::log::parse_level("debug", &l));
  CHECK(l == miproxy::log::Level::DEBUG);
  REQUIRE(miproxy::log::parse_level("error", &l));
  CHECK(l == miproxy::log::Level::ERROR);
  CHECK_FALSE(miproxy::log::parse_level("verbose", &l));
}

TEST_CASE("now_rfc3339 has millisecond UTC form") {
  std::string t = miproxy::log::now_rfc3339();
  REQUIRE(t.size() == 24);
  CHECK(t[10] == 'T');
  CHECK(t.back() == 'Z');
}

#include <nlohmann/json.hpp>

#include "unit/support/capture_stderr.h"

TEST_CASE("A log line stays valid JSON whatever bytes its fields carry", "[log]") {
  miproxy::log::set_level(miproxy::log::Level::INFO);
  miproxy::test::CaptureStderr capture;
  std::string outside = "token endpoint said \xff\xfe\r\nX-Injected: yes\x01\x1b[2J\"\\";
  miproxy::log::warn("token acquisition failed",
                     {{"error", outside}, {"nested", {{"k\xc0", outside}}}, {"list", {outside}}});
  auto lines = capture.lines();
  REQUIRE(lines.size() == 1);
  nlohmann::json line = nlohmann::json::parse(lines[0]);  // throws if not valid JSON
  const std::string fffd = "\xef\xbf\xbd";
  std::string expected = "token endpoint said " + fffd + fffd + "\r\nX-Injected: yes\x01\x1b[2J\"\\";
  CHECK(line["error"] == expected);
  CHECK(line["nested"]["k" + fffd] == expected);
  CHECK(line["list"][0] == expected);
  // Control bytes are escaped in the text itself: one physical line.
  CHECK(lines[0].find('\r') == std::string::npos);
  CHECK(lines[0].find("\\u001b") != std::string::npos);
}
