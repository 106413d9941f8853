// The `default` identity: environment service principal -> workload identity -> managed
// identity (auto-detected) -> Azure CLI. Each fetch walks the chain from the start; the first
// member that applies (its error is not marked `unavailable`) decides the outcome, success or
// failure, so a transient failure never silently switches to another identity. IMDS, the
// managed-identity fallback, always applies.

#include "auth/source_internal.h"

namespace miproxy::auth::detail {
namespace {

struct Member {
  std::string label;
  std::unique_ptr<TokenSource> source;
};

struct ChainState {
  std::vector<Member> members;
  std::string last_source;
  bool last_supports_claims = false;
};

class DefaultChain : public TokenSource {
 public:
  explicit DefaultChain(std::vector<Member> members) : state_(std::make_shared<ChainState>()) {
    state_->members = std::move(members);
  }

  const std::string& name() const override { return name_; }
  std::string last_source() const override {
    return state_->last_source.empty() ? name_ : state_->last_source;
  }
  bool supports_claims() const override { return state_->last_supports_claims; }

  void fetch(const std::string& scope, const std::string& claims,
             std::function<void(SourceResult)> done) override {
    step(state_, 0, std::string(), scope, claims, std::move(done));
  }

 private:
  static void step(std::shared_ptr<ChainState> state, size_t index, std::string skipped,
                   std::string scope, std::string claims, std::function<void(SourceResult)> done) {
    if (index == state->members.size()) {
      // Reached only from a member's callback, so never inline.
      done(std::unexpected(make_unavailable("default: no source applies: " + skipped)));
      return;
    }
    TokenSource* source = state->members[index].source.get();
    source->fetch(scope, claims,
                  [state, index, skipped, scope, claims,
                   done = std::move(done)](SourceResult result) mutable {
                    const Member& member = state->members[index];
                    if (result) {
                      state->last_source = member.source->name();
                      state->last_supports_claims = member.source->supports_claims();
                      done(std::move(result));
                      return;
                    }
                    if (result.error().unavailable) {
                      std::string why = member.label + ": " + result.error().message;
                      skipped += skipped.empty() ? why : "; " + why;
                      step(state, index + 1, std::move(skipped), std::move(scope),
                           std::move(claims), std::move(done));
                      return;
                    }
                    SourceError error = std::move(result.error());
                    error.message = member.source->name() + ": " + error.message;
                    if (!skipped.empty()) {
                      error.message += " (skipped: " + skipped + ")";
                    }
                    done(std::unexpected(std::move(error)));
                  });
  }

  std::string name_ = "default";
  std::shared_ptr<ChainState> state_;
};

std::unique_ptr<TokenSource> environment_member(const config::Identity& identity,
                                                const SourceDeps& deps) {
  EntraSettings s;
  s.tenant_id = identity.tenant_id.empty() ? deps.getenv("AZURE_TENANT_ID") : identity.tenant_id;
  s.client_id = deps.getenv("AZURE_CLIENT_ID");
  s.authority_host = identity.authority_host.empty() ? deps.getenv("AZURE_AUTHORITY_HOST")
                                                     : identity.authority_host;
  std::string certificate = deps.getenv("AZURE_CLIENT_CERTIFICATE_PATH");
  if (!s.tenant_id.empty() && !s.client_id.empty() && !deps.getenv("AZURE_CLIENT_SECRET").empty()) {
    s.kind = EntraKind::CLIENT_SECRET;
    s.secret_env = "AZURE_CLIENT_SECRET";
  } else if (!s.tenant_id.empty() && !s.client_id.empty() && !certificate.empty()) {
    s.kind = EntraKind::CLIENT_CERTIFICATE;
    s.file = certificate;
    std::string chain = deps.getenv("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN");
    s.send_certificate_chain = chain == "true" || chain == "1" || chain == "True";
  } else {
    return make_failing_source(
        "client_secret",
        make_unavailable("AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or "
                         "AZURE_CLIENT_CERTIFICATE_PATH not set"),
        deps);
  }
  auto source = make_entra_source(s, deps);
  if (!source) {
    return make_failing_source(
        s.kind == EntraKind::CLIENT_SECRET ? "client_secret" : "client_certificate",
        make_error("environment: " + source.error()), deps);
  }
  return std::move(*source);
}

}  // namespace

std::expected<std::unique_ptr<TokenSource>, std::string> make_default_chain(
    const config::Identity& identity, const SourceDeps& deps) {
  std::vector<Member> members;
  members.push_back({"environment", environment_member(identity, deps)});

  EntraSettings wi = workload_identity_settings(identity, deps);
  auto wi_source = make_entra_source(wi, deps);
  members.push_back(
      {"workload_identity",
       wi_source ? std::move(*wi_source)
                 : make_failing_source("workload_identity", make_error(wi_source.error()), deps)});

  config::Identity mi = identity;
  mi.type = config::Identity::Type::MANAGED_IDENTITY;
  auto mi_source = make_managed_identity_source(mi, deps, /*selector_from_env=*/true);
  members.push_back(
      {"managed_identity",
       mi_source ? std::move(*mi_source)
                 : make_failing_source("managed_identity", make_error(mi_source.error()), deps)});

  auto cli = make_azure_cli_source(identity, deps);
  members.push_back(
      {"azure_cli", cli ? std::move(*cli)
                        : make_failing_source("azure_cli", make_unavailable(cli.error()), deps)});
  return std::make_unique<DefaultChain>(std::move(members));
}

}  // namespace miproxy::auth::detail
