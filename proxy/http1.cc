#include "proxy/http1.h"

#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <cstring>

namespace miproxy::proxy {
namespace {


struct TokenName {
  std::string_view name;
  HeaderToken token;
};

// Grouped by length so classify_header() compares at most a few names.
constexpr TokenName kTokens[] = {
    {"te", HeaderToken::TE},
    {"host", HeaderToken::HOST},
    {"expect", HeaderToken::EXPECT},
    {"trailer", HeaderToken::TRAILER},
    {"upgrade", HeaderToken::UPGRADE},
    {"keep-alive", HeaderToken::KEEP_ALIVE},
    {"connection", HeaderToken::CONNECTION},
    {"x-ms-version", HeaderToken::X_MS_VERSION},
    {"authorization", HeaderToken::AUTHORIZATION},
    {"content-length", HeaderToken::CONTENT_LENGTH},
    {"proxy-connection", HeaderToken::PROXY_CONNECTION},
    {"transfer-encoding", HeaderToken::TRANSFER_ENCODING},
    {"proxy-authenticate", HeaderToken::PROXY_AUTHENTICATE},
    {"proxy-authorization", HeaderToken::PROXY_AUTHORIZATION},
    {"x-ms-client-request-id", HeaderToken::X_MS_CLIENT_REQUEST_ID},
};

// Query parameter names are compared after percent-decoding: "s%69g" is "sig" to the service.
std::string decode_name(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size() &&
        hex(name[i + 1]) >= 0 && hex(name[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(name[i + 1]) * 16 + hex(name[i + 2])));
      i += 2;
    } else if (name[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(name[i]);
    }
  }
  return out;
}

bool is_sas_param_decoded(std::string_view name);

bool is_sas_param(std::string_view raw) {
  if (raw.find('%') != std::string_view::npos) return is_sas_param_decoded(decode_name(raw));
  return is_sas_param_decoded(raw);
}

bool is_sas_param_decoded(std::string_view name) {
  static constexpr std::string_view kSas[] = {
      "sv",  "ss",  "srt", "sp",  "se",    "st",    "spr",   "sig",  "si",  "sr",  "sdd",
      "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "sip", "ses",
      "rscc", "rscd", "rsce", "rscl", "rsct"};
  for (auto s : kSas) {
    if (iequals(s, name)) return true;
  }
  return false;
}

bool is_secret_param_decoded(std::string_view name);

bool is_secret_param(std::string_view raw) {
  if (raw.find('%') != std::string_view::npos) return is_secret_param_decoded(decode_name(raw));
  return is_secret_param_decoded(raw);
}

bool is_secret_param_decoded(std::string_view name) {
  static constexpr std::string_view kSecret[] = {
      "sig", "se", "st", "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid",
      "signature", "code", "client_secret", "token", "access_token", "password", "key"};
  for (auto s : kSecret) {
    if (iequals(s, name)) return true;
  }
  std::string l = to_lower(name);
  return l.find("sig") != std::string::npos || l.find("token") != std::string::npos ||
         l.find("secret") != std::string::npos;
}

}  // namespace

HeaderToken classify_header(std::string_view name) {
  for (const auto& t : kTokens) {
    if (t.name.size() == name.size() && iequals(t.name, name)) return t.token;
  }
  return HeaderToken::OTHER;
}

bool is_hop_by_hop(HeaderToken token) {
  switch (token) {
    case HeaderToken::CONNECTION:
    case HeaderToken::KEEP_ALIVE:
    case HeaderToken::PROXY_AUTHENTICATE:
    case HeaderToken::PROXY_AUTHORIZATION:
    case HeaderToken::PROXY_CONNECTION:
    case HeaderToken::TE:
    case HeaderToken::TRAILER:
    case HeaderToken::TRANSFER_ENCODING:
    case HeaderToken::UPGRADE:
      return true;
    default:
      return false;
  }
}

void HeaderList::clear() {
  arena_.clear();
  entries_.clear();
  in_value_ = false;
}

void HeaderList::append_name(const char* data, size_t len) {
  if (entries_.empty() || in_value_) {
    uint32_t off = static_cast<uint32_t>(arena_.size());
    entries_.push_back(Entry{off, 0, off, 0, HeaderToken::OTHER});
    in_value_ = false;
  }
  arena_.append(data, len);
  entries_.back().name_len += static_cast<uint32_t>(len);
  entries_.back().value_off = static_cast<uint32_t>(arena_.size());
}

void HeaderList::append_value(const char* data, size_t len) {
  if (entries_.empty()) return;  // llhttp never sends a value before a name.
  in_value_ = true;
  arena_.append(data, len);
  entries_.back().value_len += static_cast<uint32_t>(len);
}

void HeaderList::finish_value() {
  if (entries_.empty()) return;
  in_value_ = true;
  Entry& e = entries_.back();
  while (e.value_len > 0) {
    char c = arena_[e.value_off + e.value_len - 1];
    if (c != ' ' && c != '\t') break;
    --e.value_len;
  }
  e.token = classify_header(std::string_view(arena_).substr(e.name_off, e.name_len));
}

std::string_view HeaderList::name(size_t i) const {
  return std::string_view(arena_).substr(entries_[i].name_off, entries_[i].name_len);
}

std::string_view HeaderList::value(size_t i) const {
  return std::string_view(arena_).substr(entries_[i].value_off, entries_[i].value_len);
}

const std::string_view* HeaderList::find(HeaderToken token, std::string_view* out) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].token == token) {
      *out = value(i);
      return out;
    }
  }
  return nullptr;
}

size_t HeaderList::count(HeaderToken token) const {
  size_t n = 0;
  for (const auto& e : entries_) n += (e.token == token);
  return n;
}

bool HeaderList::find_name(std::string_view n, std::string_view* out) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (iequals(name(i), n)) {
      *out = value(i);
      return true;
    }
  }
  return false;
}

bool HeaderList::connection_lists_name(std::string_view name) const {
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].token == HeaderToken::CONNECTION && connection_lists(value(i), name)) {
      return true;
    }
  }
  return false;
}

bool connection_lists(std::string_view list, std::string_view name) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(pos, comma - pos);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (iequals(item, name)) return true;
    pos = comma + 1;
  }
  return false;
}

void append_chunk_header(std::string& out, size_t len) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "%zx\r\n", len);
  out.append(buf, static_cast<size_t>(n));
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

std::string redact_query(std::string_view path) {
  size_t q = path.find('?');
  if (q == std::string_view::npos) return std::string(path);
  std::string out(path.substr(0, q + 1));
  std::string_view query = path.substr(q + 1);
  size_t pos = 0;
  bool first = true;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(pos, amp - pos);
    if (!first) out.push_back('&');
    first = false;
    size_t eq = pair.find('=');
    std::string_view name = pair.substr(0, eq);
    if (eq != std::string_view::npos && is_secret_param(name)) {
      out.append(name);
      out.append("=REDACTED");
    } else {
      out.append(pair);
    }
    pos = amp + 1;
  }
  return out;
}

std::string strip_sas_params(std::string_view path) {
  size_t q = path.find('?');
  if (q == std::string_view::npos) return std::string(path);
  std::string out(path.substr(0, q));
  std::string_view query = path.substr(q + 1);
  size_t pos = 0;
  bool first = true;
  while (pos < query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(pos, amp - pos);
    std::string_view name = pair.substr(0, pair.find('='));
    if (!pair.empty() && !is_sas_param(name)) {
      out.push_back(first ? '?' : '&');
      out.append(pair);
      first = false;
    }
    pos = amp + 1;
  }
  return out;
}

namespace {

// Request ids need uniqueness, not secrecy: a per-thread xoshiro256** seeded once from the
// OpenSSL DRBG avoids a DRBG call (and its fork-check getpid) per request.
struct IdGenerator {
  uint64_t s[4];
  IdGenerator() {
    if (RAND_bytes(reinterpret_cast<unsigned char*>(s), sizeof s) != 1) {
      uint64_t seed = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(this)) ^ 0x9e3779b97f4a7c15ULL;
      for (auto& x : s) x = seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    }
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
};

}  // namespace

std::string new_uuid() {
  static thread_local IdGenerator gen;
  std::array<unsigned char, 16> b{};
  uint64_t a = gen.next(), c = gen.next();
  std::memcpy(b.data(), &a, 8);
  std::memcpy(b.data() + 8, &c, 8);
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(36, '-');
  size_t o = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) ++o;  // the dashes
    out[o++] = kHex[b[i] >> 4];
    out[o++] = kHex[b[i] & 15];
  }
  return out;
}

std::string_view storage_min_version(std::string_view host) {
  auto has = [&](std::string_view label) {
    return host.find(label) != std::string_view::npos;
  };
  if (has(".file.core.")) return "2024-11-04";
  if (has(".table.core.")) return "2019-02-02";
  return "2017-11-09";
}

std::string_view storage_version_to_send(std::string_view host, std::string_view client) {
  std::string_view min = storage_min_version(host);
  // Versions are ISO dates (optionally with a suffix such as "-preview"): compare the date.
  if (client.size() >= 10 && client.substr(0, 10) >= min) return client;
  return kStorageBearerVersion;
}

}  // namespace miproxy::proxy
