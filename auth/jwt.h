#pragma once
// JWT helpers: base64url, unverified claim decoding (for logs and `doctor`, never for trust
// decisions), and the RS256 client assertion of token-sources.md §9.

#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/token.h"
#include "base/secret.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace miproxy::auth {

// RFC 4648 §5 without padding.
std::string base64url_encode(std::string_view bytes);
// RFC 4648 §4 with padding (x5c uses the standard alphabet).
std::string base64_encode(std::string_view bytes);
// Accepts both alphabets ("+/" and "-_"), with or without "=" padding. nullopt on garbage.
std::optional<std::string> base64url_decode(std::string_view text);

// Claims of an access token, decoded without verifying the signature (azure-services.md §7).
struct JwtClaims {
  std::string oid;
  std::string tid;
  std::string client_id;  // appid (v1) or azp (v2)
  std::string aud;        // first element when it is an array
  std::string iss;
  std::optional<int64_t> exp;
  std::string xms_mirid;
  std::vector<std::string> roles;
  std::string scp;
  std::string idtyp;
};

// nullopt when |token| is not three dot-separated segments whose middle one is base64url JSON.
std::optional<JwtClaims> decode_jwt_claims(std::string_view token);

// A random version-4 GUID, lower-case, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".
std::string new_guid();

// Hex of |bytes|, upper- or lower-case.
std::string hex_encode(std::string_view bytes, bool upper);

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const;
};

// A certificate credential: the certificate whose public key matches the private key, the
// other certificates of the file (chain, in file order) and the RSA private key.
struct ClientCertificate {
  std::string der;                     // leaf certificate, DER
  std::vector<std::string> chain_der;  // the other certificates, DER
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key;
};

// Parses PEM text holding one or more CERTIFICATE blocks and one unencrypted private key
// (PKCS#8 "PRIVATE KEY" or "RSA PRIVATE KEY"). Errors in words ("no private key in the file",
// "the private key matches none of the certificates", "the key is not RSA"); never key bytes.
std::expected<ClientCertificate, std::string> parse_client_certificate(std::string_view pem);

struct AssertionInput {
  std::string client_id;                // iss and sub
  std::string audience;                 // aud: the exact token endpoint URL
  Clock::time_point now;                // nbf and iat; exp = now + 600 s
  std::string jti;                      // a fresh GUID per assertion
  bool send_certificate_chain = false;  // adds x5c (leaf first, then the chain)
};

// Builds and signs (RS256, EVP_DigestSign with SHA-256) the client assertion:
// header {"alg":"RS256","typ":"JWT","x5t":b64url(SHA-1 DER),"x5t#S256":b64url(SHA-256 DER),
// "kid":HEX(SHA-1 DER)[,"x5c":[base64 DER...]]}, payload {"aud","iss","sub","jti","nbf","iat",
// "exp"} with integer times.
std::expected<SecretString, std::string> make_client_assertion(const ClientCertificate& cert,
                                                               const AssertionInput& input);

}  // namespace miproxy::auth
