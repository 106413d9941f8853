#pragma once
// Builds one flat JSON object into a string without a DOM: the access log writes one per
// request, where nlohmann::json's allocations per field would show. Strings are escaped per
// RFC 8259; bytes >= 0x80 that do not form valid UTF-8 are not checked (paths and names come
// from llhttp's strict parser and the config, both ASCII).

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

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
  void quote(std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out_.push_back('"');
    for (char c : s) {
      auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out_.push_back('\\');
        out_.push_back(c);
      } else if (u < 0x20 || u == 0x7f) {
        out_.append("\\u00");
        out_.push_back(kHex[u >> 4]);
        out_.push_back(kHex[u & 15]);
      } else {
        out_.push_back(c);
      }
    }
    out_.push_back('"');
  }
  std::string out_;
};

}  // namespace miproxy
