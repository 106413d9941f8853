#include "auth/jwt.h"
#include "auth/expiry.h"

#include <cmath>
#include <cstdint>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <nlohmann/json.hpp>

namespace miproxy::auth {
namespace {

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string encode(std::string_view bytes, const char* alphabet, bool pad) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  while (i + 3 <= bytes.size()) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) |
                 (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    out.push_back(alphabet[v & 63]);
    i += 3;
  }
  size_t rest = bytes.size() - i;
  if (rest == 1) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    if (pad) {
      out += "==";
    }
  } else if (rest == 2) {
    uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8);
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(alphabet[(v >> 6) & 63]);
    if (pad) {
      out += "=";
    }
  }
  return out;
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == '+' || c == '-') {
    return 62;
  }
  if (c == '/' || c == '_') {
    return 63;
  }
  return -1;
}

std::string json_string_or_empty(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it != obj.end() && it->is_string()) {
    return it->get<std::string>();
  }
  return "";
}

std::string digest(const EVP_MD* md, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string cert_der(X509* cert) {
  int len = i2d_X509(cert, nullptr);
  if (len <= 0) {
    return "";
  }
  std::string der(static_cast<size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_X509(cert, &p);
  return der;
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

}  // namespace

void PkeyDeleter::operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }

std::string base64url_encode(std::string_view bytes) { return encode(bytes, kB64Url, false); }

std::string base64_encode(std::string_view bytes) { return encode(bytes, kB64, true); }

std::optional<std::string> base64url_decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') {
    text.remove_suffix(1);
  }
  if (text.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = b64_value(c);
    if (v < 0) {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::optional<JwtClaims> decode_jwt_claims(std::string_view token) {
  size_t first = token.find('.');
  if (first == std::string_view::npos) {
    return std::nullopt;
  }
  size_t second = token.find('.', first + 1);
  if (second == std::string_view::npos || token.find('.', second + 1) != std::string_view::npos) {
    return std::nullopt;
  }
  auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
  if (!payload) {
    return std::nullopt;
  }
  auto json = nlohmann::json::parse(*payload, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return std::nullopt;
  }
  JwtClaims claims;
  claims.oid = json_string_or_empty(json, "oid");
  claims.tid = json_string_or_empty(json, "tid");
  claims.client_id = json_string_or_empty(json, "appid");
  if (claims.client_id.empty()) {
    claims.client_id = json_string_or_empty(json, "azp");
  }
  if (auto it = json.find("aud"); it != json.end()) {
    if (it->is_string()) {
      claims.aud = it->get<std::string>();
    } else if (it->is_array() && !it->empty() && (*it)[0].is_string()) {
      claims.aud = (*it)[0].get<std::string>();
    }
  }
  claims.iss = json_string_or_empty(json, "iss");
  if (auto it = json.find("exp"); it != json.end()) {
    // Only an instant a Clock::time_point can hold (0 to kMaxPosixSeconds): a float such as
    // 1e300, an unsigned above INT64_MAX or a year-60000 exp is no time at all (converting it
    // would be undefined behaviour).
    constexpr auto kLimit = static_cast<double>(kMaxPosixSeconds);
    if (it->is_number_unsigned()) {
      if (it->get<uint64_t>() <= static_cast<uint64_t>(kMaxPosixSeconds)) {
        claims.exp = static_cast<int64_t>(it->get<uint64_t>());
      }
    } else if (it->is_number_integer()) {
      int64_t n = it->get<int64_t>();
      if (n >= 0 && n <= kMaxPosixSeconds) claims.exp = n;
    } else if (it->is_number_float()) {
      double d = it->get<double>();
      if (std::isfinite(d) && d >= 0 && d <= kLimit) claims.exp = static_cast<int64_t>(d);
    }
  }
  claims.xms_mirid = json_string_or_empty(json, "xms_mirid");
  if (auto it = json.find("roles"); it != json.end() && it->is_array()) {
    for (const auto& role : *it) {
      if (role.is_string()) {
        claims.roles.push_back(role.get<std::string>());
      }
    }
  }
  claims.scp = json_string_or_empty(json, "scp");
  claims.idtyp = json_string_or_empty(json, "idtyp");
  return claims;
}

std::string hex_encode(std::string_view bytes, bool upper) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 0x0f]);
  }
  return out;
}

std::string new_guid() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof(b)) != 1) {
    // RAND_bytes failing means the process cannot produce secrets at all.
    std::abort();
  }
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  std::string hex = hex_encode(std::string_view(reinterpret_cast<char*>(b), sizeof(b)), false);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20, 12);
}

std::expected<ClientCertificate, std::string> parse_client_certificate(std::string_view pem) {
  ERR_clear_error();
  std::vector<std::unique_ptr<X509, X509Deleter>> certs;
  {
    std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      certs.emplace_back(cert);
    }
    ERR_clear_error();
  }
  if (certs.empty()) {
    return std::unexpected(std::string("no CERTIFICATE block in the file"));
  }
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key;
  {
    std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    // An empty password callback makes an encrypted key fail instead of prompting on a tty.
    auto no_password = [](char*, int, int, void*) -> int { return 0; };
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr));
    ERR_clear_error();
  }
  if (!key) {
    return std::unexpected(
        std::string("no unencrypted private key in the file (PRIVATE KEY or RSA PRIVATE KEY)"));
  }
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_RSA) {
    return std::unexpected(std::string("the private key is not RSA (RS256 needs an RSA key)"));
  }
  size_t leaf = certs.size();
  for (size_t i = 0; i < certs.size(); ++i) {
    if (X509_check_private_key(certs[i].get(), key.get()) == 1) {
      leaf = i;
      break;
    }
  }
  ERR_clear_error();
  if (leaf == certs.size()) {
    return std::unexpected(std::string("the private key matches none of the certificates"));
  }
  ClientCertificate out;
  out.der = cert_der(certs[leaf].get());
  for (size_t i = 0; i < certs.size(); ++i) {
    if (i != leaf) {
      out.chain_der.push_back(cert_der(certs[i].get()));
    }
  }
  out.key = std::move(key);
  return out;
}

std::expected<SecretString, std::string> make_client_assertion(const ClientCertificate& cert,
                                                               const AssertionInput& input) {
  if (!cert.key || cert.der.empty()) {
    return std::unexpected(std::string("no certificate loaded"));
  }
  std::string sha1 = digest(EVP_sha1(), cert.der);
  std::string sha256 = digest(EVP_sha256(), cert.der);
  nlohmann::ordered_json header;
  header["alg"] = "RS256";
  header["typ"] = "JWT";
  header["x5t"] = base64url_encode(sha1);
  header["x5t#S256"] = base64url_encode(sha256);
  header["kid"] = hex_encode(sha1, true);
  if (input.send_certificate_chain) {
    auto x5c = nlohmann::ordered_json::array();
    x5c.push_back(base64_encode(cert.der));
    for (const auto& der : cert.chain_der) {
      x5c.push_back(base64_encode(der));
    }
    header["x5c"] = std::move(x5c);
  }
  int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(input.now.time_since_epoch()).count();
  nlohmann::ordered_json payload;
  payload["aud"] = input.audience;
  payload["iss"] = input.client_id;
  payload["sub"] = input.client_id;
  payload["jti"] = input.jti;
  payload["nbf"] = now;
  payload["iat"] = now;
  payload["exp"] = now + 600;
  std::string signing_input =
      base64url_encode(header.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)) +
      "." +
      base64url_encode(payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));

  ERR_clear_error();
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  size_t sig_len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, cert.key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len,
                     reinterpret_cast<const unsigned char*>(signing_input.data()),
                     signing_input.size()) != 1) {
    ERR_clear_error();
    return std::unexpected(std::string("cannot sign the client assertion"));
  }
  std::string sig(sig_len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len,
                     reinterpret_cast<const unsigned char*>(signing_input.data()),
                     signing_input.size()) != 1) {
    ERR_clear_error();
    return std::unexpected(std::string("cannot sign the client assertion"));
  }
  sig.resize(sig_len);
  return SecretString(signing_input + "." + base64url_encode(sig));
}

}  // namespace miproxy::auth
