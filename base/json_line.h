#pragma once
// Builds one flat JSON object into a string without a DOM: the access log writes one per
// request, where nlohmann::json's allocations per field would show. Strings are escaped per
// RFC 8259 by append_json_string: invalid UTF-8 is replaced, so a line is valid JSON whatever
// bytes a client sent.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "base/json_string.h"

namespace miproxy {

class JsonLine {
 public:
  JsonLine() { out_.reserve(512); out_.push_back('{'); }

  JsonLine& add(std::string_view key, std::string_view value) {
    key_(key);
    quote(value);
    return *this;
  }
  JsonLine& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  JsonLine& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  JsonLine& add(std::string_view key, int64_t value) {
    key_(key);
    out_.append(std::to_string(value));
    return *this;
  }
  JsonLine& add(std::string_view key, int value) { return add(key, static_cast<int64_t>(value)); }
  JsonLine& add(std::string_view key, uint64_t value) {
    key_(key);
    out_.append(std::to_string(value));
    return *this;
  }
  JsonLine& add(std::string_view key, double value) {
    key_(key);
    if (!std::isfinite(value)) {  // JSON has no NaN or infinity
      out_.append("null");
      return *this;
    }
    char buf[32];
    int n = std::snprintf(buf, sizeof buf, "%.3f", value);
    out_.append(buf, static_cast<size_t>(n));
    return *this;
  }
  // The finished object, without a trailing newline.
  std::string finish() {
    out_.push_back('}');
    return std::move(out_);
  }

 private:
  void key_(std::string_view key) {
    if (out_.size() > 1) out_.push_back(',');
    quote(key);
    out_.push_back(':');
  }
  void quote(std::string_view s) { append_json_string(out_, s); }
  std::string out_;
};

}  // namespace miproxy
