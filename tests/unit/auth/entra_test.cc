// Entra token endpoint sources (token-sources.md §7-§9, §11) against a fake endpoint.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "auth/jwt.h"
#include "tests/unit/auth/fakes.h"
#include "tests/unit/auth/test_certs.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;
using nlohmann::json;
using std::chrono::seconds;

namespace {

constexpr char kStorage[] = "https://storage.azure.com/.default";
constexpr char kTenant[] = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr char kClient[] = "11111111-2222-3333-4444-555555555555";
const std::string kTokenUrl =
    std::string("https://login.example.test/") + kTenant + "/oauth2/v2.0/token";
constexpr char kOk[] =
    R"({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"entra-token"})";
constexpr char kAssertionType[] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

std::map<std::string, std::string> form_of(const FetchRequest& req) {
  auto fields = parse_form(req.body);
  REQUIRE(fields.has_value());
  CHECK_FALSE(has_duplicate_keys(*fields));
  return to_map(*fields);
}

void check_post(const FetchRequest& req, const std::string& url) {
  CHECK(req.method == "POST");
  CHECK(req.url == url);
  CHECK(header_values(req, "Content-Type") ==
        std::vector<std::string>{"application/x-www-form-urlencoded"});
  CHECK(header_values(req, "X-Forwarded-For").empty());
  CHECK(header_values(req, "Authorization").empty());
  CHECK(header_values(req, "Metadata").empty());
}

config::Identity of_type(config::Identity::Type type) {
  config::Identity id;
  id.name = "sp";
  id.type = type;
  return id;
}

struct WorkloadFixture {
  Harness h;
  TempDir dir;
  std::string token_file;
  WorkloadFixture() {
    token_file = dir.write("azure-identity-token", "federated-assertion-1\n");
    h.env["AZURE_FEDERATED_TOKEN_FILE"] = token_file;
    h.env["AZURE_CLIENT_ID"] = kClient;
    h.env["AZURE_TENANT_ID"] = kTenant;
    h.env["AZURE_AUTHORITY_HOST"] = "https://login.example.test/";
  }
};

}  // namespace

TEST_CASE("workload identity: POST form of section 7 to the joined authority URL", "[auth]") {
  WorkloadFixture f;
  auto source = build_source(f.h, of_type(config::Identity::Type::WORKLOAD_IDENTITY));
  CHECK(source->name() == "workload_identity");
  CHECK(source->supports_claims());
  f.h.fetcher.reply(200, kOk);
  auto out = fetch_once(f.h, *source, kStorage);
  CHECK(out.calls_inside_fetch == 0);
  REQUIRE(f.h.fetcher.requests.size() == 1);
  const FetchRequest& req = f.h.fetcher.requests[0];
  check_post(req, kTokenUrl);
  auto form = form_of(req);
  CHECK(form.size() == 5);
  CHECK(form["grant_type"] == "client_credentials");
  CHECK(form["client_id"] == kClient);
  CHECK(form["scope"] == kStorage);
  CHECK(form["client_assertion_type"] == kAssertionType);
  CHECK((form["client_assertion"] == "federated-assertion-1"));
  CHECK(req.body.find("scope=https%3A%2F%2Fstorage.azure.com%2F.default") != std::string::npos);
  REQUIRE(out.ok());
  CHECK(same_secret(out.token().access_token, "entra-token"));
  CHECK(out.token().expires_at == f.h.now + seconds{3599});
}

TEST_CASE("workload identity re-reads the token file on every fetch", "[auth]") {
  WorkloadFixture f;
  auto source = build_source(f.h, of_type(config::Identity::Type::WORKLOAD_IDENTITY));
  f.h.fetcher.reply(200, kOk);
  f.h.fetcher.reply(200, kOk);
  fetch_once(f.h, *source, kStorage);
  f.dir.write("azure-identity-token", "federated-assertion-2 \r\n\t");
  fetch_once(f.h, *source, kStorage);
  CHECK((form_of(f.h.fetcher.requests.at(0))["client_assertion"] == "federated-assertion-1"));
  CHECK((form_of(f.h.fetcher.requests.at(1))["client_assertion"] == "federated-assertion-2"));
}

TEST_CASE("workload identity: the identity's settings override the environment", "[auth]") {
  WorkloadFixture f;
  std::string other = f.dir.write("other-token", "other-assertion");
  config::Identity id = of_type(config::Identity::Type::WORKLOAD_IDENTITY);
  id.client_id = "client-from-config";
  id.tenant_id = "contoso.onmicrosoft.com";
  id.federated_token_file = other;
  id.authority_host = "https://login.other.test";
  auto source = build_source(f.h, id);
  f.h.fetcher.reply(200, kOk);
  fetch_once(f.h, *source, kStorage);
  const FetchRequest& req = f.h.fetcher.requests.at(0);
  CHECK(req.url == "https://login.other.test/contoso.onmicrosoft.com/oauth2/v2.0/token");
  auto form = form_of(req);
  CHECK(form["client_id"] == "client-from-config");
  CHECK((form["client_assertion"] == "other-assertion"));
}

TEST_CASE("workload identity without its variables is unavailable", "[auth]") {
  Harness h;
  h.env["AZURE_CLIENT_ID"] = kClient;
  auto source = build_source(h, of_type(config::Identity::Type::WORKLOAD_IDENTITY));
  auto out = fetch_once(h, *source, kStorage);
  CHECK(out.calls_inside_fetch == 0);
  CHECK(out.calls == 1);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().unavailable);
  CHECK(out.error().message ==
        "workload identity: AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID not set");
  CHECK(h.fetcher.requests.empty());
}

TEST_CASE("workload identity: missing token file is a retryable error", "[auth]") {
  WorkloadFixture f;
  f.h.env["AZURE_FEDERATED_TOKEN_FILE"] = f.dir.path() + "/absent";
  auto source = build_source(f.h, of_type(config::Identity::Type::WORKLOAD_IDENTITY));
  auto out = fetch_once(f.h, *source, kStorage);
  CHECK(out.error().message == "workload identity: federated token file: cannot open " +
                                   f.dir.path() + "/absent: No such file or directory");
  CHECK(out.error().retryable);
  CHECK_FALSE(out.error().unavailable);
}

TEST_CASE("Entra configuration checks: https authority, tenant characters", "[auth]") {
  WorkloadFixture f;
  auto id = of_type(config::Identity::Type::WORKLOAD_IDENTITY);
  f.h.env["AZURE_AUTHORITY_HOST"] = "http://login.example.test/";
  CHECK(make_source(id, f.h.deps()).error() ==
        "authority host must be an https:// URL, not \"http://login.example.test/\"");
  f.h.env["AZURE_AUTHORITY_HOST"] = "";
  f.h.env["AZURE_TENANT_ID"] = "../evil";
  CHECK(make_source(id, f.h.deps()).error() ==
        "tenant_id \"../evil\" must be a GUID or domain name (letters, digits, '-', '.')");
  f.h.env["AZURE_TENANT_ID"] = kTenant;
  f.h.env["AZURE_KUBERNETES_TOKEN_PROXY"] = "https://10.0.0.1";
  CHECK(make_source(id, f.h.deps()).error() ==
        "AKS identity bindings (AZURE_KUBERNETES_TOKEN_PROXY) are not supported");
  f.h.env.erase("AZURE_KUBERNETES_TOKEN_PROXY");
  // Default authority, joined with exactly one '/'.
  auto source = build_source(f.h, id);
  fetch_once(f.h, *source, kStorage);
  CHECK(f.h.fetcher.requests.at(0).url ==
        std::string("https://login.microsoftonline.com/") + kTenant + "/oauth2/v2.0/token");
}

TEST_CASE("claims go to the form as the raw JSON", "[auth]") {
  WorkloadFixture f;
  auto source = build_source(f.h, of_type(config::Identity::Type::WORKLOAD_IDENTITY));
  std::string claims = R"({"access_token":{"acrs":{"essential":true,"value":"c25"}}})";
  f.h.fetcher.reply(200, kOk);
  fetch_once(f.h, *source, kStorage, claims);
  auto form = form_of(f.h.fetcher.requests.at(0));
  CHECK(form["claims"] == claims);
  CHECK(form.size() == 6);
}

namespace {

struct SecretFixture {
  Harness h;
  TempDir dir;
  std::unique_ptr<TokenSource> source;
  SecretFixture() {
    config::Identity id = of_type(config::Identity::Type::CLIENT_SECRET);
    id.tenant_id = kTenant;
    id.client_id = kClient;
    id.authority_host = "https://login.example.test";
    id.secret_file = dir.write("ci.secret", "s3cr&t=+%/\n");
    source = build_source(h, id);
  }
};

}  // namespace

TEST_CASE("client secret: form of section 8, secret URL-encoded and re-read", "[auth]") {
  SecretFixture f;
  CHECK(f.source->name() == "client_secret");
  f.h.fetcher.reply(200, kOk);
  f.h.fetcher.reply(200, kOk);
  auto out = fetch_once(f.h, *f.source, kStorage);
  REQUIRE(out.ok());
  const FetchRequest& req = f.h.fetcher.requests.at(0);
  check_post(req, kTokenUrl);
  auto form = form_of(req);
  CHECK(form.size() == 4);
  CHECK(form["grant_type"] == "client_credentials");
  CHECK(form["client_id"] == kClient);
  CHECK(form["scope"] == kStorage);
  CHECK((form["client_secret"] == "s3cr&t=+%/"));
  CHECK(req.body.find("&client_secret=s3cr%26t%3D%2B%25%2F") != std::string::npos);
  CHECK(form.count("client_assertion") == 0);

  f.dir.write("ci.secret", "rotated");
  fetch_once(f.h, *f.source, kStorage);
  CHECK((form_of(f.h.fetcher.requests.at(1))["client_secret"] == "rotated"));
}

TEST_CASE("Entra responses: integer or string expires_in, refresh_in, v1 expires_on", "[auth]") {
  SecretFixture f;
  f.h.fetcher.reply(200, R"({"access_token":"a","expires_in":86399,"refresh_in":43199})");
  auto out = fetch_once(f.h, *f.source, kStorage);
  REQUIRE(out.ok());
  CHECK(out.token().expires_at == f.h.now + seconds{86399});
  REQUIRE(out.token().refresh_at.has_value());
  CHECK(*out.token().refresh_at == f.h.now + seconds{43199});

  f.h.fetcher.reply(
      200,
      R"({"access_token":"a","expires_in":"3599","expires_on":"1767229199","not_before":"1767225600"})");
  out = fetch_once(f.h, *f.source, kStorage);
  REQUIRE(out.ok());
  CHECK(out.token().expires_at == f.h.now + seconds{3599});
  CHECK_FALSE(out.token().refresh_at.has_value());

  f.h.fetcher.reply(200, R"({"access_token":"a","expires_on":1767229000})");
  out = fetch_once(f.h, *f.source, kStorage);
  REQUIRE(out.ok());
  CHECK(out.token().expires_at == Clock::time_point{seconds{1767229000}});
}

TEST_CASE("Entra errors: error, AADSTS code, trace and correlation ids", "[auth]") {
  SecretFixture f;
  f.h.fetcher.reply(
      400,
      R"({"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' is not valid.\r\nTrace ID: 255d1aef-8c98-452f-ac51-23d051240864\r\nCorrelation ID: fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7","error_codes":[70011],"timestamp":"2026-01-01 02:02:12Z","trace_id":"255d1aef-8c98-452f-ac51-23d051240864","correlation_id":"fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7"})");
  auto out = fetch_once(f.h, *f.source, kStorage);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error().message ==
        "Entra ID answered 400: invalid_scope: AADSTS70011: The provided value for the input "
        "parameter 'scope' is not valid. [trace_id 255d1aef-8c98-452f-ac51-23d051240864, "
        "correlation_id fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7] (client_id "
        "11111111-2222-3333-4444-555555555555, tenant 72f988bf-86f1-41af-91ab-2d7cd011db47)");
  CHECK(out.error().http_status == 400);
  CHECK_FALSE(out.error().retryable);

  // A description without the code gets it from error_codes.
  f.h.fetcher.reply(
      401,
      R"({"error":"invalid_client","error_description":"Invalid client secret provided.","error_codes":[7000215],"trace_id":"t1","correlation_id":"c1"})");
  out = fetch_once(f.h, *f.source, kStorage);
  CHECK(out.error().message.rfind(
            "Entra ID answered 401: invalid_client: AADSTS7000215: Invalid client secret "
            "provided. [trace_id t1, correlation_id c1]",
            0) == 0);
  CHECK_FALSE(out.error().retryable);
}

TEST_CASE("Entra retry advice: 5xx and network errors, 429 with Retry-After", "[auth]") {
  SecretFixture f;
  f.h.fetcher.reply(429, R"({"error":"temporarily_unavailable"})", {{"Retry-After", "5"}});
  auto out = fetch_once(f.h, *f.source, kStorage);
  CHECK(out.error().retryable);
  CHECK(out.error().retry_after == seconds{5});
  for (int status : {500, 502, 503, 504}) {
    f.h.fetcher.reply(status, "");
    INFO(status);
    out = fetch_once(f.h, *f.source, kStorage);
    CHECK(out.error().retryable);
    CHECK_FALSE(out.error().retry_after.has_value());
  }
  f.h.fetcher.reply(503, "", {{"Retry-After", "Thu, 01 Jan 2026 00:00:20 GMT"}});
  CHECK(fetch_once(f.h, *f.source, kStorage).error().retry_after == seconds{20});
  for (int status : {400, 401, 403, 404, 408}) {
    f.h.fetcher.reply(status, "");
    INFO(status);
    CHECK_FALSE(fetch_once(f.h, *f.source, kStorage).error().retryable);
  }
  f.h.fetcher.fail(FetchError::Kind::DNS, "resolve login.example.test: not found");
  out = fetch_once(f.h, *f.source, kStorage);
  CHECK(out.error().retryable);
  CHECK(out.error().message.rfind("Entra ID request failed: resolve login.example.test", 0) == 0);
}

TEST_CASE("client secret file problems are reported", "[auth]") {
  SecretFixture f;
  f.dir.write("ci.secret", "\n");
  auto out = fetch_once(f.h, *f.source, kStorage);
  CHECK(out.error().message == "client secret: " + f.dir.path() + "/ci.secret is empty");
  CHECK(f.h.fetcher.requests.empty());
  std::filesystem::remove(f.dir.path() + "/ci.secret");
  out = fetch_once(f.h, *f.source, kStorage);
  CHECK(out.error().message ==
        "client secret: cannot open " + f.dir.path() + "/ci.secret: No such file or directory");
}

namespace {

struct Jwt {
  json header;
  json payload;
  std::string signing_input;
  std::string signature;
};

Jwt split_assertion(const std::string& jwt) {
  size_t a = jwt.find('.');
  size_t b = jwt.find('.', a + 1);
  REQUIRE(b != std::string::npos);
  return Jwt{json::parse(base64url_decode(jwt.substr(0, a)).value()),
             json::parse(base64url_decode(jwt.substr(a + 1, b - a - 1)).value()), jwt.substr(0, b),
             base64url_decode(jwt.substr(b + 1)).value()};
}

}  // namespace

TEST_CASE("client certificate: signed assertion in the form of section 9", "[auth]") {
  Harness h;
  TempDir dir;
  auto cert = make_cert("sp", generate_rsa());
  config::Identity id = of_type(config::Identity::Type::CLIENT_CERTIFICATE);
  id.tenant_id = kTenant;
  id.client_id = kClient;
  id.authority_host = "https://login.example.test/";
  id.certificate_file = dir.write("sp.pem", cert.cert_pem + cert.key_pem);
  auto source = build_source(h, id);
  CHECK(source->name() == "client_certificate");
  h.fetcher.reply(200, kOk);
  h.fetcher.reply(200, kOk);
  REQUIRE(fetch_once(h, *source, kStorage).ok());
  REQUIRE(fetch_once(h, *source, kStorage).ok());

  std::set<std::string> jtis;
  for (const auto& req : h.fetcher.requests) {
    check_post(req, kTokenUrl);
    auto form = form_of(req);
    CHECK(form.size() == 5);
    CHECK(form["grant_type"] == "client_credentials");
    CHECK(form["client_id"] == kClient);
    CHECK(form["scope"] == kStorage);
    CHECK(form["client_assertion_type"] == kAssertionType);
    CHECK(form.count("client_secret") == 0);
    Jwt jwt = split_assertion(form["client_assertion"]);
    CHECK(jwt.header["alg"] == "RS256");
    CHECK(jwt.header["typ"] == "JWT");
    CHECK(jwt.header["x5t"] == base64url_encode(sha_digest(EVP_sha1(), cert.der)));
    CHECK(jwt.header["x5t#S256"] == base64url_encode(sha_digest(EVP_sha256(), cert.der)));
    CHECK(jwt.header["kid"] == hex_encode(sha_digest(EVP_sha1(), cert.der), true));
    CHECK_FALSE(jwt.header.contains("x5c"));
    CHECK(jwt.payload["aud"] == kTokenUrl);
    CHECK(jwt.payload["iss"] == kClient);
    CHECK(jwt.payload["sub"] == kClient);
    CHECK(jwt.payload["nbf"].get<int64_t>() == 1767225600);
    CHECK(jwt.payload["exp"].get<int64_t>() - jwt.payload["nbf"].get<int64_t>() == 600);
    jtis.insert(jwt.payload["jti"].get<std::string>());
    CHECK(verify_rs256(cert.cert.get(), jwt.signing_input, jwt.signature));
  }
  CHECK(jtis.size() == 2);  // a fresh jti per assertion
}

TEST_CASE("client certificate: chain sent as x5c when asked; unusable files reported", "[auth]") {
  Harness h;
  TempDir dir;
  auto ca = make_cert("ca", generate_rsa());
  auto leaf = make_cert("leaf", generate_rsa(), &ca);
  config::Identity id = of_type(config::Identity::Type::CLIENT_CERTIFICATE);
  id.tenant_id = kTenant;
  id.client_id = kClient;
  id.certificate_file = dir.write("sp.pem", leaf.cert_pem + leaf.key_pem + ca.cert_pem);
  id.send_certificate_chain = true;
  auto source = build_source(h, id);
  h.fetcher.reply(200, kOk);
  REQUIRE(fetch_once(h, *source, kStorage).ok());
  Jwt jwt = split_assertion(form_of(h.fetcher.requests.at(0))["client_assertion"]);
  REQUIRE(jwt.header["x5c"].size() == 2);
  CHECK(jwt.header["x5c"][0] == base64_encode(leaf.der));
  CHECK(jwt.header["x5c"][1] == base64_encode(ca.der));
  CHECK(jwt.payload["aud"] ==
        std::string("https://login.microsoftonline.com/") + kTenant + "/oauth2/v2.0/token");

  auto ec = make_cert("ec", generate_ec());
  dir.write("sp.pem", ec.cert_pem + ec.key_pem);
  auto out = fetch_once(h, *source, kStorage);
  CHECK(out.error().message == "client certificate " + dir.path() +
                                   "/sp.pem: the private key is not RSA (RS256 needs an RSA key)");
  CHECK(h.fetcher.requests.size() == 1);
}
