#pragma once
// Test certificates made at test time with OpenSSL's APIs, written as PEM files into a fresh
// temporary directory that is removed when the TestPki goes away. Never committed, never
// printed.
//
//   ca_cert                 a test CA (EC P-256)
//   server_cert/server_key  issued by the CA for DNS:localhost and IP:127.0.0.1
//   self_cert/self_key      self-signed, also for DNS:localhost and IP:127.0.0.1
//   self_sha1               the self-signed certificate's SHA-1 thumbprint, upper-case hex

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace miproxy::test {

class TestPki {
 public:
  TestPki() {
    char tmpl[] = "/tmp/miproxy-pki-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) {
      throw std::runtime_error("mkdtemp failed");
    }
    dir = tmpl;
    EVP_PKEY* ca_key = EVP_EC_gen("P-256");
    X509* ca = make_cert(ca_key, "miproxy test CA", nullptr, ca_key, true, nullptr);
    EVP_PKEY* server_key_p = EVP_EC_gen("P-256");
    X509* server =
        make_cert(server_key_p, "localhost", ca, ca_key, false, "DNS:localhost,IP:127.0.0.1");
    EVP_PKEY* self_key_p = EVP_EC_gen("P-256");
    X509* self = make_cert(self_key_p, "localhost", nullptr, self_key_p, false,
                           "DNS:localhost,IP:127.0.0.1");
    ca_cert = write_cert("ca.pem", ca);
    server_cert = write_cert("server.pem", server);
    server_key = write_key("server.key", server_key_p);
    self_cert = write_cert("self.pem", self);
    self_key = write_key("self.key", self_key_p);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509_digest(self, EVP_sha1(), md, &n);
    static const char kHex[] = "0123456789ABCDEF";
    for (unsigned i = 0; i < n; ++i) {
      self_sha1.push_back(kHex[md[i] >> 4]);
      self_sha1.push_back(kHex[md[i] & 0xf]);
    }
    X509_free(ca);
    X509_free(server);
    X509_free(self);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(server_key_p);
    EVP_PKEY_free(self_key_p);
  }

  ~TestPki() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  std::string dir;
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  std::string self_cert;
  std::string self_key;
  std::string self_sha1;

 private:
  static void add_ext(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
    if (ext == nullptr) {
      throw std::runtime_error("bad extension");
    }
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }

  static X509* make_cert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key,
                         bool is_ca, const char* san) {
    static long serial = 1000;
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ++serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 7 * 86400);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                               -1, -1, 0);
    X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer) : name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : x, x, nullptr, nullptr, 0);
    add_ext(x, &ctx, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    add_ext(x, &ctx, NID_key_usage,
            is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    add_ext(x, &ctx, NID_subject_key_identifier, "hash");
    if (issuer != nullptr) {
      add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
    }
    if (!is_ca) {
      add_ext(x, &ctx, NID_ext_key_usage, "serverAuth");
    }
    if (san != nullptr) {
      add_ext(x, &ctx, NID_subject_alt_name, san);
    }
    X509_sign(x, issuer_key, EVP_sha256());
    return x;
  }

  std::string write_cert(const char* file, X509* cert) {
    std::string path = dir + "/" + file;
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_X509(f, cert);
    std::fclose(f);
    return path;
  }

  std::string write_key(const char* file, EVP_PKEY* key) {
    std::string path = dir + "/" + file;
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    return path;
  }
};

}  // namespace miproxy::test
