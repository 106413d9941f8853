#pragma once
// Internal to config/: the machinery behind parse(). Each JSON object of the config file is
// described by one static table of Field entries (key, JSON kind, which variants allow or
// require it, and a validator that stores the value), walked by read_object(). The walker
// reports unknown keys, wrong kinds and missing required keys itself, so the per-field code only
// checks values. Every problem becomes a Diagnostic naming the JSON path; nothing throws.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/ascii.h"
#include "config/config.h"

namespace miproxy::config::schema {

// Insertion-ordered JSON so diagnostics come out in file order and headers.set keeps its order.
using Json = nlohmann::ordered_json;

// Collects errors and warnings while a document is walked.
struct Ctx {
  std::vector<Diagnostic> errors;
  std::vector<Diagnostic> warnings;
  void error(std::string path, std::string message) {
    errors.push_back({std::move(path), std::move(message)});
  }
  void warn(std::string path, std::string message) {
    warnings.push_back({std::move(path), std::move(message)});
  }
};

// "routes[2]" + "upstream" -> "routes[2].upstream"; keys that are not identifier-like are
// quoted: identities["my id"].
std::string child_path(const std::string& parent, std::string_view key);
// "routes" + 2 -> "routes[2]".
std::string index_path(const std::string& parent, size_t index);

// The JSON kind a field must have; read_object() checks it before calling the validator.
enum class Kind { STRING, BOOL, NUMBER, UINT, OBJECT, ARRAY, ANY };

// Variant bits: objects without variants use ALL; identities use one bit per Identity::Type.
constexpr uint32_t ALL = 0xffffffffu;
constexpr uint32_t NONE = 0;

template <typename T>
struct Field {
  std::string_view key;
  Kind kind;
  uint32_t allowed;   // variants in which the key may appear
  uint32_t required;  // variants in which the key must appear
  void (*apply)(Ctx& ctx, const Json& value, const std::string& path, T& out);
};

// Human name of a kind, for "must be a string" style messages.
const char* kind_name(Kind kind);
bool kind_matches(Kind kind, const Json& value);

// The closest of |candidates| to |key| within edit distance 2, or "" when none is close.
std::string suggest(std::string_view key, std::span<const std::string_view> candidates);

// Message for a key that is not in the table at all (typo or unsupported option).
std::string unknown_key_message(std::string_view key, std::span<const std::string_view> known);

// Walks |object| (already known to be a JSON object) against |fields|. |variant_bit| selects
// which keys are allowed/required (ALL for plain objects); |variant_name| names the variant in
// messages ("for type client_secret"). Keys in |skip| are handled by the caller.
template <typename T>
void read_object(Ctx& ctx, const Json& object, const std::string& path,
                 std::span<const Field<T>> fields, T& out, uint32_t variant_bit = ALL,
                 std::string_view variant_name = {}, std::span<const std::string_view> skip = {}) {
  std::vector<std::string_view> known;
  for (const auto& f : fields) {
    known.push_back(f.key);
  }
  std::vector<bool> seen(fields.size(), false);
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string& key = it.key();
    std::string key_path = child_path(path, key);
    bool skipped = false;
    for (auto s : skip) {
      if (s == key) {
        skipped = true;
      }
    }
    if (skipped) {
      continue;
    }
    const Field<T>* field = nullptr;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (fields[i].key == key) {
        field = &fields[i];
        seen[i] = true;
      }
    }
    if (field == nullptr) {
      ctx.error(key_path, unknown_key_message(key, known));
      continue;
    }
    if ((field->allowed & variant_bit) == 0) {
      ctx.error(key_path, "not allowed " + std::string(variant_name));
      continue;
    }
    if (!kind_matches(field->kind, it.value())) {
      ctx.error(key_path, std::string("must be ") + kind_name(field->kind));
      continue;
    }
    field->apply(ctx, it.value(), key_path, out);
  }
  for (size_t i = 0; i < fields.size(); ++i) {
    if (!seen[i] && (fields[i].required & variant_bit) != 0) {
      std::string message = "required";
      if (!variant_name.empty() && fields[i].allowed != ALL) {
        message += " " + std::string(variant_name);
      }
      ctx.error(child_path(path, fields[i].key), message);
    }
  }
}

// ---- value checks shared by the tables (messages carry no JSON path) ----

struct HostPort {
  std::string host;  // IP literal without brackets ("localhost" becomes 127.0.0.1)
  uint16_t port = 0;
  bool loopback = false;
};
// "127.0.0.1:8080", "[::1]:8080", "localhost:8080". The host must be an IP literal or localhost.
std::optional<HostPort> parse_listen_address(std::string_view text, std::string* error);

bool is_dns_name(std::string_view name);  // labels of [A-Za-z0-9_-], 1..63 bytes, <= 253 total
bool is_guid(std::string_view text);      // 8-4-4-4-12 hex digits
bool is_token(std::string_view text);     // RFC 9110 token (header names, methods)
// An absolute http(s) URL with a host; |https_only| refuses http. No userinfo or fragment.
bool is_http_url(std::string_view text, bool https_only, std::string* error);

using miproxy::to_lower;
using miproxy::to_upper;

// JSON-ish quoting for messages: "name".
std::string quote(std::string_view text);

}  // namespace miproxy::config::schema
