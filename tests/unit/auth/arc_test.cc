// Azure Arc (token-sources.md §4): the 401 key-file challenge and its path checks.

#include <unistd.h>

#include <catch2/catch.hpp>

#include "tests/unit/auth/fakes.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;

namespace {

constexpr char kArm[] = "https://management.azure.com/.default";
constexpr char kEndpoint[] = "http://localhost:40342/metadata/identity/oauth2/token";
constexpr char kKey[] = "0123456789abcdef0123456789abcdef";
const std::string kBody =
    R"({"access_token":"arc-token","expires_in":"86399","expires_on":"1767311999",)"
    R"("resource":"https://management.azure.com","token_type":"Bearer"})";

struct ArcFixture {
  Harness h;
  TempDir keys;
  std::unique_ptr<TokenSource> source;

  ArcFixture() {
    h.env["IDENTITY_ENDPOINT"] = kEndpoint;
    h.env["IMDS_ENDPOINT"] = "http://localhost:40342";
    SourceDeps deps = h.deps();
    deps.arc_key_directory = keys.path();
    config::Identity id;
    id.type = config::Identity::Type::MANAGED_IDENTITY;
    source = std::move(make_source(id, deps).value());
  }
  void challenge(const std::string& realm_path) {
    h.fetcher.reply(401, "", {{"WWW-Authenticate", "Basic realm=" + realm_path}});
  }
};

}  // namespace

TEST_CASE("Arc: 401 challenge, then the key file bytes as Basic credentials", "[auth]") {
  ArcFixture f;
  REQUIRE(f.source->name() == "arc");
  std::string key_path = f.keys.write("a1b2c3.key", kKey);
  f.challenge(key_path);
  f.h.fetcher.reply(200, kBody);
  auto out = fetch_once(f.h, *f.source, kArm);
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  REQUIRE(f.h.fetcher.requests.size() == 2);

  const FetchRequest& first = f.h.fetcher.requests[0];
  const FetchRequest& second = f.h.fetcher.requests[1];
  for (const FetchRequest* req : {&first, &second}) {
    CHECK(req->method == "GET");
    UrlParts url = split_url(req->url);
    CHECK(url.base == kEndpoint);
    CHECK_FALSE(has_duplicate_keys(url.query));
    CHECK(to_map(url.query) ==
          std::map<std::string, std::string>{{"api-version", "2020-06-01"},
                                             {"resource", "https://management.azure.com"}});
    CHECK(header_values(*req, "Metadata") == std::vector<std::string>{"true"});
    CHECK(header_values(*req, "X-Forwarded-For").empty());
  }
  CHECK(header_values(first, "Authorization").empty());
  auto auth = header_values(second, "Authorization");
  REQUIRE(auth.size() == 1);
  CHECK((auth[0] == std::string("Basic ") + kKey));
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "arc-token"));
}

TEST_CASE("Arc: a 4096-byte key is read, a 4097-byte key is refused before reading", "[auth]") {
  ArcFixture f;
  f.challenge(f.keys.write("ok.key", std::string(4096, 'k')));
  f.h.fetcher.reply(200, kBody);
  REQUIRE(fetch_once(f.h, *f.source, kArm).ok());

  std::string big = f.keys.write("big.key", std::string(4097, 'k'));
  f.challenge(big);
  auto out = fetch_once(f.h, *f.source, kArm);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().message == "Azure Arc key-file challenge refused: " + big +
                                   " is 4097 bytes; an Arc key file is at most 4096 bytes");
  CHECK_FALSE(out.error().retryable);
  CHECK(f.h.fetcher.requests.size() == 3);  // no second request for the refused challenge
}

TEST_CASE("Arc: challenge paths that are refused", "[auth]") {
  ArcFixture f;
  TempDir elsewhere;
  std::string outside = elsewhere.write("x.key", kKey);
  f.keys.write("x.key", kKey);
  f.keys.write("x.txt", kKey);
  std::string dir_name = std::filesystem::path(f.keys.path()).filename().string();
  std::string other_name = std::filesystem::path(elsewhere.path()).filename().string();
  ::symlink(outside.c_str(), (f.keys.path() + "/link.key").c_str());

  struct Case {
    std::string realm;
    std::string expected;  // after "Azure Arc key-file challenge refused: "
  };
  std::vector<Case> cases = {
      {f.keys.path() + "/x.txt",
       "challenge file \"" + f.keys.path() + "/x.txt\" does not end in .key"},
      {outside, "challenge names a file outside " + f.keys.path() + ": " + outside},
      {f.keys.path() + "/../" + other_name + "/x.key", "challenge path \"" + f.keys.path() +
                                                           "/../" + other_name +
                                                           "/x.key\" contains . or .. "
                                                           "components"},
      {f.keys.path() + "/./x.key",
       "challenge path \"" + f.keys.path() + "/./x.key\" contains . or .. components"},
      {f.keys.path() + "//x.key",
       "challenge path \"" + f.keys.path() + "//x.key\" is not in normal form"},
      {"x.key", "challenge names \"x.key\", not an absolute path"},
      {f.keys.path() + "/.key",
       "challenge file \"" + f.keys.path() + "/.key\" does not end in .key"},
      {f.keys.path() + "/missing.key",
       "cannot stat " + f.keys.path() + "/missing.key: No such file or directory"},
      {f.keys.path() + "/link.key", f.keys.path() + "/link.key is not a regular file"},
  };
  (void)dir_name;
  for (const auto& c : cases) {
    f.challenge(c.realm);
    auto out = fetch_once(f.h, *f.source, kArm);
    INFO(c.realm);
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().message == "Azure Arc key-file challenge refused: " + c.expected);
    CHECK(out.error().http_status == 401);
    CHECK_FALSE(out.error().retryable);
  }
  // Only the challenge requests were made: no key was ever sent.
  CHECK(f.h.fetcher.requests.size() == cases.size());
  for (const auto& req : f.h.fetcher.requests) {
    CHECK(header_values(req, "Authorization").empty());
  }
}

TEST_CASE("Arc: a challenge that is not Basic realm=, or no header at all", "[auth]") {
  ArcFixture f;
  std::string key = f.keys.write("x.key", kKey);
  f.h.fetcher.reply(401, "", {{"WWW-Authenticate", "Bearer realm=" + key}});
  CHECK(fetch_once(f.h, *f.source, kArm).error().message ==
        "Azure Arc key-file challenge refused: challenge is not \"Basic realm=<key file>\"");
  f.h.fetcher.reply(401, "", {{"Content-Type", "text/plain"}});
  auto out = fetch_once(f.h, *f.source, kArm);
  CHECK(out.error().message == "Azure Arc answered 401 without a WWW-Authenticate header");
  CHECK_FALSE(out.error().retryable);
}

TEST_CASE("Arc: any first answer other than 401 is an error", "[auth]") {
  ArcFixture f;
  f.h.fetcher.reply(200, kBody);
  auto out = fetch_once(f.h, *f.source, kArm);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().message.find("Azure Arc answered 200") == 0);
  CHECK(out.error().message.find("expected 401 with a key-file challenge") != std::string::npos);
  CHECK(out.error().message.find("arc-token") == std::string::npos);
  CHECK_FALSE(out.error().retryable);

  f.h.fetcher.reply(503, R"({"error":"unavailable","error_description":"agent starting"})");
  out = fetch_once(f.h, *f.source, kArm);
  CHECK(out.error().message ==
        "Azure Arc answered 503: unavailable: agent starting; expected 401 with a key-file "
        "challenge");
  CHECK(out.error().retryable);
  CHECK(f.h.fetcher.requests.size() == 2);
}

TEST_CASE("Arc: second answer errors and a user-assigned selector", "[auth]") {
  ArcFixture f;
  f.challenge(f.keys.write("x.key", kKey));
  f.h.fetcher.reply(400,
                    R"({"error":"invalid_resource","error_description":"AADSTS50001: not found"})");
  auto out = fetch_once(f.h, *f.source, kArm);
  CHECK(out.error().message ==
        "Azure Arc answered 400: invalid_resource: AADSTS50001: not found (system-assigned)");

  config::Identity id;
  id.client_id = "11111111-2222-3333-4444-555555555555";
  CHECK(make_source(id, f.h.deps()).error() ==
        "Azure Arc cannot select a user-assigned identity (client_id given)");
}

TEST_CASE("Arc found by its agent binary uses the default local endpoint", "[auth]") {
  Harness h;
  TempDir dir;
  SourceDeps deps = h.deps();
  deps.arc_agent_binary = dir.write("himds", "", 0755);
  deps.arc_key_directory = dir.path();
  auto source = std::move(make_source(config::Identity{}, deps).value());
  CHECK(source->name() == "arc");
  fetch_once(h, *source, kArm);
  CHECK(split_url(h.fetcher.requests.at(0).url).base ==
        "http://127.0.0.1:40342/metadata/identity/oauth2/token");
}
