// The JSON writer: whatever bytes go into JsonLine's keys and values, the line it produces must
// parse as one JSON object (invalid UTF-8 replaced, control bytes escaped), and valid UTF-8
// must come back unchanged. Input: fields separated by NUL; even fields are keys.

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/json_line.h"

namespace {

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
             : (c & 0xf8) == 0xf0 ? 3 : 4;
    if (n == 4 || i + n >= s.size()) return false;
    uint32_t cp = n == 0 ? c : c & (0x3f >> n);
    for (size_t k = 1; k <= n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> fields;
  size_t pos = 0;
  while (pos <= input.size() && fields.size() < 64) {
    size_t end = input.find('\0', pos);
    if (end == std::string_view::npos) end = input.size();
    fields.push_back(input.substr(pos, end - pos));
    pos = end + 1;
  }
  miproxy::JsonLine line;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) {
    if (fields[i + 1].size() == 1 && fields[i + 1][0] == '#') {
      line.add(fields[i], static_cast<int64_t>(fields[i].size()) - 7);
    } else {
      line.add(fields[i], fields[i + 1]);
    }
  }
  std::string out = line.finish();
  nlohmann::json parsed = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    std::fprintf(stderr, "JsonLine wrote invalid JSON: %s\n", out.c_str());
    std::abort();
  }
  // Keys may repeat (the last one wins in the DOM), so compare values of the last occurrence;
  // a repaired invalid key may equal a valid one, so compare only when every key is valid.
  bool keys_valid = true;
  for (size_t i = 0; i + 1 < fields.size(); i += 2) keys_valid = keys_valid && valid_utf8(fields[i]);
  for (size_t i = 0; keys_valid && i + 1 < fields.size(); i += 2) {
    if (!valid_utf8(fields[i]) || !valid_utf8(fields[i + 1])) continue;
    if (fields[i + 1].size() == 1 && fields[i + 1][0] == '#') continue;
    bool last = true;
    for (size_t j = i + 2; j + 1 < fields.size(); j += 2) {
      if (fields[j] == fields[i]) last = false;
    }
    if (!last) continue;
    auto it = parsed.find(std::string(fields[i]));
    if (it == parsed.end() || !it->is_string() || it->get<std::string>() != fields[i + 1]) {
      std::fprintf(stderr, "JsonLine changed a valid UTF-8 value\n");
      std::abort();
    }
  }
  return 0;
}
