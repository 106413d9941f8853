// Managed-identity token sources (token-sources.md §0-§6): IMDS, App Service 2019, the legacy
// MSI_ENDPOINT+MSI_SECRET protocol, Azure Arc (with its 401 key-file challenge), Service Fabric
// and Cloud Shell. One class; the kind decides the request shape and the retry rule.

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "auth/form.h"
#include "auth/jwt.h"
#include "auth/source_internal.h"

namespace miproxy::auth::detail {
namespace {

constexpr char kImdsBase[] = "http://169.254.169.254";
constexpr char kTokenPath[] = "/metadata/identity/oauth2/token";
constexpr char kArcDefaultEndpoint[] = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
constexpr size_t kArcKeyMaxBytes = 4096;

enum class Kind { IMDS, APP_SERVICE, APP_SERVICE_2017, ARC, SERVICE_FABRIC, CLOUD_SHELL };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::IMDS:
      return "imds";
    case Kind::APP_SERVICE:
      return "app_service";
    case Kind::APP_SERVICE_2017:
      return "app_service_2017";
    case Kind::ARC:
      return "arc";
    case Kind::SERVICE_FABRIC:
      return "service_fabric";
    case Kind::CLOUD_SHELL:
      return "cloud_shell";
  }
  return "?";
}

const char* kind_label(Kind kind) {
  switch (kind) {
    case Kind::IMDS:
      return "IMDS";
    case Kind::APP_SERVICE:
      return "App Service";
    case Kind::APP_SERVICE_2017:
      return "App Service 2017 (MSI_ENDPOINT)";
    case Kind::ARC:
      return "Azure Arc";
    case Kind::SERVICE_FABRIC:
      return "Service Fabric";
    case Kind::CLOUD_SHELL:
      return "Cloud Shell";
  }
  return "?";
}

RetryRule kind_rule(Kind kind) {
  switch (kind) {
    case Kind::IMDS:
      return RetryRule::IMDS;
    case Kind::SERVICE_FABRIC:
      return RetryRule::SERVICE_FABRIC;
    default:
      return RetryRule::MANAGED_IDENTITY;
  }
}

enum class SelectorKind { NONE, CLIENT_ID, OBJECT_ID, RESOURCE_ID };

struct Selector {
  SelectorKind kind = SelectorKind::NONE;
  std::string value;
  // Words for messages: "client_id 1111...", "system-assigned".
  std::string describe() const {
    switch (kind) {
      case SelectorKind::NONE:
        return "system-assigned";
      case SelectorKind::CLIENT_ID:
        return "client_id " + value;
      case SelectorKind::OBJECT_ID:
        return "object_id " + value;
      case SelectorKind::RESOURCE_ID:
        return "resource_id " + value;
    }
    return "";
  }
  const char* config_key() const {
    switch (kind) {
      case SelectorKind::CLIENT_ID:
        return "client_id";
      case SelectorKind::OBJECT_ID:
        return "object_id";
      case SelectorKind::RESOURCE_ID:
        return "resource_id";
      default:
        return "";
    }
  }
};

struct Settings {
  Kind kind = Kind::IMDS;
  std::string name;
  std::string endpoint;  // identity.endpoint: the full token URL, overriding the environment
  Selector selector;
};

bool is_set(const SourceDeps& deps, const char* name) { return !deps.getenv(name).empty(); }

std::string sha256_hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr);
  return hex_encode(std::string_view(reinterpret_cast<char*>(out), len), false);
}

// "AB:cd ef..." -> "ABCDEF...", or "" when it is not 40 hex digits.
std::string normalise_thumbprint(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == ':' || c == ' ') {
      continue;
    }
    bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex) {
      return "";
    }
    out.push_back(c);
  }
  return out.size() == 40 ? out : "";
}

// Arc challenge (token-sources.md §4 step 3): "Basic realm=<dir>/<name>.key", <dir> exactly the
// expected directory, no "." / ".." / empty components, at most 4096 bytes (checked with lstat
// before reading, and again on the open descriptor). Returns the file bytes.
std::expected<SecretString, std::string> read_arc_key(std::string_view header,
                                                      const std::string& directory) {
  static constexpr std::string_view kPrefix = "Basic realm=";
  std::string value = trim_whitespace(header);
  if (value.size() <= kPrefix.size() ||
      !iequals(std::string_view(value).substr(0, kPrefix.size()), kPrefix)) {
    return std::unexpected(std::string("challenge is not \"Basic realm=<key file>\""));
  }
  std::string path = value.substr(kPrefix.size());
  if (path.empty() || path[0] != '/') {
    return std::unexpected("challenge names \"" + path + "\", not an absolute path");
  }
  std::filesystem::path p(path);
  for (const auto& part : p.relative_path()) {
    if (part == "." || part == ".." || part.empty()) {
      return std::unexpected("challenge path \"" + path + "\" contains . or .. components");
    }
  }
  if (p.lexically_normal().string() != path) {
    return std::unexpected("challenge path \"" + path + "\" is not in normal form");
  }
  std::string expected_dir = std::filesystem::path(directory).lexically_normal().string();
  while (expected_dir.size() > 1 && expected_dir.back() == '/') {
    expected_dir.pop_back();
  }
  if (p.parent_path().string() != expected_dir) {
    return std::unexpected("challenge names a file outside " + expected_dir + ": " + path);
  }
  std::string filename = p.filename().string();
  if (filename.size() <= 4 || filename.substr(filename.size() - 4) != ".key") {
    return std::unexpected("challenge file \"" + path + "\" does not end in .key");
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return std::unexpected("cannot stat " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return std::unexpected(path + " is not a regular file");
  }
  if (static_cast<size_t>(st.st_size) > kArcKeyMaxBytes) {
    return std::unexpected(path + " is " + std::to_string(st.st_size) +
                           " bytes; an Arc key file is at most 4096 bytes");
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int err = errno;
    std::string hint = err == EACCES ? " (the service account must be in the himds group)" : "";
    return std::unexpected("cannot open " + path + ": " + std::strerror(err) + hint);
  }
  std::string bytes;
  char buf[kArcKeyMaxBytes + 1];
  while (bytes.size() <= kArcKeyMaxBytes) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return std::unexpected("cannot read " + path + ": " + std::strerror(err));
    }
    if (n == 0) {
      break;
    }
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  SecretString key(std::move(bytes));
  if (key.size() > kArcKeyMaxBytes) {
    return std::unexpected(path + " grew past 4096 bytes while being read");
  }
  if (key.empty()) {
    return std::unexpected(path + " is empty");
  }
  for (char c : key.reveal()) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return std::unexpected(path + " contains control characters");
    }
  }
  return key;
}

class ManagedIdentitySource : public TokenSource {
 public:
  ManagedIdentitySource(Settings settings, SourceDeps deps)
      : state_(std::make_shared<State>(State{std::move(settings), std::move(deps), {}})) {}

  const std::string& name() const override { return state_->settings.name; }
  bool supports_claims() const override { return state_->settings.kind == Kind::SERVICE_FABRIC; }

  void fetch(const std::string& scope, const std::string& claims,
             std::function<void(SourceResult)> done) override {
    auto request = build_request(scope, claims);
    if (!request) {
      defer_result(state_->deps, std::move(done), std::unexpected(request.error()));
      return;
    }
    auto state = state_;
    if (state->settings.kind == Kind::ARC) {
      FetchRequest first = *request;
      state->deps.fetcher->fetch(
          std::move(first),
          [state, request = *request, scope, done = std::move(done)](FetchResult result) mutable {
            arc_challenge_answered(state, std::move(request), scope, std::move(result),
                                   std::move(done));
          });
      return;
    }
    Clock::time_point sent = state->deps.now();
    state->deps.fetcher->fetch(std::move(*request),
                               [state, sent, scope, done = std::move(done)](FetchResult result) {
                                 done(finish(*state, scope, sent, std::move(result)));
                               });
  }

 private:
  struct State {
    Settings settings;
    SourceDeps deps;
    // Service Fabric claims: lower-case hex SHA-256 of the last token returned per scope.
    std::map<std::string, std::string> last_token_sha256;
  };

  std::expected<FetchRequest, SourceError> build_request(const std::string& scope,
                                                         const std::string& claims) const {
    const Settings& s = state_->settings;
    const SourceDeps& deps = state_->deps;
    std::string resource = scope_to_resource(scope);
    std::string label = kind_label(s.kind);
    auto missing = [&](const char* var) {
      return std::unexpected(make_error(label + ": " + var + " is not set"));
    };
    FetchRequest req;
    req.ca_file = deps.ca_file;
    apply_request_timeout(deps, req);
    FormFields query;
    switch (s.kind) {
      case Kind::IMDS: {
        std::string url = s.endpoint;
        if (url.empty()) {
          std::string base = deps.getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST");
          while (!base.empty() && base.back() == '/') {
            base.pop_back();
          }
          url = (base.empty() ? std::string(kImdsBase) : base) + kTokenPath;
        }
        query = {{"api-version", "2018-02-01"}, {"resource", resource}};
        if (s.selector.kind == SelectorKind::CLIENT_ID) {
          query.emplace_back("client_id", s.selector.value);
        } else if (s.selector.kind == SelectorKind::OBJECT_ID) {
          query.emplace_back("object_id", s.selector.value);
        } else if (s.selector.kind == SelectorKind::RESOURCE_ID) {
          query.emplace_back("msi_res_id", s.selector.value);
        }
        req.url = append_query(url, form_encode(query));
        req.headers = {{"Metadata", "true"}};
        break;
      }
      case Kind::APP_SERVICE: {
        std::string url = s.endpoint.empty() ? deps.getenv("IDENTITY_ENDPOINT") : s.endpoint;
        std::string secret = deps.getenv("IDENTITY_HEADER");
        if (url.empty()) {
          return missing("IDENTITY_ENDPOINT");
        }
        if (secret.empty()) {
          return missing("IDENTITY_HEADER");
        }
        query = {{"resource", resource}, {"api-version", "2019-08-01"}};
        if (s.selector.kind == SelectorKind::CLIENT_ID) {
          query.emplace_back("client_id", s.selector.value);
        } else if (s.selector.kind == SelectorKind::OBJECT_ID) {
          query.emplace_back("principal_id", s.selector.value);
        } else if (s.selector.kind == SelectorKind::RESOURCE_ID) {
          query.emplace_back("mi_res_id", s.selector.value);
        }
        req.url = append_query(url, form_encode(query));
        req.headers = {{"X-IDENTITY-HEADER", secret}};
        break;
      }
      case Kind::APP_SERVICE_2017: {
        std::string url = s.endpoint.empty() ? deps.getenv("MSI_ENDPOINT") : s.endpoint;
        std::string secret = deps.getenv("MSI_SECRET");
        if (url.empty()) {
          return missing("MSI_ENDPOINT");
        }
        if (secret.empty()) {
          return missing("MSI_SECRET");
        }
        query = {{"resource", resource}, {"api-version", "2017-09-01"}};
        std::string client_id = s.selector.value;
        if (s.selector.kind == SelectorKind::NONE) {
          // Azure ML: the compute's default identity when system-assigned was asked for.
          client_id = deps.getenv("DEFAULT_IDENTITY_CLIENT_ID");
        }
        if (!client_id.empty()) {
          query.emplace_back("clientid", client_id);
        }
        req.url = append_query(url, form_encode(query));
        req.headers = {{"secret", secret}};
        break;
      }
      case Kind::ARC: {
        std::string url = s.endpoint;
        if (url.empty()) {
          url = deps.getenv("IDENTITY_ENDPOINT");
        }
        if (url.empty()) {
          url = kArcDefaultEndpoint;
        }
        query = {{"api-version", "2020-06-01"}, {"resource", resource}};
        req.url = append_query(url, form_encode(query));
        req.headers = {{"Metadata", "true"}};
        break;
      }
      case Kind::SERVICE_FABRIC: {
        std::string url = s.endpoint.empty() ? deps.getenv("IDENTITY_ENDPOINT") : s.endpoint;
        std::string secret = deps.getenv("IDENTITY_HEADER");
        std::string thumbprint = deps.getenv("IDENTITY_SERVER_THUMBPRINT");
        if (url.empty()) {
          return missing("IDENTITY_ENDPOINT");
        }
        if (secret.empty()) {
          return missing("IDENTITY_HEADER");
        }
        if (thumbprint.empty()) {
          return missing("IDENTITY_SERVER_THUMBPRINT");
        }
        req.pinned_sha1 = normalise_thumbprint(thumbprint);
        if (req.pinned_sha1.empty()) {
          return std::unexpected(
              make_error(label + ": IDENTITY_SERVER_THUMBPRINT is not 40 hex digits"));
        }
        query = {{"api-version", "2019-07-01-preview"}, {"resource", resource}};
        if (!claims.empty()) {
          // Token revocation extension (§5): bypass the Service Fabric token cache.
          query.emplace_back("xms_cc", "cp1");
          auto it = state_->last_token_sha256.find(scope);
          if (it != state_->last_token_sha256.end()) {
            query.emplace_back("token_sha256_to_refresh", it->second);
          }
        }
        req.url = append_query(url, form_encode(query));
        req.headers = {{"Secret", secret}, {"Accept", "application/json"}};
        break;
      }
      case Kind::CLOUD_SHELL: {
        std::string url = s.endpoint.empty() ? deps.getenv("MSI_ENDPOINT") : s.endpoint;
        if (url.empty()) {
          return missing("MSI_ENDPOINT");
        }
        req.method = "POST";
        req.url = url;
        req.headers = {{"Metadata", "true"}, {"Content-Type", "application/x-www-form-urlencoded"}};
        req.body = form_encode({{"resource", resource}});
        break;
      }
    }
    return req;
  }

  static SourceResult finish(State& state, const std::string& scope, Clock::time_point sent,
                             FetchResult result) {
    const Settings& s = state.settings;
    std::string label = kind_label(s.kind);
    std::string context = s.selector.describe();
    if (!result) {
      return std::unexpected(transport_error(label, result.error(), context));
    }
    Clock::time_point now = state.deps.now();
    if (result->status < 200 || result->status > 299) {
      return std::unexpected(http_error(label, *result, kind_rule(s.kind), now, context));
    }
    auto token = parse_token_body(label, *result, "access_token", sent, now);
    if (token && s.kind == Kind::SERVICE_FABRIC) {
      state.last_token_sha256[scope] = sha256_hex(token->access_token.reveal());
    }
    return token;
  }

  static void arc_challenge_answered(std::shared_ptr<State> state, FetchRequest request,
                                     const std::string& scope, FetchResult result,
                                     std::function<void(SourceResult)> done) {
    std::string label = kind_label(Kind::ARC);
    if (!result) {
      done(std::unexpected(transport_error(label, result.error(), "")));
      return;
    }
    Clock::time_point now = state->deps.now();
    if (result->status != 401) {
      SourceError error = http_error(label, *result, RetryRule::MANAGED_IDENTITY, now, "");
      error.message += "; expected 401 with a key-file challenge";
      error.retryable = error.retryable && result->status != 200;
      done(std::unexpected(std::move(error)));
      return;
    }
    std::string challenge = header_value(*result, "WWW-Authenticate");
    if (challenge.empty()) {
      SourceError error = make_error(label + " answered 401 without a WWW-Authenticate header");
      error.http_status = 401;
      done(std::unexpected(std::move(error)));
      return;
    }
    auto key = read_arc_key(challenge, state->deps.arc_key_directory);
    if (!key) {
      SourceError error = make_error(label + " key-file challenge refused: " + key.error());
      error.http_status = 401;
      done(std::unexpected(std::move(error)));
      return;
    }
    request.headers.emplace_back("Authorization", "Basic " + std::string(key->reveal()));
    Clock::time_point sent = state->deps.now();
    state->deps.fetcher->fetch(std::move(request),
                               [state, sent, scope, done = std::move(done)](FetchResult second) {
                                 done(finish(*state, scope, sent, std::move(second)));
                               });
  }

  std::shared_ptr<State> state_;
};

}  // namespace

std::expected<std::unique_ptr<TokenSource>, std::string> make_managed_identity_source(
    const config::Identity& identity, const SourceDeps& deps, bool selector_from_env) {
  Settings settings;
  settings.endpoint = identity.endpoint;
  int selectors = 0;
  if (!identity.client_id.empty()) {
    settings.selector = {SelectorKind::CLIENT_ID, identity.client_id};
    ++selectors;
  }
  if (!identity.object_id.empty()) {
    settings.selector = {SelectorKind::OBJECT_ID, identity.object_id};
    ++selectors;
  }
  if (!identity.resource_id.empty()) {
    settings.selector = {SelectorKind::RESOURCE_ID, identity.resource_id};
    ++selectors;
  }
  if (selectors > 1) {
    return std::unexpected(
        std::string("at most one of client_id, object_id and resource_id may be given"));
  }

  const std::string& forced = identity.source;
  if (forced.empty()) {
    bool identity_endpoint = is_set(deps, "IDENTITY_ENDPOINT");
    bool identity_header = is_set(deps, "IDENTITY_HEADER");
    bool msi_endpoint = is_set(deps, "MSI_ENDPOINT");
    if (identity_endpoint && identity_header && is_set(deps, "IDENTITY_SERVER_THUMBPRINT")) {
      settings.kind = Kind::SERVICE_FABRIC;
    } else if (identity_endpoint && identity_header) {
      settings.kind = Kind::APP_SERVICE;
    } else if (msi_endpoint && is_set(deps, "MSI_SECRET")) {
      settings.kind = Kind::APP_SERVICE_2017;
    } else if (msi_endpoint) {
      settings.kind = Kind::CLOUD_SHELL;
    } else if ((identity_endpoint && is_set(deps, "IMDS_ENDPOINT")) ||
               (!deps.arc_agent_binary.empty() &&
                ::access(deps.arc_agent_binary.c_str(), F_OK) == 0)) {
      settings.kind = Kind::ARC;
    } else {
      settings.kind = Kind::IMDS;
    }
  } else if (forced == "imds") {
    settings.kind = Kind::IMDS;
  } else if (forced == "app_service") {
    // The 2019 protocol, unless only the legacy variables are present.
    bool legacy = !is_set(deps, "IDENTITY_ENDPOINT") && is_set(deps, "MSI_ENDPOINT") &&
                  is_set(deps, "MSI_SECRET");
    settings.kind = legacy ? Kind::APP_SERVICE_2017 : Kind::APP_SERVICE;
  } else if (forced == "arc") {
    settings.kind = Kind::ARC;
  } else if (forced == "service_fabric") {
    settings.kind = Kind::SERVICE_FABRIC;
  } else if (forced == "cloud_shell") {
    settings.kind = Kind::CLOUD_SHELL;
  } else {
    return std::unexpected("unknown managed identity source \"" + forced +
                           "\" (imds, app_service, arc, service_fabric, cloud_shell)");
  }

  // In the `default` chain, AZURE_CLIENT_ID selects a user-assigned identity where the protocol
  // can select one (as the SDKs' DefaultAzureCredential does).
  bool can_select = settings.kind == Kind::IMDS || settings.kind == Kind::APP_SERVICE ||
                    settings.kind == Kind::APP_SERVICE_2017;
  if (selector_from_env && selectors == 0 && can_select) {
    std::string env_client_id = deps.getenv("AZURE_CLIENT_ID");
    if (!env_client_id.empty()) {
      settings.selector = {SelectorKind::CLIENT_ID, env_client_id};
    }
  }

  const Selector& sel = settings.selector;
  if (sel.kind != SelectorKind::NONE) {
    std::string given = std::string(" (") + sel.config_key() + " given)";
    switch (settings.kind) {
      case Kind::ARC:
        return std::unexpected("Azure Arc cannot select a user-assigned identity" + given);
      case Kind::SERVICE_FABRIC:
        return std::unexpected(
            "Service Fabric cannot select a user-assigned identity; the application's "
            "configuration fixes it" +
            given);
      case Kind::CLOUD_SHELL:
        return std::unexpected("Cloud Shell cannot select a user-assigned identity" + given);
      case Kind::APP_SERVICE_2017:
        if (sel.kind != SelectorKind::CLIENT_ID) {
          return std::unexpected(
              "App Service 2017 (MSI_ENDPOINT) can select a user-assigned identity only by "
              "client_id" +
              given);
        }
        break;
      default:
        break;
    }
  }
  settings.name = kind_name(settings.kind);
  return std::make_unique<ManagedIdentitySource>(std::move(settings), deps);
}

}  // namespace miproxy::auth::detail
