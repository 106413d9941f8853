#include "config/schema.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace miproxy::config::schema {

namespace {

bool is_identifier(std::string_view key) {
  if (key.empty()) {
    return false;
  }
  for (char c : key) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t cost = ascii_lower(a[i - 1]) == ascii_lower(b[j - 1]) ? 0 : 1;
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + cost});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::optional<uint16_t> parse_port(std::string_view text, std::string* error) {
  if (text.empty() || text.size() > 5 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    *error = "port must be a number from 0 to 65535";
    return std::nullopt;
  }
  unsigned long value = std::stoul(std::string(text));
  if (value > 65535) {
    *error = "port must be a number from 0 to 65535";
    return std::nullopt;
  }
  return static_cast<uint16_t>(value);
}

}  // namespace

std::string child_path(const std::string& parent, std::string_view key) {
  if (is_identifier(key)) {
    return parent.empty() ? std::string(key) : parent + "." + std::string(key);
  }
  return parent + "[" + quote(key) + "]";
}

std::string index_path(const std::string& parent, size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::STRING:
      return "a string";
    case Kind::BOOL:
      return "true or false";
    case Kind::NUMBER:
      return "a number";
    case Kind::UINT:
      return "a non-negative integer";
    case Kind::OBJECT:
      return "an object";
    case Kind::ARRAY:
      return "an array";
    case Kind::ANY:
      return "a value";
  }
  return "a value";
}

bool kind_matches(Kind kind, const Json& value) {
  switch (kind) {
    case Kind::STRING:
      return value.is_string();
    case Kind::BOOL:
      return value.is_boolean();
    case Kind::NUMBER:
      return value.is_number();
    case Kind::UINT:
      return value.is_number_unsigned();
    case Kind::OBJECT:
      return value.is_object();
    case Kind::ARRAY:
      return value.is_array();
    case Kind::ANY:
      return true;
  }
  return false;
}

std::string suggest(std::string_view key, std::span<const std::string_view> candidates) {
  std::string best;
  size_t best_distance = 3;
  for (auto candidate : candidates) {
    size_t d = edit_distance(key, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = std::string(candidate);
    }
  }
  return best;
}

std::string unknown_key_message(std::string_view key, std::span<const std::string_view> known) {
  std::string message = "unknown key";
  std::string close = suggest(key, known);
  if (!close.empty()) {
    message += " (did you mean " + quote(close) + "?)";
  } else if (!known.empty()) {
    message += "; expected one of:";
    for (auto k : known) {
      message += " " + std::string(k);
    }
  }
  return message;
}

std::optional<HostPort> parse_listen_address(std::string_view text, std::string* error) {
  HostPort out;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) {
      *error = "missing ']' after the IPv6 address";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      *error = "must be host:port, e.g. [::1]:8080";
      return std::nullopt;
    }
    port = rest.substr(1);
    in6_addr addr6;
    if (inet_pton(AF_INET6, std::string(host).c_str(), &addr6) != 1) {
      *error = "not a valid IPv6 address: " + quote(host);
      return std::nullopt;
    }
    static const uint8_t loopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    out.loopback = std::memcmp(addr6.s6_addr, loopback6, 16) == 0 ||
                   (std::memcmp(addr6.s6_addr, mapped_prefix, 12) == 0 && addr6.s6_addr[12] == 127);
    out.host = std::string(host);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      *error = "must be host:port, e.g. 127.0.0.1:8080";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      *error = "IPv6 addresses must be in brackets, e.g. [::1]:8080";
      return std::nullopt;
    }
    in_addr addr4;
    if (to_lower(host) == "localhost") {
      out.host = "127.0.0.1";
      out.loopback = true;
    } else if (inet_pton(AF_INET, std::string(host).c_str(), &addr4) == 1) {
      out.host = std::string(host);
      out.loopback = (ntohl(addr4.s_addr) >> 24) == 127;
    } else {
      *error = "host must be an IP address or localhost, not " + quote(host);
      return std::nullopt;
    }
  }
  auto p = parse_port(port, error);
  if (!p) {
    return std::nullopt;
  }
  out.port = *p;
  return out;
}

bool is_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (true) {
    size_t dot = name.find('.', start);
    std::string_view label = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (label.empty() || label.size() > 63) {
      return false;
    }
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') {
        return false;
      }
    }
    if (dot == std::string_view::npos) {
      return true;
    }
    start = dot + 1;
  }
}

bool is_guid(std::string_view text) {
  if (text.size() != 36) {
    return false;
  }
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') {
        return false;
      }
    } else if (!std::isxdigit(static_cast<unsigned char>(text[i]))) {
      return false;
    }
  }
  return true;
}

bool is_token(std::string_view text) {
  if (text.empty()) {
    return false;
  }
  static constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
  for (char c : text) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && extra.find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool is_http_url(std::string_view text, bool https_only, std::string* error) {
  std::string lower = to_lower(text);
  std::string_view rest;
  if (lower.starts_with("https://")) {
    rest = text.substr(8);
  } else if (lower.starts_with("http://") && !https_only) {
    rest = text.substr(7);
  } else {
    *error = https_only ? "must be an https URL" : "must be an http or https URL";
    return false;
  }
  if (text.find('#') != std::string_view::npos) {
    *error = "must not contain a fragment";
    return false;
  }
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      *error = "must not contain spaces or control characters";
      return false;
    }
  }
  std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
  if (authority.find('@') != std::string_view::npos) {
    *error = "must not contain user info (user@host)";
    return false;
  }
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) {
      *error = "missing ']' after the IPv6 address";
      return false;
    }
    in6_addr addr6;
    if (inet_pton(AF_INET6, std::string(host.substr(1, close - 1)).c_str(), &addr6) != 1) {
      *error = "not a valid IPv6 address";
      return false;
    }
    std::string_view after = host.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        *error = "unexpected characters after the host";
        return false;
      }
      if (!parse_port(after.substr(1), error)) {
        return false;
      }
    }
    return true;
  }
  size_t colon = host.find(':');
  if (colon != std::string_view::npos) {
    if (!parse_port(host.substr(colon + 1), error)) {
      return false;
    }
    host = host.substr(0, colon);
  }
  if (!is_dns_name(host)) {
    *error = "must name a host, e.g. https://login.microsoftonline.com";
    return false;
  }
  return true;
}

std::string quote(std::string_view text) {
  return Json(std::string(text)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace miproxy::config::schema
