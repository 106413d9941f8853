#pragma once
// A string that holds a secret (access token, client secret, assertion, key file bytes). Its
// memory is cleansed with OPENSSL_cleanse when it is destroyed or reassigned, and it has no
// stream operator or implicit conversion, so it cannot end up in a log line by accident.

#include <string>
#include <string_view>

#include <openssl/crypto.h>

namespace miproxy {

class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string value) : value_(std::move(value)) {}
  SecretString(const SecretString& other) : value_(other.value_) {}
  SecretString(SecretString&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }
  SecretString& operator=(const SecretString& other) {
    if (this != &other) {
      wipe();
      value_ = other.value_;
    }
    return *this;
  }
  SecretString& operator=(SecretString&& other) noexcept {
    if (this != &other) {
      wipe();
      value_ = std::move(other.value_);
      other.wipe();
    }
    return *this;
  }
  ~SecretString() { wipe(); }

  // The secret itself: only for the place that must send it (a header, a form field).
  std::string_view reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  size_t size() const { return value_.size(); }

 private:
  void wipe() {
    if (!value_.empty()) OPENSSL_cleanse(value_.data(), value_.size());
    // Also cleanse the small-string buffer/capacity tail.
    if (value_.capacity() > 0) OPENSSL_cleanse(value_.data(), value_.capacity());
    value_.clear();
  }
  std::string value_;
};

}  // namespace miproxy
