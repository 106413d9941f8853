#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "base/json_line.h"

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
