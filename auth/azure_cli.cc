// The developer's `az login` (token-sources.md §10): `az account get-access-token` run without a
// shell from a fixed list of OS-owned directories, with a validated scope and a timeout.

#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "auth/expiry.h"
#include "auth/source_internal.h"

namespace miproxy::auth::detail {
namespace {

// Variables `az` needs to find its Python, its profile and the network; nothing else of the
// proxy's environment is passed on.
constexpr const char* kPassThrough[] = {"PATH",
                                        "HOME",
                                        "USER",
                                        "LOGNAME",
                                        "LANG",
                                        "LC_ALL",
                                        "TMPDIR",
                                        "AZURE_CONFIG_DIR",
                                        "AZURE_EXTENSION_DIR",
                                        "REQUESTS_CA_BUNDLE",
                                        "HTTPS_PROXY",
                                        "HTTP_PROXY",
                                        "NO_PROXY",
                                        "https_proxy",
                                        "http_proxy",
                                        "no_proxy"};

bool valid_scope(std::string_view scope) {
  if (scope.empty()) {
    return false;
  }
  for (char c : scope) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '/' || c == '_';
    if (!ok) {
      return false;
    }
  }
  return true;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

SourceResult parse_cli_output(const std::string& out) {
  auto json = nlohmann::json::parse(out, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    return std::unexpected(make_error("Azure CLI printed something that is not a JSON object"));
  }
  auto token = json.find("accessToken");
  if (token == json.end() || !token->is_string() || token->get_ref<const std::string&>().empty()) {
    return std::unexpected(make_error("Azure CLI output has no accessToken"));
  }
  std::optional<Clock::time_point> expires;
  if (auto it = json.find("expires_on"); it != json.end() && !it->is_null()) {
    // Integer POSIX seconds (CLI 2.54.0 and later); a numeric string is tolerated.
    if (it->is_number_integer() || it->is_string()) {
      auto text = it->is_string() ? it->get<std::string>() : std::string();
      if (it->is_number_integer() || parse_decimal(text)) {
        expires = parse_expires_on(*it);
      }
    }
  }
  if (!expires) {
    if (auto it = json.find("expiresOn"); it != json.end() && it->is_string()) {
      expires = parse_cli_local_time(it->get<std::string>());
    }
  }
  if (!expires) {
    return std::unexpected(make_error("Azure CLI output has no usable expires_on or expiresOn"));
  }
  TokenData data;
  data.access_token = SecretString(token->get<std::string>());
  data.expires_at = *expires;
  auto& held = token->get_ref<std::string&>();
  OPENSSL_cleanse(held.data(), held.size());
  return data;
}

class AzureCliSource : public TokenSource {
 public:
  AzureCliSource(std::string tenant, SourceDeps deps)
      : tenant_(std::move(tenant)), deps_(std::move(deps)) {}

  const std::string& name() const override { return name_; }

  void fetch(const std::string& scope, const std::string& claims,
             std::function<void(SourceResult)> done) override {
    std::string az;
    for (const auto& dir : deps_.az_search_path) {
      std::string candidate = dir + "/az";
      struct stat st {};
      if (!dir.empty() && dir[0] == '/' && ::stat(candidate.c_str(), &st) == 0 &&
          S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
        az = candidate;
        break;
      }
    }
    if (az.empty()) {
      defer_result(deps_, std::move(done),
                   std::unexpected(make_unavailable("Azure CLI not installed (no az in " +
                                                    search_path_words() + ")")));
      return;
    }
    if (!valid_scope(scope)) {
      defer_result(deps_, std::move(done),
                   std::unexpected(make_error(
                       "scope \"" + scope +
                       "\" has characters the Azure CLI invocation refuses (allowed: letters, "
                       "digits and .-:/_)")));
      return;
    }
    std::vector<std::string> argv = {az,        "account", "get-access-token", "--output", "json",
                                     "--scope", scope};
    if (!tenant_.empty()) {
      argv.push_back("--tenant");
      argv.push_back(tenant_);
    }
    std::vector<std::string> env = {"AZURE_CORE_NO_COLOR=true"};
    for (const char* name : kPassThrough) {
      std::string value = deps_.getenv(name);
      if (!value.empty()) {
        env.push_back(std::string(name) + "=" + value);
      }
    }
    if (deps_.getenv("PATH").empty()) {
      env.push_back("PATH=/usr/bin:/bin");
    }
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(deps_.az_timeout).count();
    deps_.processes->run(
        std::move(argv), std::move(env), deps_.az_timeout,
        [seconds, done = std::move(done)](ProcessResult result) {
          if (result.timed_out) {
            SourceError error =
                make_error("Azure CLI did not answer within " + std::to_string(seconds) + " s", true);
            error.timed_out = true;
            done(std::unexpected(std::move(error)));
            return;
          }
          if (result.spawn_failed || result.exit_code == 127) {
            done(std::unexpected(make_unavailable("Azure CLI not installed")));
            return;
          }
          if (result.exit_code != 0) {
            if (contains(result.err, "az login") || contains(result.err, "az account set")) {
              done(std::unexpected(make_unavailable("Azure CLI not logged in: run az login")));
              return;
            }
            std::string detail = redact_token_like(result.err);
            while (!detail.empty() && detail.back() == ' ') {
              detail.pop_back();
            }
            if (detail.size() > 300) {
              detail.resize(300);
              detail += "...";
            }
            done(std::unexpected(make_error("Azure CLI failed (exit " +
                                            std::to_string(result.exit_code) + ")" +
                                            (detail.empty() ? std::string() : ": " + detail))));
            return;
          }
          SourceResult parsed = parse_cli_output(result.out);
          OPENSSL_cleanse(result.out.data(), result.out.size());
          done(std::move(parsed));
        });
  }

 private:
  std::string search_path_words() const {
    std::string words;
    for (const auto& dir : deps_.az_search_path) {
      words += words.empty() ? dir : ", " + dir;
    }
    return words;
  }

  std::string name_ = "azure_cli";
  std::string tenant_;
  SourceDeps deps_;
};

}  // namespace

std::expected<std::unique_ptr<TokenSource>, std::string> make_azure_cli_source(
    const config::Identity& identity, const SourceDeps& deps) {
  if (!identity.tenant_id.empty() && !valid_tenant_id(identity.tenant_id)) {
    return std::unexpected("tenant_id \"" + identity.tenant_id +
                           "\" must be a GUID or domain name (letters, digits, '-', '.')");
  }
  if (deps.processes == nullptr) {
    return std::unexpected(std::string("azure_cli needs a process runner"));
  }
  return std::make_unique<AzureCliSource>(identity.tenant_id, deps);
}

}  // namespace miproxy::auth::detail
