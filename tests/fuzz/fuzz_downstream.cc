// Bytes from an app → one downstream connection: parse, admission, route, rewrite, forwarding
// and error rendering, through a real ClientConn on a real Worker (its loop driven here), with
// fake transports, connector and token slots (tests/fuzz/conn_harness.h).
//
// Input: byte 0 picks the modes: bits 0-1 the token (ready, ready, fetched, refused), bits 2-4
// the connect outcome (0 and 5-7 succeed; 1 DNS, 2 TLS verify, 3 timeout, 4 refused), bit 5 a
// client slow to read (writes stay queued for a round), bits 6-7 the end (EOF, reset, EOF in
// the middle, reset in the middle). Byte 1: the number of reads (1 + b % 8) and which read the
// middle end follows (b / 8 % reads). Then one byte per cut between reads (the fraction of what
// is left), then the bytes the app sends. A request header "x-fuzz-reply: <digit>" picks how the
// fake upstream answers (see reply()); no Authorization (scope "auto" probe) gets a challenge.
//
// Invariants: everything written to the client parses as HTTP/1.1 responses (llhttp), every
// error of miproxy's own has a JSON body naming its x-miproxy-error code, nothing reaches the
// upstream for a request miproxy refused (a BadRequest after the head, for a body that turned
// out malformed, leaves an incomplete request at most), what goes upstream is well-formed
// HTTP/1.1 with one Host and the route's token, nothing follows a "Connection: close" response,
// and afterwards every transport is closed and the loop holds only the worker's own handles.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fuzz/conn_harness.h"

using namespace fuzzh;

namespace {

constexpr char kConfig[] = R"({
  "listeners": [ { "address": "127.0.0.1:8080", "allowed_origins": ["https://app.example"] } ],
  "identities": { "mi": { "type": "managed_identity" } },
  "limits": { "max_header_bytes": 8192, "max_headers": 40, "max_uri_bytes": 2048,
              "max_queued_response_bytes": 4096 },
  "routes": [
    { "name": "orders", "match": { "host": "contoso.blob.core.windows.net", "path_prefix": "/orders/",
                                   "methods": ["GET", "HEAD", "PUT", "DELETE", "POST"] },
      "upstream": "https://contoso.blob.core.windows.net", "identity": "mi",
      "scope": "https://storage.azure.com/.default",
      "headers": { "set": { "x-route": "orders" }, "remove": ["x-remove-me"] } },
    { "name": "any-blob", "match": { "host": "*.blob.core.windows.net" },
      "upstream": "https://{host}", "identity": "mi", "scope": "https://storage.azure.com/.default" },
    { "name": "kv", "match": { "path_prefix": "/kv/" }, "strip_prefix": true,
      "upstream": "https://contoso-kv.vault.azure.net/tenant-a", "identity": "mi", "scope": "auto" },
    { "name": "graph", "match": { "host": "graph.local", "path_prefix": "/v1.0/" },
      "upstream": "https://graph.microsoft.com", "identity": "mi",
      "scope": "https://graph.microsoft.com/.default", "inbound_authorization": "reject" },
    { "name": "api", "match": { "path_prefix": "/api" },
      "upstream": "https://management.azure.com", "identity": "mi",
      "scope": "https://management.azure.com/.default" }
  ]
})";

Harness& harness() {
  static Harness* h = new Harness(kConfig, "127.0.0.1:8080");
  return *h;
}

bool used_midbody_reset = false;

void push(FakeTransport& t, std::string bytes) { t.inbox_.push_back({Event::Kind::BYTES, std::move(bytes)}); }

// The fake upstream's answers. Each is a valid HTTP/1.1 response (or a cut one, 9).
void reply(Harness&, FakeTransport& t, FakeTransport::Request& r, bool complete) {
  if (r.answered) return;
  bool has_auth = false;
  int variant = 0;
  for (const auto& [name, value] : r.headers) {
    if (iequal(name, "authorization")) has_auth = true;
    if (iequal(name, "x-fuzz-reply") && !value.empty() && value[0] >= '0' && value[0] <= '9') {
      variant = value[0] - '0';
    }
  }
  bool early = variant == 5 && has_auth;
  if (!complete && !early) return;
  r.answered = true;
  if (!has_auth) {
    // Scope "auto": the probe.
    switch (variant % 3) {
      case 0:
        push(t, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer authorization=\"https://login.microsoftonline.com/t\", "
                "resource=\"https://vault.azure.net\"\r\nContent-Length: 0\r\n\r\n");
        return;
      case 1:
        push(t, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer authorization=\"https://login.microsoftonline.com/t\", "
                "scope=\"https://localhost/.default https://graph.microsoft.com/.default\"\r\nContent-Length: 2\r\n\r\nno");
        return;
      default:
        push(t, "HTTP/1.1 200 OK\r\nX-Fuzz-Upstream: probe\r\nContent-Length: 4\r\n\r\nopen");
        return;
    }
  }
  switch (variant) {
    default:
      push(t, "HTTP/1.1 200 OK\r\nX-Fuzz-Upstream: 0\r\nContent-Length: 5\r\n\r\nhello");
      return;
    case 1:
      push(t, "HTTP/1.1 204 No Content\r\nX-Fuzz-Upstream: 1\r\nContent-Length: 0\r\n\r\n");
      return;
    case 2:
      push(t, "HTTP/1.1 200 OK\r\nX-Fuzz-Upstream: 2\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
              "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n");
      return;
    case 3:
      push(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-Fuzz-Upstream: 3\r\nContent-Length: 2\r\n\r\nok");
      return;
    case 4:
      push(t, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer error=\"invalid_token\", "
              "error_description=\"revoked\"\r\nX-Fuzz-Upstream: 4\r\nContent-Length: 6\r\n\r\ndenied");
      return;
    case 5:
      push(t, "HTTP/1.1 403 Forbidden\r\nX-Fuzz-Upstream: 5\r\nx-ms-error-code: AuthorizationFailure\r\n"
              "Content-Length: 9\r\nConnection: close\r\n\r\nforbidden");
      t.inbox_.push_back({Event::Kind::END, {}});
      return;
    case 6:
      push(t, "HTTP/1.1 200 OK\r\nX-Fuzz-Upstream: 6\r\nConnection: close\r\n\r\nuntil");
      push(t, " the end");
      t.inbox_.push_back({Event::Kind::END, {}});
      return;
    case 7:
      push(t, "HTTP/1.1 304 Not Modified\r\nX-Fuzz-Upstream: 7\r\nETag: \"x\"\r\n\r\n");
      return;
    case 8:
      push(t, "HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\nConnection: x-hop2\r\nx-hop: 1\r\nx-hop2: 2\r\n"
              "X-Fuzz-Upstream: 8\r\nContent-Length: 1\r\n\r\n!");
      return;
    case 9:
      used_midbody_reset = true;
      push(t, "HTTP/1.1 200 OK\r\nX-Fuzz-Upstream: 9\r\nContent-Length: 10\r\n\r\nhel");
      t.inbox_.push_back({Event::Kind::RESET, {}});
      return;
  }
}

// Which requests are HEAD, as llhttp reads the bytes the app sent.
std::vector<bool> head_requests(std::string_view bytes) {
  struct S {
    std::vector<bool> heads;
  } s;
  llhttp_settings_t set;
  llhttp_settings_init(&set);
  // Once the method is read: a request refused later (a bad target, version or header) is
  // still answered as a HEAD.
  set.on_method_complete = [](llhttp_t* p) {
    static_cast<S*>(p->data)->heads.push_back(llhttp_get_method(p) == HTTP_HEAD);
    return 0;
  };
  llhttp_t p;
  llhttp_init(&p, HTTP_REQUEST, &set);
  p.data = &s;
  llhttp_execute(&p, bytes.data(), bytes.size());
  return s.heads;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  Harness& h = harness();
  uint8_t modes = data[0];
  size_t reads = 1 + data[1] % 8;
  size_t middle = ((data[1] >> 3) & 15) % reads;
  bool time_passes = (data[1] & 0x80) != 0;
  size_t pos = 2;
  std::vector<uint8_t> cuts;
  for (size_t i = 0; i + 1 < reads && pos < size; ++i) cuts.push_back(data[pos++]);
  std::string_view input(reinterpret_cast<const char*>(data + pos), size - pos);
  std::vector<std::string_view> chunks;
  std::string_view rest = input;
  for (uint8_t c : cuts) {
    size_t n = rest.size() * c / 255;
    chunks.push_back(rest.substr(0, n));
    rest.remove_prefix(n);
  }
  chunks.push_back(rest);

  static const FakeSlot::Mode kTokenModes[4] = {FakeSlot::Mode::READY, FakeSlot::Mode::READY,
                                                FakeSlot::Mode::ACQUIRE_OK, FakeSlot::Mode::ACQUIRE_FAIL};
  int connect_mode = (modes >> 2) & 7;
  if (connect_mode > 4) connect_mode = 0;
  int ending = modes >> 6;
  used_midbody_reset = false;
  h.reply = reply;
  std::vector<bool> heads = head_requests(input);
  ClientReader reader(heads);
  reader.on_head = [&h](size_t index, const ClientResponse&) { h.client_responses_ = index + 1; };
  h.on_client_write = [&h, &reader] { reader.feed(h.client_->written_); };
  h.begin(kTokenModes[modes & 3], connect_mode);
  FakeTransport* client = h.client_;
  client->hold_writes_ = (modes & 0x20) != 0;

  std::string sent;
  size_t delivered_upto = chunks.size();
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (h.client_->closed_) {
      delivered_upto = i;
      break;
    }
    if (!chunks[i].empty()) {
      push(*client, std::string(chunks[i]));
      sent.append(chunks[i]);
    }
    h.pump();
    if (time_passes) h.fire_timers();
    if (ending >= 2 && i == middle) {
      client->inbox_.push_back({ending == 2 ? Event::Kind::END : Event::Kind::RESET, {}});
      h.pump();
      delivered_upto = i + 1;
      break;
    }
  }
  (void)delivered_upto;
  if (ending == 1 && !client->closed_) {
    client->inbox_.push_back({Event::Kind::RESET, {}});
    h.pump();
  }
  h.finish();

  // What the client saw.
  h.on_client_write = nullptr;
  reader.feed(client->written_);
  auto finals = reader.finals();
  bool head_style = false;
  if (!used_midbody_reset && reader.truncated()) {
    // A closing error with no body at all is a HEAD-style answer to a request whose method
    // llhttp could not finish reading ("HEA\xe5"): miproxy may know it as HEAD when we do not.
    const ClientResponse* last = finals.empty() ? nullptr : finals.back();
    head_style = last && last->has("x-miproxy-error") && last->body.empty() &&
                      iequal(last->header("connection"), "close");
    if (!head_style) fail("a response to the client was cut short", client->written_);
  }
  // Requests that reached the upstream, by the client response they belong to.
  std::vector<const FakeTransport::Request*> upstream;
  for (const auto& f : h.fakes_) {
    for (const auto& r : f->requests_) upstream.push_back(&r);
  }
  for (size_t i = 0; i < finals.size(); ++i) {
    const ClientResponse& r = *finals[i];
    bool own = r.has("x-miproxy-error");
    bool head = (i < heads.size() && heads[i]) || (head_style && i + 1 == finals.size());
    if (own) check_own_error(r, head, client->written_);
    if (own && r.status >= 400 && r.status < 500) {
      std::string code = r.header("x-miproxy-error");
      for (const auto* u : upstream) {
        if (u->client_index != i) continue;
        if (code != "BadRequest") fail("request answered " + code + " by miproxy reached the upstream", sent);
        if (u->complete) fail("request answered " + code + " by miproxy reached the upstream complete", sent);
      }
    }
    if (!own && !r.has("x-fuzz-upstream")) fail("a response neither miproxy's nor the upstream's", client->written_);
    std::string conn = r.header("connection");
    if (iequal(conn, "close") && i + 1 < finals.size()) fail("a response after Connection: close", client->written_);
  }
  h.end();
  return 0;
}
