// token_file source: re-read on every fetch; expiry from the JWT exp claim or 5 minutes.

#include <catch2/catch.hpp>

#include "tests/unit/auth/fakes.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;
using std::chrono::seconds;

namespace {

struct FileFixture {
  Harness h;
  TempDir dir;
  std::string path;
  std::unique_ptr<TokenSource> source;
  explicit FileFixture(const std::string& contents) {
    path = dir.write("token", contents);
    config::Identity id;
    id.type = config::Identity::Type::TOKEN_FILE;
    id.path = path;
    source = build_source(h, id);
  }
};

}  // namespace

TEST_CASE("token_file: a JWT expires at its exp claim, re-read within a minute", "[auth]") {
  std::string jwt = fake_jwt(R"({"aud":"https://storage.azure.com","exp":1767229200})");
  FileFixture f("\n " + jwt + " \n");
  CHECK(f.source->name() == "token_file");
  auto out = fetch_once(f.h, *f.source, "https://storage.azure.com/.default");
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, jwt));
  CHECK(out.token().expires_at == Clock::time_point{seconds{1767229200}});
  REQUIRE(out.token().refresh_at.has_value());
  CHECK(*out.token().refresh_at == f.h.now + seconds{60});
  CHECK(f.h.fetcher.requests.empty());
}

TEST_CASE("token_file: an opaque token is valid for 5 minutes after the read", "[auth]") {
  FileFixture f("opaque-bearer-value\n");
  auto out = fetch_once(f.h, *f.source, "s");
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "opaque-bearer-value"));
  CHECK(out.token().expires_at == f.h.now + seconds{300});
  CHECK(*out.token().refresh_at == f.h.now + seconds{60});

  // The file is read again on every fetch.
  f.dir.write("token", "replaced-value");
  f.h.now += seconds{61};
  out = fetch_once(f.h, *f.source, "s");
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "replaced-value"));
  CHECK(out.token().expires_at == f.h.now + seconds{300});
}

TEST_CASE("token_file: refresh never after expiry; expired, empty or missing files", "[auth]") {
  FileFixture f(fake_jwt(R"({"exp":1767225630})"));  // 30 s left
  auto out = fetch_once(f.h, *f.source, "s");
  REQUIRE(out.ok());
  CHECK(*out.token().refresh_at == Clock::time_point{seconds{1767225630}});

  f.dir.write("token", fake_jwt(R"({"exp":1767225000})"));
  out = fetch_once(f.h, *f.source, "s");
  CHECK(out.error().message ==
        "the token in " + f.path + " has expired (its exp claim is in the past)");

  f.dir.write("token", " \n");
  out = fetch_once(f.h, *f.source, "s");
  CHECK(out.error().message == "token file " + f.path + " is empty");

  std::filesystem::remove(f.path);
  out = fetch_once(f.h, *f.source, "s");
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.error().message == "token file: cannot open " + f.path + ": No such file or directory");
  CHECK(out.error().retryable);

  config::Identity id;
  id.type = config::Identity::Type::TOKEN_FILE;
  CHECK(make_source(id, f.h.deps()).error() == "token_file needs a path");
}
