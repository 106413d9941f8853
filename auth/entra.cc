// Entra token endpoint sources (token-sources.md §7-§9, §11): workload identity (federated
// token file), client secret and client certificate (RS256 assertion). Every file is read again
// on every fetch so rotated tokens, secrets and certificates are picked up.

#include "auth/form.h"
#include "auth/jwt.h"
#include "auth/source_internal.h"

namespace miproxy::auth::detail {
namespace {

constexpr char kDefaultAuthority[] = "https://login.microsoftonline.com";
constexpr char kAssertionType[] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
constexpr size_t kMaxFileBytes = 1024 * 1024;

const char* kind_name(EntraKind kind) {
  switch (kind) {
    case EntraKind::WORKLOAD_IDENTITY:
      return "workload_identity";
    case EntraKind::CLIENT_SECRET:
      return "client_secret";
    case EntraKind::CLIENT_CERTIFICATE:
      return "client_certificate";
  }
  return "?";
}

class EntraSource : public TokenSource {
 public:
  EntraSource(EntraSettings settings, std::string token_url, SourceDeps deps)
      : name_(kind_name(settings.kind)),
        settings_(std::move(settings)),
        token_url_(std::move(token_url)),
        deps_(std::move(deps)) {}

  const std::string& name() const override { return name_; }
  bool supports_claims() const override { return true; }

  void fetch(const std::string& scope, const std::string& claims,
             std::function<void(SourceResult)> done) override {
    if (!settings_.unavailable_reason.empty()) {
      defer_result(deps_, std::move(done),
                   std::unexpected(make_unavailable(settings_.unavailable_reason)));
      return;
    }
    auto request = build_request(scope, claims);
    if (!request) {
      defer_result(deps_, std::move(done), std::unexpected(request.error()));
      return;
    }
    Clock::time_point sent = deps_.now();
    auto now = deps_.now;
    std::string context = "client_id " + settings_.client_id + ", tenant " + settings_.tenant_id;
    deps_.fetcher->fetch(
        std::move(*request), [now, sent, context, done = std::move(done)](FetchResult result) {
          if (!result) {
            done(std::unexpected(transport_error("Entra ID", result.error(), context)));
            return;
          }
          Clock::time_point received = now();
          if (result->status != 200) {
            done(std::unexpected(entra_error(*result, received, context)));
            return;
          }
          done(parse_token_body("Entra ID", *result, "access_token", sent, received));
        });
  }

 private:
  std::expected<FetchRequest, SourceError> build_request(const std::string& scope,
                                                         const std::string& claims) const {
    FormFields form = {
        {"grant_type", "client_credentials"}, {"client_id", settings_.client_id}, {"scope", scope}};
    switch (settings_.kind) {
      case EntraKind::WORKLOAD_IDENTITY: {
        auto token = read_small_file(settings_.file, kMaxFileBytes);
        if (!token) {
          // The kubelet may not have projected the token yet: worth another attempt.
          return std::unexpected(
              make_error("workload identity: federated token file: " + token.error(), true));
        }
        std::string assertion = trim_trailing_whitespace(std::move(*token));
        if (assertion.empty()) {
          return std::unexpected(make_error(
              "workload identity: federated token file " + settings_.file + " is empty", true));
        }
        form.emplace_back("client_assertion_type", kAssertionType);
        form.emplace_back("client_assertion", std::move(assertion));
        break;
      }
      case EntraKind::CLIENT_SECRET: {
        std::string secret;
        if (!settings_.secret_env.empty()) {
          secret = deps_.getenv(settings_.secret_env);
          if (secret.empty()) {
            return std::unexpected(make_error(settings_.secret_env + " is not set"));
          }
        } else {
          auto read = read_small_file(settings_.file, kMaxFileBytes);
          if (!read) {
            return std::unexpected(make_error("client secret: " + read.error()));
          }
          secret = trim_trailing_whitespace(std::move(*read));
          if (secret.empty()) {
            return std::unexpected(make_error("client secret: " + settings_.file + " is empty"));
          }
        }
        form.emplace_back("client_secret", std::move(secret));
        break;
      }
      case EntraKind::CLIENT_CERTIFICATE: {
        auto pem = read_small_file(settings_.file, kMaxFileBytes);
        if (!pem) {
          return std::unexpected(make_error("client certificate: " + pem.error()));
        }
        SecretString pem_secret(std::move(*pem));
        auto cert = parse_client_certificate(pem_secret.reveal());
        if (!cert) {
          return std::unexpected(
              make_error("client certificate " + settings_.file + ": " + cert.error()));
        }
        AssertionInput input;
        input.client_id = settings_.client_id;
        input.audience = token_url_;
        input.now = deps_.now();
        input.jti = new_guid();
        input.send_certificate_chain = settings_.send_certificate_chain;
        auto assertion = make_client_assertion(*cert, input);
        if (!assertion) {
          return std::unexpected(make_error("client certificate: " + assertion.error()));
        }
        form.emplace_back("client_assertion_type", kAssertionType);
        form.emplace_back("client_assertion", std::string(assertion->reveal()));
        break;
      }
    }
    if (!claims.empty()) {
      form.emplace_back("claims", claims);
    }
    FetchRequest req;
    req.method = "POST";
    req.url = token_url_;
    req.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    req.body = form_encode(form);
    // Wipe the plain copies of the secret fields.
    for (auto& [key, value] : form) {
      OPENSSL_cleanse(value.data(), value.size());
    }
    req.ca_file = deps_.ca_file;
    apply_request_timeout(deps_, req);
    return req;
  }

  std::string name_;
  EntraSettings settings_;
  std::string token_url_;
  SourceDeps deps_;
};

}  // namespace

std::expected<std::unique_ptr<TokenSource>, std::string> make_entra_source(EntraSettings settings,
                                                                           const SourceDeps& deps) {
  std::string token_url;
  if (settings.unavailable_reason.empty()) {
    auto authority = normalise_authority(
        settings.authority_host.empty() ? std::string(kDefaultAuthority) : settings.authority_host);
    if (!authority) {
      return std::unexpected(authority.error());
    }
    if (!valid_tenant_id(settings.tenant_id)) {
      return std::unexpected("tenant_id \"" + settings.tenant_id +
                             "\" must be a GUID or domain name (letters, digits, '-', '.')");
    }
    if (settings.client_id.empty()) {
      return std::unexpected(std::string("client_id is required"));
    }
    if (settings.file.empty() && settings.secret_env.empty()) {
      return std::unexpected(std::string(
          settings.kind == EntraKind::CLIENT_CERTIFICATE ? "certificate_file is required"
          : settings.kind == EntraKind::CLIENT_SECRET    ? "secret_file is required"
                                                         : "federated token file is required"));
    }
    // Exactly one '/' between the parts, whatever the authority ended with.
    token_url = *authority + "/" + settings.tenant_id + "/oauth2/v2.0/token";
  }
  return std::make_unique<EntraSource>(std::move(settings), std::move(token_url), deps);
}

EntraSettings workload_identity_settings(const config::Identity& identity, const SourceDeps& deps) {
  EntraSettings s;
  s.kind = EntraKind::WORKLOAD_IDENTITY;
  s.file = identity.federated_token_file.empty() ? deps.getenv("AZURE_FEDERATED_TOKEN_FILE")
                                                 : identity.federated_token_file;
  s.client_id = identity.client_id.empty() ? deps.getenv("AZURE_CLIENT_ID") : identity.client_id;
  s.tenant_id = identity.tenant_id.empty() ? deps.getenv("AZURE_TENANT_ID") : identity.tenant_id;
  s.authority_host = identity.authority_host.empty() ? deps.getenv("AZURE_AUTHORITY_HOST")
                                                     : identity.authority_host;
  std::string missing;
  auto need = [&](const std::string& value, const char* what) {
    if (value.empty()) {
      missing += missing.empty() ? what : std::string(", ") + what;
    }
  };
  need(s.file, "AZURE_FEDERATED_TOKEN_FILE");
  need(s.client_id, "AZURE_CLIENT_ID");
  need(s.tenant_id, "AZURE_TENANT_ID");
  if (!missing.empty()) {
    s.unavailable_reason = "workload identity: " + missing + " not set";
  }
  return s;
}

}  // namespace miproxy::auth::detail
