// Upstream response bytes → the exchange's response handling: a fixed, valid app request goes
// through a real ClientConn and Exchange (tests/fuzz/conn_harness.h), and the fake upstream
// answers with the fuzzer's bytes, split into reads, then EOF or a reset.
//
// Input: byte 0: bits 0-2 the app's request (GET, HEAD, PUT with Content-Length, PUT chunked,
// HTTP/1.0 GET, PUT with Expect: 100-continue, POST, DELETE), bit 3 the upstream connection
// comes from the pool (a stale one is replayed on a fresh one), bits 4-5 the upstream's end (EOF,
// reset, nothing: the app hangs up), bit 6 an app slow to read, bit 7 the upstream answers as soon
// as the request head arrives (while the app uploads). Byte 1: the number of reads (1 + b % 8),
// then one byte per cut (the fraction of what is left), then the upstream's bytes. Any further
// connection (a replay, a CAE retry) is answered "200 ok".
//
// Invariants: what reaches the app parses as HTTP/1.1 responses; miproxy's own errors are JSON;
// when llhttp reads the upstream's bytes as one complete final response (and its head is within
// limits.max_response_header_bytes, and nothing was replayed), the app gets that status and
// exactly that body, complete; and afterwards every transport is closed, no handle is left.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/conn_harness.h"

using namespace fuzzh;

namespace {

constexpr char kConfig[] = R"({
  "listeners": [ { "address": "127.0.0.1:8080" } ],
  "identities": { "mi": { "type": "managed_identity" } },
  "routes": [
    { "name": "api", "match": { "path_prefix": "/api" },
      "upstream": "https://management.azure.com", "identity": "mi",
      "scope": "https://management.azure.com/.default" }
  ]
})";

constexpr const char* kRequests[8] = {
    "GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "HEAD /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "PUT /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\nhello world",
    "PUT /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "GET /api/x HTTP/1.0\r\nHost: localhost\r\n\r\n",
    "PUT /api/x HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    "POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi",
    "DELETE /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
};

Harness& harness() {
  static Harness* h = new Harness(kConfig, "127.0.0.1:8080");
  return *h;
}

struct Script {
  std::vector<std::string_view> reads;
  int ending = 0;  // 0 EOF, 1 reset, 2 nothing
  bool at_head = false;
  bool first_used = false;
};
Script script;

void push(FakeTransport& t, std::string bytes) { t.inbox_.push_back({Event::Kind::BYTES, std::move(bytes)}); }

void reply(Harness& h, FakeTransport& t, FakeTransport::Request& r, bool complete) {
  if (r.answered) return;
  if (!complete && !script.at_head) return;
  r.answered = true;
  if (script.first_used || &t != h.fakes_[1].get()) {
    push(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return;
  }
  script.first_used = true;
  for (std::string_view s : script.reads) {
    if (!s.empty()) push(t, std::string(s));
  }
  if (script.ending == 0) t.inbox_.push_back({Event::Kind::END, {}});
  if (script.ending == 1) t.inbox_.push_back({Event::Kind::RESET, {}});
}

// How llhttp reads the upstream's bytes: the first final response, if complete.
struct Reference {
  bool complete = false;
  int status = 0;
  std::string body;
  size_t head_bytes = 0;
  bool head_request = false;
  bool in_final = false;
  bool bad_name = false;
  std::string name;
};

Reference read_reference(std::string_view bytes, bool head_request, bool ends_with_eof) {
  Reference ref;
  ref.head_request = head_request;
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) {
    static_cast<Reference*>(p->data)->head_bytes = 0;
    return 0;
  };
  auto count = [](llhttp_t* p, const char*, size_t n) {
    static_cast<Reference*>(p->data)->head_bytes += n;
    return 0;
  };
  s.on_status = count;
  s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
    auto* r = static_cast<Reference*>(p->data);
    r->head_bytes += n;
    r->name.append(at, n);
    return 0;
  };
  s.on_header_value = count;
  s.on_header_value_complete = [](llhttp_t* p) {
    // miproxy refuses (502) a field name that is not a token, which llhttp 8.1 lets through.
    auto* r = static_cast<Reference*>(p->data);
    if (r->name.empty()) r->bad_name = true;
    for (char c : r->name) {
      if (!token_char(c)) r->bad_name = true;
    }
    r->name.clear();
    return 0;
  };
  s.on_headers_complete = [](llhttp_t* p) {
    auto* r = static_cast<Reference*>(p->data);
    int status = llhttp_get_status_code(p);
    if (status < 200) return 1;  // a 1xx ends with its head
    r->status = status;
    r->in_final = true;
    return r->head_request || status == 204 || status == 304 ? 1 : 0;
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t n) {
    auto* r = static_cast<Reference*>(p->data);
    if (r->in_final) r->body.append(at, n);
    return 0;
  };
  s.on_message_complete = [](llhttp_t* p) {
    auto* r = static_cast<Reference*>(p->data);
    if (!r->in_final) return 0;
    r->complete = true;
    return static_cast<int>(HPE_PAUSED);
  };
  llhttp_t p;
  llhttp_init(&p, HTTP_RESPONSE, &s);
  p.data = &ref;
  llhttp_errno_t err = llhttp_execute(&p, bytes.data(), bytes.size());
  if (err == HPE_OK && !ref.complete && ends_with_eof) llhttp_finish(&p);
  return ref;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Harness& h = harness();
  uint8_t modes = data[0];
  size_t reads = 1 + data[1] % 8;
  size_t pos = 2;
  std::vector<uint8_t> cuts;
  for (size_t i = 0; i + 1 < reads && pos < size; ++i) cuts.push_back(data[pos++]);
  std::string_view input(reinterpret_cast<const char*>(data + pos), size - pos);
  script = Script{};
  std::string_view rest = input;
  for (uint8_t c : cuts) {
    size_t n = rest.size() * c / 255;
    script.reads.push_back(rest.substr(0, n));
    rest.remove_prefix(n);
  }
  script.reads.push_back(rest);
  script.ending = (modes >> 4) & 3;
  if (script.ending == 3) script.ending = 0;
  script.at_head = (modes & 0x80) != 0;
  int kind = modes & 7;
  bool pooled = (modes & 8) != 0;
  bool head_request = kind == 1;

  ClientReader reader({head_request});
  h.on_client_write = [&h, &reader] { reader.feed(h.client_->written_); };
  h.reply = reply;
  h.begin(FakeSlot::Mode::READY, 0);
  FakeTransport* client = h.client_;
  client->hold_writes_ = (modes & 0x40) != 0;
  if (pooled) {
    // An idle connection parked in the pool by an earlier request (fakes_[1]: the one the
    // script answers); its key is the upstream's authority and the CA file.
    FakeTransport* idle = h.new_transport(true);
    h.worker_->stats().upstream_open.fetch_add(1, std::memory_order_relaxed);
    h.worker_->pool().checkin("management.azure.com|" + h.cfg_->tls.ca_file, idle, 60);
    if (script.reads.size() == 1 && script.reads[0].empty()) {
      // The server closed it while it sat idle, unnoticed until the request is written.
    }
  }
  push(*client, kRequests[kind]);
  h.pump();
  if (script.ending == 2 && !client->closed_) {
    client->inbox_.push_back({Event::Kind::RESET, {}});
    h.pump();
  }
  size_t upstream_requests = 0;
  for (const auto& f : h.fakes_) upstream_requests += f->requests_.size();
  bool replayed = upstream_requests > 1;
  h.finish();
  h.on_client_write = nullptr;
  reader.feed(client->written_);
  bool truncated = reader.truncated();
  auto finals = reader.finals();
  for (const auto* r : finals) {
    if (r->has("x-miproxy-error")) check_own_error(*r, head_request, client->written_);
  }

  std::string all(input);
  Reference ref = read_reference(all, head_request, script.ending == 0);
  bool expect_exact = ref.complete && !ref.bad_name && !replayed && script.ending != 2 &&
                      ref.head_bytes <= h.cfg_->limits.max_response_header_bytes && h.fakes_.size() >= 2 &&
                      !h.fakes_[1]->requests_.empty();
  if (expect_exact) {
    if (finals.empty()) fail("a complete upstream response never reached the client", client->written_);
    const ClientResponse& r = *finals[0];
    if (r.has("x-miproxy-error")) {
      fail("a complete upstream response was answered with miproxy's " + r.header("x-miproxy-error"), all);
    }
    if (r.status != ref.status) fail("status " + std::to_string(ref.status) + " reached the client as " + std::to_string(r.status), all);
    if (!r.complete || (finals.size() == 1 && truncated)) fail("a complete upstream response reached the client cut short", client->written_);
    if (r.body != ref.body) {
      fail("body altered: upstream framed " + std::to_string(ref.body.size()) + " bytes, client got " +
               std::to_string(r.body.size()),
           client->written_);
    }
  }
  h.end();
  return 0;
}
