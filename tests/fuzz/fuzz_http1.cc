// HTTP/1 pieces: the input parsed by llhttp as a request and as a response, headers stored
// through HeaderList exactly as the connection code does (split at arbitrary read boundaries),
// chunk framing re-encoded and re-parsed, and the query redaction helpers.

#include <llhttp.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/http1.h"

using namespace miproxy::proxy;

namespace {

struct State {
  HeaderList headers;
  std::string url;
  std::string body;
  bool complete = false;
};

State* st(llhttp_t* p) { return static_cast<State*>(p->data); }

llhttp_settings_t make_settings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_url = [](llhttp_t* p, const char* at, size_t len) {
    st(p)->url.append(at, len);
    return 0;
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t len) {
    st(p)->headers.append_name(at, len);
    return 0;
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t len) {
    st(p)->headers.append_value(at, len);
    return 0;
  };
  s.on_header_value_complete = [](llhttp_t* p) {
    st(p)->headers.finish_value();
    return 0;
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t len) {
    st(p)->body.append(at, len);
    return 0;
  };
  s.on_message_complete = [](llhttp_t* p) {
    st(p)->complete = true;
    return static_cast<int>(HPE_PAUSED);
  };
  return s;
}

const llhttp_settings_t kSettings = make_settings();

void inspect(const HeaderList& h) {
  std::string_view v;
  for (size_t i = 0; i < h.size(); ++i) {
    (void)is_hop_by_hop(h.token(i));
    (void)classify_header(h.name(i));
    (void)connection_lists(h.value(i), "keep-alive");
    (void)storage_version_to_send("contoso.blob.core.windows.net", h.value(i));
  }
  (void)h.find(HeaderToken::HOST, &v);
  (void)h.count(HeaderToken::TRANSFER_ENCODING);
  (void)h.find_name("x-custom", &v);
}

void parse(llhttp_type_t type, std::string_view input, size_t step) {
  State state;
  llhttp_t parser;
  llhttp_init(&parser, type, &kSettings);
  parser.data = &state;
  size_t pos = 0;
  while (pos < input.size()) {
    size_t n = std::min(step, input.size() - pos);
    llhttp_errno_t err = llhttp_execute(&parser, input.data() + pos, n);
    if (err == HPE_PAUSED) {
      inspect(state.headers);
      // One message at a time, as the connection does: resume after the pause point.
      pos = static_cast<size_t>(llhttp_get_error_pos(&parser) - input.data());
      llhttp_resume(&parser);
      state.headers.clear();
      state.url.clear();
      state.body.clear();
      state.complete = false;
      continue;
    }
    if (err != HPE_OK) break;
    pos += n;
  }
  inspect(state.headers);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  size_t step = 1 + data[0] % 64;  // read boundaries anywhere
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  parse(HTTP_REQUEST, input, step);
  parse(HTTP_RESPONSE, input, step);

  (void)redact_query(input);
  (void)strip_sas_params(input);
  (void)storage_min_version(input);

  // Chunk framing: our chunk header plus the data plus CRLF, then the last chunk, must parse
  // back to exactly the data.
  std::string framed = "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  if (!input.empty()) {
    append_chunk_header(framed, input.size());
    framed.append(input);
    framed.append("\r\n");
  }
  framed.append(kLastChunk);
  State state;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_REQUEST, &kSettings);
  parser.data = &state;
  llhttp_errno_t err = llhttp_execute(&parser, framed.data(), framed.size());
  if (err != HPE_PAUSED || !state.complete || state.body != input) {
    std::fprintf(stderr, "chunk framing did not round-trip\n");
    std::abort();
  }
  return 0;
}
