#include "proxy/strict_http.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <string_view>

#include "unit/support/strict_diff.h"

using miproxy::proxy::authority_problem;
using miproxy::proxy::StrictRequestReader;
using miproxy::testing::compare;
using miproxy::testing::run_llhttp;
using miproxy::testing::run_strict;

namespace {

const std::string kHead = "PUT /c/b HTTP/1.1\r\nHost: a\r\n";
const std::string kChunkedHead = kHead + "Transfer-Encoding: chunked\r\n\r\n";
const std::string kGet = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

// The differential corpus: for each input, what llhttp 8.1 (as ClientConn runs it) does with it
// and what the strict reader does. LENIENT rows are the point of the strict reader: llhttp
// reads them without an error, a strict RFC 9112 reader refuses them.
enum class Llhttp { ACCEPTS, REFUSES };
struct Case {
  const char* name;
  std::string bytes;
  Llhttp llhttp;
  const char* refused;  // nullptr: the strict reader accepts every byte; else part of its reason
};

const Case kCorpus[] = {
    // Valid requests: both read them, and the same way.
    {"GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", Llhttp::ACCEPTS, nullptr},
    {"HTTP/1.0 GET", "GET / HTTP/1.0\r\n\r\n", Llhttp::ACCEPTS, nullptr},
    {"HEAD", "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", Llhttp::ACCEPTS, nullptr},
    {"pipelined GETs", kGet + kGet + kGet, Llhttp::ACCEPTS, nullptr},
    {"leading empty lines", "\r\n\r\n" + kGet, Llhttp::ACCEPTS, nullptr},
    {"Content-Length body, then a GET",
     kHead + "Content-Length: 5\r\n\r\nAB\r\nC" + kGet, Llhttp::ACCEPTS, nullptr},
    {"Content-Length 0", kHead + "Content-Length: 0\r\n\r\n" + kGet, Llhttp::ACCEPTS, nullptr},
    {"chunked with extension and trailers",
     kChunkedHead + "4;ext=\"v\"\r\nAAAA\r\n1A\r\n" + std::string(26, 'B') +
         "\r\n0\r\nX-Trailer: 1\r\nX-Other: two words\r\n\r\n" + kGet,
     Llhttp::ACCEPTS, nullptr},
    {"chunked, upper-case hex", kChunkedHead + "A\r\n0123456789\r\n0\r\n\r\n", Llhttp::ACCEPTS,
     nullptr},
    {"empty field value and obs-text",
     "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Text: caf\xc3\xa9\t tab\r\n\r\n",
     Llhttp::ACCEPTS, nullptr},
    {"absolute-form target", "GET http://a:8080/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n",
     Llhttp::ACCEPTS, nullptr},

    // Shapes of issue 8 item 10: llhttp 8.1 reads them, a strict reader refuses them.
    {"two bytes other than CRLF after chunk data",
     kChunkedHead + "4\r\nAAAAXY0\r\n\r\n", Llhttp::ACCEPTS, "chunk data not followed by CRLF"},
    {"pipelined GET hidden in a body through a lenient chunk CRLF",
     kChunkedHead + "1\r\nAXY0\r\n\r\n" + kGet, Llhttp::ACCEPTS,
     "chunk data not followed by CRLF"},
    {"bare CR ending a chunk-size line", kChunkedHead + "4\rXAAAA\r\n0\r\n\r\n",
     Llhttp::ACCEPTS, "bare CR"},
    {"bare CR ending the trailer section", kChunkedHead + "0\r\nX-T: 1\r\n\rX", Llhttp::ACCEPTS,
     "bare CR"},
    {"bare CR ending a trailer line", kChunkedHead + "0\r\nX-T: 1\rX\r\n\r\n", Llhttp::REFUSES,
     "bare CR"},
    {"bare CR ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\rX", Llhttp::ACCEPTS, "bare CR"},
    {"space inside a field name",
     kHead + "Transfer Encoding: chunked\r\nContent-Length: 4\r\n\r\nAAAA", Llhttp::ACCEPTS,
     "whitespace in or after a field name"},
    {"empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", Llhttp::ACCEPTS,
     "empty field name"},
    {"two spaces before the target", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Llhttp::ACCEPTS,
     "more than one space"},
    {"two spaces before the version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", Llhttp::ACCEPTS,
     "more than one space"},
    {"bare LF ending the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", Llhttp::ACCEPTS,
     "bare LF"},
    {"bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", Llhttp::ACCEPTS, "bare LF"},
    {"whitespace before the colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", Llhttp::ACCEPTS,
     "whitespace in or after a field name"},
    {"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", Llhttp::ACCEPTS, "obs-fold"},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", Llhttp::ACCEPTS, "unsupported HTTP version"},
    {"no version (HTTP/0.9)", "GET /\r\n\r\n", Llhttp::ACCEPTS, "without an HTTP version"},
    {"Content-Length in trailers", kChunkedHead + "0\r\nContent-Length: 4\r\n\r\n",
     Llhttp::ACCEPTS, "in the trailer section"},
    {"chunk size with 17 digits", kChunkedHead + "00000000000000004\r\nAAAA\r\n0\r\n\r\n",
     Llhttp::ACCEPTS, "chunk size too large"},

    // Further strictness: llhttp refuses these itself.
    {"bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", Llhttp::REFUSES, "bare LF"},
    {"bare LF ending a field line", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", Llhttp::REFUSES,
     "bare LF"},
    {"bare LF after chunk data", kChunkedHead + "4\r\nAAAA\n0\r\n\r\n", Llhttp::REFUSES,
     "chunk data not followed by CRLF"},
    {"bare LF ending a chunk-size line", kChunkedHead + "4\nAAAA\r\n0\r\n\r\n", Llhttp::REFUSES,
     "bare LF"},

    {"bare CR inside a field value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
     Llhttp::REFUSES, "bare CR"},
    {"control byte in a field value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n",
     Llhttp::REFUSES, "control byte in a field value"},
    {"chunk size without hex digits", kChunkedHead + ";x\r\n\r\n", Llhttp::REFUSES,
     "chunk size without hex digits"},
    {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", Llhttp::REFUSES, "unsupported HTTP version"},
    {"bytes after the version", "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", Llhttp::REFUSES,
     "request line does not end"},
    {"Content-Length with a sign", kHead + "Content-Length: +4\r\n\r\nAAAA", Llhttp::REFUSES,
     "invalid Content-Length"},
    {"Content-Length list", kHead + "Content-Length: 4, 4\r\n\r\nAAAA", Llhttp::REFUSES,
     "invalid Content-Length"},
    {"bad byte in a later pipelined request", kGet + "GET / HTTP/1.1\r\nX Y: z\r\n\r\n",
     Llhttp::ACCEPTS, "whitespace in or after a field name"},
};

// What llhttp does with the whole input, as ClientConn's parser would (no lenient flags).
bool llhttp_accepts(const std::string& bytes) { return run_llhttp(bytes).err == HPE_OK; }

}  // namespace

TEST_CASE("differential corpus: llhttp 8.1 and the strict reader", "[strict_http]") {
  for (const Case& c : kCorpus) {
    INFO(c.name);
    CHECK(llhttp_accepts(c.bytes) == (c.llhttp == Llhttp::ACCEPTS));
    auto whole = run_strict(c.bytes);
    if (c.refused == nullptr) {
      CHECK(whole.reason == "");
      CHECK(whole.accepted == c.bytes.size());
    } else {
      CHECK_THAT(whole.reason, Catch::Contains(c.refused));
      CHECK(whole.accepted < c.bytes.size());
    }
    // Whatever the strict reader accepts, llhttp reads into the same messages.
    CHECK(compare(whole, run_llhttp(std::string_view(c.bytes).substr(0, whole.accepted))) == "");
    // Fed a byte at a time, or in pieces of any size, the verdict is the same.
    for (size_t step = 1; step <= 7; ++step) {
      auto split = run_strict(c.bytes, step);
      CHECK(split.accepted == whole.accepted);
      CHECK(split.reason == whole.reason);
      CHECK(compare(split, run_llhttp(std::string_view(c.bytes).substr(0, whole.accepted))) == "");
    }
  }
}

TEST_CASE("strict reader: split at every byte boundary", "[strict_http]") {
  for (const Case& c : kCorpus) {
    INFO(c.name);
    auto whole = run_strict(c.bytes);
    for (size_t cut = 0; cut <= c.bytes.size(); ++cut) {
      StrictRequestReader r;
      size_t a = r.feed(c.bytes.data(), cut);
      size_t b = a == cut ? r.feed(c.bytes.data() + cut, c.bytes.size() - cut) : 0;
      CHECK(a + b == whole.accepted);
      CHECK(std::string(r.reason() ? r.reason() : "") == whole.reason);
    }
  }
}

TEST_CASE("strict reader: message boundaries of pipelined requests", "[strict_http]") {
  std::string chunked = kChunkedHead + "4\r\nAAAA\r\n0\r\nX-T: 1\r\n\r\n";
  std::string with_length = kHead + "Content-Length: 3\r\n\r\nGET";
  auto run = run_strict(chunked + with_length + kGet);
  REQUIRE(run.reason == "");
  REQUIRE(run.messages.size() == 3);
  CHECK(run.messages[0].body == "AAAA");
  CHECK(run.messages[0].fields.size() == 3);
  CHECK(std::get<2>(run.messages[0].fields[2]));  // X-T is a trailer
  CHECK(run.messages[1].body == "GET");
  CHECK(run.messages[2].target == "/next");
  CHECK(run.messages[2].body.empty());
  for (const auto& m : run.messages) CHECK(m.complete);

  StrictRequestReader r;
  std::string all = chunked + with_length + kGet;
  CHECK(r.feed(all.data(), all.size()) == all.size());
  CHECK(r.messages_done() == 3);
  CHECK(r.between_messages());
}

TEST_CASE("strict reader: failure is final and reports the refused message", "[strict_http]") {
  StrictRequestReader r;
  std::string bytes = kGet + "HEAD  / HTTP/1.1\r\n\r\n";
  size_t ok = r.feed(bytes.data(), bytes.size());
  CHECK(ok == kGet.size() + 5);
  CHECK(r.failed());
  CHECK(r.messages_done() == 1);
  CHECK(r.head_request());
  CHECK(r.feed("GET", 3) == 0);
}

TEST_CASE("strict reader: HEAD is recognised only as the whole method", "[strict_http]") {
  for (auto [method, head] : {std::pair{"HEAD", true}, {"HEADX", false}, {"HEA", false},
                              {"GET", false}, {"head", false}}) {
    StrictRequestReader r;
    std::string line = std::string(method) + " / HTTP/1.1\r\n";
    REQUIRE(r.feed(line.data(), line.size()) == line.size());
    CHECK(r.head_request() == head);
  }
  // A method refused part-way is no HEAD (its 400 carries a body), whatever it began with.
  for (const char* line : {"HEA\xe5 / HTTP/1.1\r\n", "HEAD\x01 / HTTP/1.1\r\n"}) {
    StrictRequestReader r;
    r.feed(line, std::strlen(line));
    CHECK(r.failed());
    CHECK_FALSE(r.head_request());
  }
}

TEST_CASE("authority_problem: uri-host [:port] of RFC 3986", "[strict_http]") {
  for (const char* ok : {"", "a", "echo.test", "echo.test:8080", "127.0.0.1", "127.0.0.1:1",
                         "[::1]", "[::1]:443", "a-b_c~d.e", "xn--bcher-kva.example", "h:",
                         "%41bc", "a!$&'()*+,;=b", "host:65535"}) {
    INFO(ok);
    CHECK(authority_problem(ok) == nullptr);
  }
  for (const char* bad : {"foo/bar", "user@host", "user:pw@host", "a b", " a", "a\t", ":80",
                          "a:b", "a:1:2", "a:65536", "a:123456", "[::1", "[::1]x", "[1.2]",
                          "[]", "[v1.x]", "a%4", "a%zz", "a?b", "a#b", "a\\b", "a\"b",
                          "\xff", "a[b", "[::1]:x"}) {
    INFO(bad);
    CHECK(authority_problem(bad) != nullptr);
  }
  // Found by fuzz_strict_http: bytes after a NUL inside brackets were never looked at.
  using namespace std::string_view_literals;
  for (std::string_view bad : {"[::1\0\0\0\t]:443"sv, "[::1\0]"sv, "[::1 ]"sv}) {
    CHECK(authority_problem(bad) != nullptr);
  }
}
