#include "auth/source_internal.h"

namespace miproxy::auth {

std::expected<std::unique_ptr<TokenSource>, std::string> make_source(
    const config::Identity& identity, const SourceDeps& deps) {
  using Type = config::Identity::Type;
  if (!deps.defer) {
    return std::unexpected(std::string("internal: SourceDeps.defer is not set"));
  }
  if (!deps.getenv) {
    return std::unexpected(std::string("internal: SourceDeps.getenv is not set"));
  }
  bool needs_http = identity.type != Type::AZURE_CLI && identity.type != Type::TOKEN_FILE;
  if (needs_http && deps.fetcher == nullptr) {
    return std::unexpected(std::string("internal: SourceDeps.fetcher is not set"));
  }
  switch (identity.type) {
    case Type::MANAGED_IDENTITY:
      return detail::make_managed_identity_source(identity, deps, /*selector_from_env=*/false);
    case Type::WORKLOAD_IDENTITY: {
      if (!deps.getenv("AZURE_KUBERNETES_TOKEN_PROXY").empty()) {
        return std::unexpected(
            std::string("AKS identity bindings (AZURE_KUBERNETES_TOKEN_PROXY) are not supported"));
      }
      return detail::make_entra_source(detail::workload_identity_settings(identity, deps), deps);
    }
    case Type::CLIENT_SECRET: {
      detail::EntraSettings s;
      s.kind = detail::EntraKind::CLIENT_SECRET;
      s.tenant_id = identity.tenant_id;
      s.client_id = identity.client_id;
      s.authority_host = identity.authority_host.empty() ? deps.getenv("AZURE_AUTHORITY_HOST")
                                                         : identity.authority_host;
      s.file = identity.secret_file;
      return detail::make_entra_source(std::move(s), deps);
    }
    case Type::CLIENT_CERTIFICATE: {
      detail::EntraSettings s;
      s.kind = detail::EntraKind::CLIENT_CERTIFICATE;
      s.tenant_id = identity.tenant_id;
      s.client_id = identity.client_id;
      s.authority_host = identity.authority_host.empty() ? deps.getenv("AZURE_AUTHORITY_HOST")
                                                         : identity.authority_host;
      s.file = identity.certificate_file;
      s.send_certificate_chain = identity.send_certificate_chain;
      return detail::make_entra_source(std::move(s), deps);
    }
    case Type::AZURE_CLI:
      return detail::make_azure_cli_source(identity, deps);
    case Type::DEFAULT:
      return detail::make_default_chain(identity, deps);
    case Type::TOKEN_FILE:
      return detail::make_token_file_source(identity, deps);
  }
  return std::unexpected(std::string("unknown identity type"));
}

}  // namespace miproxy::auth
