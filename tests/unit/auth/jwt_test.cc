#include "auth/jwt.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "tests/unit/auth/fakes.h"
#include "tests/unit/auth/test_certs.h"

using namespace miproxy::auth;
using namespace miproxy::auth::testing;
using nlohmann::json;

namespace {

struct Parts {
  json header;
  json payload;
  std::string signing_input;
  std::string signature;
};

Parts split_jwt(std::string_view jwt) {
  size_t a = jwt.find('.');
  size_t b = jwt.find('.', a + 1);
  REQUIRE(a != std::string_view::npos);
  REQUIRE(b != std::string_view::npos);
  Parts p;
  p.header = json::parse(base64url_decode(jwt.substr(0, a)).value());
  p.payload = json::parse(base64url_decode(jwt.substr(a + 1, b - a - 1)).value());
  p.signing_input = std::string(jwt.substr(0, b));
  p.signature = base64url_decode(jwt.substr(b + 1)).value();
  return p;
}

const miproxy::auth::Clock::time_point kNow{std::chrono::seconds{1767225600}};

}  // namespace

TEST_CASE("base64url round trip, both alphabets, with and without padding", "[auth]") {
  std::string bytes("\xfb\xff\xfe\x00\x01", 5);
  CHECK(base64url_encode(bytes) == "-__-AAE");
  CHECK(base64_encode(bytes) == "+//+AAE=");
  CHECK(base64url_decode("-__-AAE").value() == bytes);
  CHECK(base64url_decode("+//+AAE=").value() == bytes);
  CHECK(base64url_decode("").value().empty());
  CHECK_FALSE(base64url_decode("a").has_value());
  CHECK_FALSE(base64url_decode("ab$d").has_value());
}

TEST_CASE("decode_jwt_claims reads the claims doctor shows", "[auth]") {
  std::string token = fake_jwt(
      R"({"aud":"https://storage.azure.com","iss":"https://sts.windows.net/t1/","tid":"t1",)"
      R"("oid":"o1","appid":"a1","exp":1767229200,"idtyp":"app","roles":["r1","r2"],)"
      R"("xms_mirid":"/subscriptions/s/rg/x","scp":"user_impersonation"})");
  auto claims = decode_jwt_claims(token);
  REQUIRE(claims.has_value());
  CHECK(claims->aud == "https://storage.azure.com");
  CHECK(claims->iss == "https://sts.windows.net/t1/");
  CHECK(claims->tid == "t1");
  CHECK(claims->oid == "o1");
  CHECK(claims->client_id == "a1");
  CHECK(claims->exp == 1767229200);
  CHECK(claims->idtyp == "app");
  CHECK(claims->roles == std::vector<std::string>{"r1", "r2"});
  CHECK(claims->xms_mirid == "/subscriptions/s/rg/x");
  CHECK(claims->scp == "user_impersonation");

  auto v2 = decode_jwt_claims(fake_jwt(R"({"azp":"a2","aud":["api://x","y"]})"));
  REQUIRE(v2.has_value());
  CHECK(v2->client_id == "a2");
  CHECK(v2->aud == "api://x");
  CHECK_FALSE(v2->exp.has_value());

  // An exp no Clock::time_point can hold is no exp (the fuzzers found 1.8e225 and the year
  // 61,000: converting them was undefined behaviour).
  for (const char* exp : {"1.76722e+225", "-1e300", "18446744073709551615", "9.3e18",
                          "1867327323045", "-5"}) {
    auto odd = decode_jwt_claims(fake_jwt(std::string(R"({"exp":)") + exp + "}"));
    REQUIRE(odd.has_value());
    CHECK_FALSE(odd->exp.has_value());
  }
  auto fractional = decode_jwt_claims(fake_jwt(R"({"exp":1767229200.5})"));
  REQUIRE(fractional.has_value());
  CHECK(fractional->exp == 1767229200);

  CHECK_FALSE(decode_jwt_claims("opaque-token").has_value());
  CHECK_FALSE(decode_jwt_claims("a.b").has_value());
  CHECK_FALSE(decode_jwt_claims("a.!!!.c").has_value());
  CHECK_FALSE(decode_jwt_claims(base64url_encode("{}") + "." + base64url_encode("[1]") + ".s"));
}

TEST_CASE("new_guid is a fresh version-4 GUID", "[auth]") {
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    std::string g = new_guid();
    REQUIRE(g.size() == 36);
    CHECK(g[8] == '-');
    CHECK(g[14] == '4');
    CHECK(std::string("89ab").find(g[19]) != std::string::npos);
    seen.insert(g);
  }
  CHECK(seen.size() == 50);
}

TEST_CASE("client assertion: RS256 header, claims and a signature the certificate verifies",
          "[auth]") {
  auto cert = make_cert("client", generate_rsa());
  auto parsed = parse_client_certificate(cert.cert_pem + cert.key_pem);
  REQUIRE(parsed.has_value());
  CHECK((parsed->der == cert.der));

  AssertionInput input;
  input.client_id = "11111111-2222-3333-4444-555555555555";
  input.audience = "https://login.example.test/tenant1/oauth2/v2.0/token";
  input.now = kNow;
  input.jti = new_guid();
  auto assertion = make_client_assertion(*parsed, input);
  REQUIRE(assertion.has_value());
  Parts p = split_jwt(assertion->reveal());

  CHECK(p.header["alg"] == "RS256");
  CHECK(p.header["typ"] == "JWT");
  CHECK(p.header["x5t"] == base64url_encode(sha_digest(EVP_sha1(), cert.der)));
  CHECK(p.header["x5t#S256"] == base64url_encode(sha_digest(EVP_sha256(), cert.der)));
  CHECK(p.header["kid"] == hex_encode(sha_digest(EVP_sha1(), cert.der), true));
  CHECK_FALSE(p.header.contains("x5c"));

  CHECK(p.payload["aud"] == input.audience);
  CHECK(p.payload["iss"] == input.client_id);
  CHECK(p.payload["sub"] == input.client_id);
  CHECK(p.payload["jti"] == input.jti);
  REQUIRE(p.payload["nbf"].is_number_integer());
  REQUIRE(p.payload["exp"].is_number_integer());
  REQUIRE(p.payload["iat"].is_number_integer());
  CHECK(p.payload["nbf"].get<int64_t>() == 1767225600);
  CHECK(p.payload["iat"].get<int64_t>() == 1767225600);
  CHECK(p.payload["exp"].get<int64_t>() == 1767225600 + 600);

  CHECK(verify_rs256(cert.cert.get(), p.signing_input, p.signature));
  // A different key must not verify it (the check above can fail).
  auto other = make_cert("other", generate_rsa());
  CHECK_FALSE(verify_rs256(other.cert.get(), p.signing_input, p.signature));
}

TEST_CASE("client assertion x5c carries the leaf then the chain, standard base64", "[auth]") {
  auto ca = make_cert("ca", generate_rsa());
  auto leaf = make_cert("leaf", generate_rsa(), &ca);
  // The CA comes first in the file: the leaf is found by its key, not by position.
  auto parsed = parse_client_certificate(ca.cert_pem + leaf.key_pem + leaf.cert_pem);
  REQUIRE(parsed.has_value());
  CHECK((parsed->der == leaf.der));
  REQUIRE(parsed->chain_der.size() == 1);

  AssertionInput input;
  input.client_id = "c";
  input.audience = "https://a/t/oauth2/v2.0/token";
  input.now = kNow;
  input.jti = new_guid();
  input.send_certificate_chain = true;
  auto assertion = make_client_assertion(*parsed, input);
  REQUIRE(assertion.has_value());
  Parts p = split_jwt(assertion->reveal());
  REQUIRE(p.header["x5c"].is_array());
  REQUIRE(p.header["x5c"].size() == 2);
  CHECK(p.header["x5c"][0] == base64_encode(leaf.der));
  CHECK(p.header["x5c"][1] == base64_encode(ca.der));
  CHECK(verify_rs256(leaf.cert.get(), p.signing_input, p.signature));
}

TEST_CASE("parse_client_certificate explains unusable files", "[auth]") {
  auto rsa = make_cert("client", generate_rsa());
  auto other = make_cert("other", generate_rsa());
  auto ec = make_cert("ec", generate_ec());
  CHECK(parse_client_certificate(rsa.key_pem).error() == "no CERTIFICATE block in the file");
  CHECK(parse_client_certificate(rsa.cert_pem).error().find("no unencrypted private key") == 0);
  CHECK(parse_client_certificate(rsa.cert_pem + other.key_pem).error() ==
        "the private key matches none of the certificates");
  CHECK(parse_client_certificate(ec.cert_pem + ec.key_pem).error() ==
        "the private key is not RSA (RS256 needs an RSA key)");
}
