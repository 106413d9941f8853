#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "auth/expiry.h"
#include "auth/form.h"
#include "auth/source_internal.h"

namespace miproxy::auth::detail {
namespace {


bool is_token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '+' || c == '.' || c == '~' || c == '/';
}

std::string string_field(const nlohmann::json& obj, const char* key) {
  auto it = obj.find(key);
  if (it != obj.end() && it->is_string()) {
    return it->get<std::string>();
  }
  return "";
}

std::string first_line(std::string text) {
  size_t end = text.find_first_of("\r\n");
  if (end != std::string::npos) {
    text.resize(end);
  }
  return text;
}

std::string with_context(std::string message, std::string_view context) {
  if (!context.empty()) {
    message += " (";
    message += context;
    message += ")";
  }
  return message;
}

void apply_retry_after(SourceError& error, const FetchResponse& response, Clock::time_point now) {
  std::string value = header_value(response, "Retry-After");
  if (!value.empty()) {
    error.retry_after = parse_retry_after(value, now);
  }
}

class FailingSource : public TokenSource {
 public:
  FailingSource(std::string name, SourceError error, SourceDeps deps)
      : name_(std::move(name)), error_(std::move(error)), deps_(std::move(deps)) {}
  const std::string& name() const override { return name_; }
  void fetch(const std::string&, const std::string&,
             std::function<void(SourceResult)> done) override {
    defer_result(deps_, std::move(done), std::unexpected(error_));
  }

 private:
  std::string name_;
  SourceError error_;
  SourceDeps deps_;
};

}  // namespace

std::string header_value(const FetchResponse& response, std::string_view name) {
  for (const auto& [key, value] : response.headers) {
    if (iequals(key, name)) {
      return value;
    }
  }
  return "";
}

std::string scope_to_resource(const std::string& scope) {
  static constexpr std::string_view kSuffix = "/.default";
  if (scope.size() >= kSuffix.size() &&
      std::string_view(scope).substr(scope.size() - kSuffix.size()) == kSuffix) {
    return scope.substr(0, scope.size() - kSuffix.size());
  }
  return scope;
}

std::string redact_token_like(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (is_token_char(text[i])) {
      size_t j = i;
      while (j < text.size() && is_token_char(text[j])) {
        ++j;
      }
      std::string_view run = text.substr(i, j - i);
      // A JWT anywhere in the run ("eyJ" starts every base64url JSON object), or a long opaque
      // run (secrets, opaque tokens). Paths and GUIDs stay readable.
      bool jwt =
          run.find("eyJ") != std::string_view::npos && run.find('.') != std::string_view::npos;
      size_t longest = 0;
      size_t current = 0;
      for (char c : run) {
        current = (c == '/' || c == '.') ? 0 : current + 1;
        longest = std::max(longest, current);
      }
      if (jwt || longest >= 40) {
        out += "[redacted]";
      } else {
        out.append(run);
      }
      i = j;
    } else {
      unsigned char c = static_cast<unsigned char>(text[i]);
      out.push_back(c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c));
      ++i;
    }
  }
  return out;
}

bool status_retryable(RetryRule rule, int status) {
  switch (rule) {
    case RetryRule::IMDS:
      return status == 404 || status == 408 || status == 410 || status == 429 ||
             (status >= 500 && status <= 599);
    case RetryRule::MANAGED_IDENTITY:
      return status == 404 || status == 408 || status == 429 || status == 500 || status == 503 ||
             status == 504;
    case RetryRule::SERVICE_FABRIC:
    case RetryRule::ENTRA:
      return status == 429 || (status >= 500 && status <= 599);
  }
  return false;
}

std::string describe_error_body(std::string_view body) {
  auto json = nlohmann::json::parse(body, nullptr, false);
  std::string detail;
  if (!json.is_discarded() && json.is_object()) {
    auto error = json.find("error");
    if (error != json.end() && error->is_string()) {
      detail = error->get<std::string>();
      std::string description = first_line(string_field(json, "error_description"));
      if (!description.empty()) {
        detail += ": " + description;
      }
    } else if (error != json.end() && error->is_object()) {
      detail = string_field(*error, "code");
      std::string message = first_line(string_field(*error, "message"));
      if (!message.empty()) {
        detail += detail.empty() ? message : ": " + message;
      }
      std::string correlation = string_field(*error, "correlationId");
      if (!correlation.empty()) {
        detail += " (correlation_id " + correlation + ")";
      }
    } else if (json.contains("message")) {
      detail = first_line(string_field(json, "message"));
      std::string correlation = string_field(json, "correlationId");
      if (!correlation.empty()) {
        detail += " (correlation_id " + correlation + ")";
      }
    }
  }
  // A JSON body without the known error fields is not echoed: it may carry a token (a 200 where
  // a challenge was expected). Other text (an HTML error page) is shown, shortened and redacted.
  if (detail.empty() && json.is_discarded()) {
    detail = trim_whitespace(body);
    if (detail.size() > 200) {
      detail.resize(200);
      detail += "...";
    }
  }
  return redact_token_like(detail);
}

SourceError http_error(std::string_view label, const FetchResponse& response, RetryRule rule,
                       Clock::time_point now, std::string_view context) {
  SourceError error;
  error.http_status = response.status;
  std::string message = std::string(label) + " answered " + std::to_string(response.status);
  std::string detail = describe_error_body(response.body);
  if (!detail.empty()) {
    message += ": " + detail;
  }
  error.message = with_context(std::move(message), context);
  error.retryable = status_retryable(rule, response.status);
  if (rule == RetryRule::IMDS && response.status == 410) {
    error.retry_for = std::chrono::seconds{70};
  }
  apply_retry_after(error, response, now);
  return error;
}

SourceError entra_error(const FetchResponse& response, Clock::time_point now,
                        std::string_view context) {
  SourceError error;
  error.http_status = response.status;
  std::string message = "Entra ID answered " + std::to_string(response.status);
  auto json = nlohmann::json::parse(response.body, nullptr, false);
  if (!json.is_discarded() && json.is_object() && json.contains("error")) {
    std::string code = string_field(json, "error");
    std::string description = first_line(string_field(json, "error_description"));
    std::string aadsts;
    if (auto it = json.find("error_codes");
        it != json.end() && it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
      aadsts = "AADSTS" + std::to_string((*it)[0].get<int64_t>());
    }
    if (!code.empty()) {
      message += ": " + code;
    }
    if (!description.empty()) {
      if (!aadsts.empty() && description.rfind(aadsts, 0) != 0) {
        message += ": " + aadsts;
      }
      message += ": " + description;
    } else if (!aadsts.empty()) {
      message += ": " + aadsts;
    }
    std::string ids;
    std::string trace = string_field(json, "trace_id");
    std::string correlation = string_field(json, "correlation_id");
    if (!trace.empty()) {
      ids += "trace_id " + trace;
    }
    if (!correlation.empty()) {
      ids += (ids.empty() ? "" : ", ") + std::string("correlation_id ") + correlation;
    }
    if (!ids.empty()) {
      message += " [" + ids + "]";
    }
    message = redact_token_like(message);
  } else {
    std::string detail = describe_error_body(response.body);
    if (!detail.empty()) {
      message += ": " + detail;
    }
  }
  error.message = with_context(std::move(message), context);
  error.retryable = status_retryable(RetryRule::ENTRA, response.status);
  apply_retry_after(error, response, now);
  return error;
}

void apply_request_timeout(const SourceDeps& deps, FetchRequest& req) {
  if (deps.request_timeout) {
    req.timeout = deps.request_timeout();
  }
}

SourceError transport_error(std::string_view label, const FetchError& fetch_error,
                            std::string_view context) {
  SourceError error;
  error.message =
      with_context(std::string(label) + " request failed: " + fetch_error.message, context);
  error.timed_out = fetch_error.kind == FetchError::Kind::TIMEOUT;
  switch (fetch_error.kind) {
    case FetchError::Kind::DNS:
    case FetchError::Kind::CONNECT:
    case FetchError::Kind::TIMEOUT:
    case FetchError::Kind::PROTOCOL:
      error.retryable = true;
      break;
    case FetchError::Kind::TLS:
    case FetchError::Kind::TOO_LARGE:
    case FetchError::Kind::CANCELLED:
      error.retryable = false;
      break;
  }
  return error;
}

SourceResult parse_token_body(std::string_view label, const FetchResponse& response,
                              std::string_view token_field, Clock::time_point sent,
                              Clock::time_point now) {
  auto json = nlohmann::json::parse(response.body, nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    SourceError error =
        make_error(std::string(label) + " answered " + std::to_string(response.status) +
                   " with a body that is not a "
                   "JSON object");
    error.http_status = response.status;
    return std::unexpected(error);
  }
  auto token = json.find(token_field);
  if (token == json.end() || !token->is_string() || token->get_ref<const std::string&>().empty()) {
    SourceError error =
        make_error(std::string(label) + " answered " + std::to_string(response.status) +
                   " without " + std::string(token_field));
    error.http_status = response.status;
    return std::unexpected(error);
  }
  auto lifetime = parse_lifetime(json, sent, now);
  if (!lifetime) {
    SourceError error =
        make_error(std::string(label) + " answered " + std::to_string(response.status) +
                   " without a usable expiry (" + lifetime.error() + ")");
    error.http_status = response.status;
    return std::unexpected(error);
  }
  if (lifetime->expires_at <= now) {
    SourceError error = make_error(std::string(label) +
                                   " returned a token that has already expired (check the clock)");
    error.http_status = response.status;
    return std::unexpected(error);
  }
  TokenData data;
  data.access_token = SecretString(token->get<std::string>());
  data.expires_at = lifetime->expires_at;
  data.refresh_at = lifetime->refresh_at;
  // Wipe the copy the JSON document holds.
  auto& held = token->get_ref<std::string&>();
  OPENSSL_cleanse(held.data(), held.size());
  return data;
}

SourceError make_error(std::string message, bool retryable) {
  SourceError error;
  error.message = std::move(message);
  error.retryable = retryable;
  return error;
}

SourceError make_unavailable(std::string message) {
  SourceError error;
  error.message = std::move(message);
  error.unavailable = true;
  return error;
}

void defer_result(const SourceDeps& deps, std::function<void(SourceResult)> done,
                  SourceResult result) {
  auto shared = std::make_shared<SourceResult>(std::move(result));
  deps.defer([done = std::move(done), shared]() mutable { done(std::move(*shared)); });
}

std::expected<std::string, std::string> read_small_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::unexpected("cannot open " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return std::unexpected(path + " is not a regular file");
  }
  if (static_cast<size_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return std::unexpected(path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  std::string data;
  char buf[4096];
  while (true) {
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
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > max_bytes) {
      ::close(fd);
      return std::unexpected(path + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  ::close(fd);
  return data;
}

std::expected<std::string, std::string> normalise_authority(std::string_view authority) {
  std::string value(trim_whitespace(authority));
  if (value.size() < 8 || !iequals(std::string_view(value).substr(0, 8), "https://")) {
    return std::unexpected("authority host must be an https:// URL, not \"" + value + "\"");
  }
  while (!value.empty() && value.back() == '/') {
    value.pop_back();
  }
  if (value.size() <= 8) {
    return std::unexpected("authority host has no host name");
  }
  if (value.find_first_of("?#") != std::string::npos) {
    return std::unexpected("authority host must not carry a query or fragment");
  }
  return value;
}

bool valid_tenant_id(std::string_view tenant) {
  if (tenant.empty()) {
    return false;
  }
  for (char c : tenant) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.';
    if (!ok) {
      return false;
    }
  }
  return true;
}

std::string append_query(const std::string& url, const std::string& query) {
  if (query.empty()) {
    return url;
  }
  char sep = url.find('?') == std::string::npos ? '?' : '&';
  if (!url.empty() && (url.back() == '?' || url.back() == '&')) {
    return url + query;
  }
  return url + sep + query;
}

std::unique_ptr<TokenSource> make_failing_source(std::string name, SourceError error,
                                                 const SourceDeps& deps) {
  return std::make_unique<FailingSource>(std::move(name), std::move(error), deps);
}

}  // namespace miproxy::auth::detail
