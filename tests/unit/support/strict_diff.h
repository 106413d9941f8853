#pragma once
// The differential check between StrictRequestReader and llhttp (configured as ClientConn
// configures it: llhttp_init with no lenient flags). Both read the same bytes into the same
// shape (per message: method, target, version, field lines, body, whether it completed); when
// the strict reader accepts bytes, llhttp must read them into the same messages. Used by the
// differential corpus in unit/proxy/strict_http_test.cc and by fuzz/fuzz_strict_http.cc.

#include <llhttp.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/http1.h"
#include "proxy/strict_http.h"

namespace miproxy::testing {

struct DiffMessage {
  std::string method, target, version;
  bool head_done = false;
  // (name, value with surrounding whitespace removed, is a trailer); only complete lines.
  std::vector<std::tuple<std::string, std::string, bool>> fields;
  std::string body;
  bool complete = false;
  bool refused = false;  // llhttp side: ClientConn refuses this head (framing_problem, upgrade)

  std::string name_, value_;  // field line in progress
};

inline std::string trim_ows(std::string s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

struct LlhttpRun {
  std::vector<DiffMessage> messages;
  llhttp_errno_t err = HPE_OK;
  // Index of the message llhttp stopped in (error or refused head), or messages.size().
  size_t stopped_at = 0;
  // The last message read is complete and not keep-alive (an HTTP/1.0 request without
  // Connection: keep-alive, or Connection: close): ClientConn closes after its response, so the
  // bytes after it are never read, whatever llhttp or the strict reader make of them.
  bool closes = false;
};

namespace diff_detail {

inline LlhttpRun* run(llhttp_t* p) { return static_cast<LlhttpRun*>(p->data); }
inline DiffMessage& cur(llhttp_t* p) { return run(p)->messages.back(); }

// What ClientConn refuses once llhttp has read a head (framing_problem, CONNECT, upgrades).
inline bool client_conn_refuses(llhttp_t* p, const DiffMessage& m) {
  using proxy::iequals;
  int te = 0, cl = 0;
  bool te_chunked = true;
  for (const auto& [name, value, trailer] : m.fields) {
    if (iequals(name, "transfer-encoding")) {
      ++te;
      te_chunked = iequals(value, "chunked");
    }
    if (iequals(name, "content-length")) ++cl;
  }
  if (te > 1 || (te == 1 && (!te_chunked || cl > 0 || p->http_minor == 0)) || cl > 1) return true;
  return p->upgrade != 0 || p->method == HTTP_CONNECT;
}

inline llhttp_settings_t settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    run(p)->messages.emplace_back();
    return 0;
  };
  s.on_method = [](llhttp_t* p, const char* at, size_t n) {
    cur(p).method.append(at, n);
    return 0;
  };
  s.on_url = [](llhttp_t* p, const char* at, size_t n) {
    cur(p).target.append(at, n);
    return 0;
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    cur(p).name_.append(at, n);
    return 0;
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
    cur(p).value_.append(at, n);
    return 0;
  };
  s.on_header_value_complete = [](llhttp_t* p) {
    DiffMessage& m = cur(p);
    m.fields.emplace_back(std::move(m.name_), trim_ows(std::move(m.value_)), m.head_done);
    m.name_.clear();
    m.value_.clear();
    return 0;
  };
  s.on_headers_complete = [](llhttp_t* p) {
    DiffMessage& m = cur(p);
    m.head_done = true;
    m.version = "HTTP/" + std::to_string(p->http_major) + "." + std::to_string(p->http_minor);
    if (client_conn_refuses(p, m)) {
      m.refused = true;
      return static_cast<int>(HPE_PAUSED);
    }
    return 0;
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    cur(p).body.append(at, n);
    return 0;
  };
  s.on_message_complete = [](llhttp_t* p) {
    cur(p).complete = true;
    return 0;
  };
  return s;
}

}  // namespace diff_detail

// llhttp over |bytes| in one call, as ClientConn's parser would see them.
inline LlhttpRun run_llhttp(std::string_view bytes) {
  static const llhttp_settings_t kSettings = diff_detail::settings();
  LlhttpRun r;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_REQUEST, &kSettings);
  parser.data = &r;
  r.err = llhttp_execute(&parser, bytes.data(), bytes.size());
  r.stopped_at = r.messages.size();
  if (r.err != HPE_OK && !r.messages.empty()) r.stopped_at = r.messages.size() - 1;
  r.closes = !r.messages.empty() && r.messages.back().complete && !llhttp_should_keep_alive(&parser);
  return r;
}

struct StrictRun {
  std::vector<DiffMessage> messages;
  size_t accepted = 0;
  std::string reason;  // "" when everything was accepted
};

// The strict reader over |bytes|, fed in pieces of |step| bytes (0: one piece).
inline StrictRun run_strict(std::string_view bytes, size_t step = 0) {
  using Part = proxy::StrictRequestReader::Part;
  StrictRun r;
  proxy::StrictRequestReader reader;
  reader.set_observer(
      [](void* ctx, Part part, const char* at, size_t n) {
        auto& msgs = static_cast<StrictRun*>(ctx)->messages;
        if (part == Part::METHOD && (msgs.empty() || msgs.back().complete)) msgs.emplace_back();
        DiffMessage& m = msgs.back();
        switch (part) {
          case Part::METHOD: m.method.append(at, n); break;
          case Part::TARGET: m.target.append(at, n); break;
          case Part::VERSION: m.version.append(at, n); break;
          case Part::FIELD_NAME: m.name_.append(at, n); break;
          case Part::FIELD_VALUE: m.value_.append(at, n); break;
          case Part::FIELD_END:
            m.fields.emplace_back(std::move(m.name_), trim_ows(std::move(m.value_)), m.head_done);
            m.name_.clear();
            m.value_.clear();
            break;
          case Part::HEAD_END: m.head_done = true; break;
          case Part::BODY: m.body.append(at, n); break;
          case Part::MESSAGE_END: m.complete = true; break;
        }
      },
      &r);
  if (step == 0) step = bytes.size() > 0 ? bytes.size() : 1;
  for (size_t off = 0; off < bytes.size(); off += step) {
    size_t n = std::min(step, bytes.size() - off);
    size_t ok = reader.feed(bytes.data() + off, n);
    r.accepted += ok;
    if (ok < n) break;
  }
  if (reader.failed()) r.reason = reader.reason();
  return r;
}

// "" when llhttp, fed what the strict reader accepted, read the same messages; else what differs.
inline std::string compare(const StrictRun& s, const LlhttpRun& l) {
  auto differ = [](size_t i, const std::string& what, const std::string& a, const std::string& b) {
    return "message " + std::to_string(i) + " " + what + ": strict '" + a + "' llhttp '" + b + "'";
  };
  bool stopped = l.stopped_at < l.messages.size();
  for (size_t i = 0; i < l.messages.size(); ++i) {
    const DiffMessage& lm = l.messages[i];
    if (stopped && i == l.stopped_at && !lm.refused) break;  // llhttp refused it: a 400
    if (i >= s.messages.size()) {
      if (lm.method.empty() && lm.target.empty()) continue;  // llhttp began, strict not yet
      return "llhttp read message " + std::to_string(i) + " the strict reader did not see";
    }
    const DiffMessage& sm = s.messages[i];
    if (lm.head_done != sm.head_done) return "message " + std::to_string(i) + " head end differs";
    if (lm.head_done) {
      if (lm.method != sm.method) return differ(i, "method", sm.method, lm.method);
      if (lm.target != sm.target) return differ(i, "target", sm.target, lm.target);
      if (lm.version != sm.version) return differ(i, "version", sm.version, lm.version);
    }
    size_t nf = std::min(lm.fields.size(), sm.fields.size());
    if (lm.refused) {
      // llhttp stopped at the end of the head: the strict reader's trailers are not compared.
      size_t head_fields = 0;
      for (const auto& field : sm.fields) head_fields += std::get<2>(field) ? 0 : 1;
      if (head_fields != lm.fields.size()) {
        return "message " + std::to_string(i) + " head field count differs";
      }
    } else if (lm.head_done && lm.fields.size() != sm.fields.size() &&
               !(lm.complete || sm.complete)) {
      // Trailers still streaming: compare what both have.
    } else if (lm.head_done && lm.fields.size() != sm.fields.size()) {
      return "message " + std::to_string(i) + " field count differs";
    }
    for (size_t f = 0; f < nf; ++f) {
      const auto& [ln, lv, lt] = lm.fields[f];
      const auto& [sn, sv, st] = sm.fields[f];
      if (ln != sn) return differ(i, "field name", sn, ln);
      if (lv != sv) return differ(i, "field value", sv, lv);
      if (lt != st) return "message " + std::to_string(i) + " trailer flag differs";
    }
    if (lm.refused) break;  // ClientConn answers 400 and reads no further
    if (lm.body != sm.body) return differ(i, "body", sm.body, lm.body);
    if (lm.complete != sm.complete) return "message " + std::to_string(i) + " end differs";
  }
  if (!stopped && !l.closes && s.messages.size() > l.messages.size()) {
    const DiffMessage& extra = s.messages[l.messages.size()];
    if (extra.head_done || extra.complete || !extra.body.empty()) {
      return "the strict reader read a message llhttp did not";
    }
  }
  return "";
}

}  // namespace miproxy::testing
