// A bearer token read from a file (interface.md `token_file`). The file is read again on every
// fetch. Expiry: the JWT `exp` claim when the contents are a JWT; otherwise the token is taken
// as valid for 5 minutes after the read. refresh_at is one minute after the read, so a replaced
// file is in use within about a minute without watching it.

#include "auth/form.h"
#include "auth/jwt.h"
#include "auth/source_internal.h"

namespace miproxy::auth::detail {
namespace {

constexpr size_t kMaxTokenBytes = 64 * 1024;
constexpr std::chrono::minutes kOpaqueLifetime{5};
constexpr std::chrono::seconds kReread{60};

class TokenFileSource : public TokenSource {
 public:
  TokenFileSource(std::string path, SourceDeps deps)
      : path_(std::move(path)), deps_(std::move(deps)) {}

  const std::string& name() const override { return name_; }

  void fetch(const std::string&, const std::string&,
             std::function<void(SourceResult)> done) override {
    defer_result(deps_, std::move(done), read());
  }

 private:
  SourceResult read() const {
    auto contents = read_small_file(path_, kMaxTokenBytes);
    if (!contents) {
      return std::unexpected(make_error("token file: " + contents.error(), true));
    }
    SecretString raw(std::move(*contents));
    SecretString token(trim_whitespace(raw.reveal()));
    if (token.empty()) {
      return std::unexpected(make_error("token file " + path_ + " is empty", true));
    }
    Clock::time_point now = deps_.now();
    TokenData data;
    data.expires_at = now + kOpaqueLifetime;
    if (auto claims = decode_jwt_claims(token.reveal()); claims && claims->exp) {
      data.expires_at = Clock::time_point{std::chrono::seconds{*claims->exp}};
      if (data.expires_at <= now) {
        return std::unexpected(make_error(
            "the token in " + path_ + " has expired (its exp claim is in the past)", true));
      }
    }
    data.refresh_at = std::min(now + kReread, data.expires_at);
    data.access_token = std::move(token);
    return data;
  }

  std::string name_ = "token_file";
  std::string path_;
  SourceDeps deps_;
};

}  // namespace

std::expected<std::unique_ptr<TokenSource>, std::string> make_token_file_source(
    const config::Identity& identity, const SourceDeps& deps) {
  if (identity.path.empty()) {
    return std::unexpected(std::string("token_file needs a path"));
  }
  return std::make_unique<TokenFileSource>(identity.path, deps);
}

}  // namespace miproxy::auth::detail
