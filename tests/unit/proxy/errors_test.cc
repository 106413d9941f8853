#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "proxy/errors.h"

using miproxy::proxy::Error;
using miproxy::proxy::ErrorContext;
using miproxy::proxy::error_info;
using miproxy::proxy::error_table;
using miproxy::proxy::render_error_response;

namespace {

struct Rendered {
  std::string head, body;
};

Rendered render(Error e, std::string_view message, ErrorContext ctx = {}, bool close = false,
                bool head_request = false) {
  std::string out;
  render_error_response(out, e, message, ctx, close, head_request);
  size_t end = out.find("\r\n\r\n");
  REQUIRE(end != std::string::npos);
  return {out.substr(0, end + 4), out.substr(end + 4)};
}

}  // namespace

TEST_CASE("error responses carry status, code header, length and a JSON body", "[errors]") {
  auto r = render(Error::NO_ROUTE, "no route matches host 'a'");
  CHECK(r.head.starts_with("HTTP/1.1 404 Not Found\r\n"));
  CHECK(r.head.find("\r\nx-miproxy-error: NoRoute\r\n") != std::string::npos);
  CHECK(r.head.find("\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n") !=
        std::string::npos);
  CHECK(r.head.find("Connection: close") == std::string::npos);
  auto j = nlohmann::json::parse(r.body);
  CHECK(j["error"]["code"] == "NoRoute");
  CHECK(j["error"]["message"] == "no route matches host 'a'");
  CHECK_FALSE(j["error"].contains("route"));
}

TEST_CASE("error responses name the route and identity when one matched", "[errors]") {
  auto r = render(Error::TOKEN_ACQUISITION_FAILED, "IMDS answered 400", {"blob", "vm"}, true);
  CHECK(r.head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
  CHECK(r.head.find("\r\nConnection: close\r\n") != std::string::npos);
  auto j = nlohmann::json::parse(r.body);
  CHECK(j["error"]["route"] == "blob");
  CHECK(j["error"]["identity"] == "vm");
}

TEST_CASE("error bodies are valid JSON whatever bytes the message carries", "[errors]") {
  // A client's Host of \xff\xfe used to throw from nlohmann's dump() and end the process.
  std::string nasty = "host '\xff\xfe' \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \x01\x1f\x7f \"q\" \\ \xe2\x82";
  auto r = render(Error::NO_ROUTE, nasty, {"r\xff", "id\n"});
  auto j = nlohmann::json::parse(r.body);  // throws on invalid UTF-8
  std::string m = j["error"]["message"];
  CHECK(m.find("\xEF\xBF\xBD") != std::string::npos);
  CHECK(m.find('\x01') != std::string::npos);  // escaped, then parsed back
  CHECK(m.find("\"q\" \\") != std::string::npos);
  CHECK(j["error"]["route"] == "r\xEF\xBF\xBD");
  // Valid multi-byte text passes through unchanged.
  auto ok = render(Error::NO_ROUTE, "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
  CHECK(nlohmann::json::parse(ok.body)["error"]["message"] == "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
}

TEST_CASE("an error answer to HEAD has no body", "[errors]") {
  auto r = render(Error::BAD_REQUEST, "bad", {}, true, true);
  CHECK(r.body.empty());
  CHECK(r.head.find("Content-Length: ") != std::string::npos);
}

TEST_CASE("README's error table is the error table", "[errors]") {
  std::ifstream f(MIPROXY_SOURCE_DIR "/README.md");
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  std::string readme = ss.str();
  size_t at = readme.find("| status | code | when |");
  REQUIRE(at != std::string::npos);
  std::istringstream rows(readme.substr(at));
  std::string line;
  std::getline(rows, line);  // header
  std::getline(rows, line);  // |---|
  std::vector<std::string> listed;
  while (std::getline(rows, line) && line.starts_with("|")) listed.push_back(line);
  std::vector<std::string> expected;
  for (const auto& e : error_table()) {
    expected.push_back("| " + std::to_string(e.status) + " | " + std::string(e.code) + " | " +
                       std::string(e.when) + " |");
  }
  CHECK(listed == expected);
  for (const auto& e : error_table()) CHECK(&error_info(e.error) == &e);
}
