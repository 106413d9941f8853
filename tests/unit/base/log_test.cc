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
