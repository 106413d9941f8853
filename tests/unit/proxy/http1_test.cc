#include <catch2/catch.hpp>

#include "proxy/http1.h"

using namespace miproxy::proxy;

TEST_CASE("classify_header recognises the names the proxy acts on in any case", "[http1]") {
  CHECK(classify_header("Authorization") == HeaderToken::AUTHORIZATION);
  CHECK(classify_header("TRANSFER-ENCODING") == HeaderToken::TRANSFER_ENCODING);
  CHECK(classify_header("x-ms-version") == HeaderToken::X_MS_VERSION);
  CHECK(classify_header("X-Ms-Client-Request-Id") == HeaderToken::X_MS_CLIENT_REQUEST_ID);
  CHECK(classify_header("x-ms-versions") == HeaderToken::OTHER);
  CHECK(classify_header("") == HeaderToken::OTHER);
}

TEST_CASE("hop-by-hop headers are exactly those of RFC 9110 plus Proxy-*", "[http1]") {
  for (auto n : {"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
                 "Proxy-Authenticate", "TE", "Trailer", "Transfer-Encoding", "Upgrade"}) {
    INFO(n);
    CHECK(is_hop_by_hop(classify_header(n)));
  }
  for (auto n : {"Host", "Authorization", "Content-Length", "Expect", "x-ms-version"}) {
    INFO(n);
    CHECK_FALSE(is_hop_by_hop(classify_header(n)));
  }
}

TEST_CASE("HeaderList joins names and values delivered in pieces and trims values", "[http1]") {
  HeaderList h;
  h.append_name("Con", 3);
  h.append_name("tent-Length", 11);
  h.append_value("12", 2);
  h.append_value("3  ", 3);
  h.finish_value();
  h.append_name("X-A", 3);
  h.append_value("b", 1);
  h.finish_value();
  REQUIRE(h.size() == 2);
  CHECK(h.name(0) == "Content-Length");
  CHECK(h.value(0) == "123");
  CHECK(h.token(0) == HeaderToken::CONTENT_LENGTH);
  std::string_view v;
  REQUIRE(h.find_name("x-a", &v));
  CHECK(v == "b");
  CHECK(h.count(HeaderToken::CONTENT_LENGTH) == 1);
  h.clear();
  CHECK(h.size() == 0);
}

TEST_CASE("connection_lists matches comma-separated tokens case-insensitively", "[http1]") {
  CHECK(connection_lists("keep-alive, X-Secret", "x-secret"));
  CHECK(connection_lists("close", "Close"));
  CHECK_FALSE(connection_lists("x-secretive", "x-secret"));
  CHECK_FALSE(connection_lists("", "a"));
}

TEST_CASE("chunk headers are lower-case hex with CRLF", "[http1]") {
  std::string out;
  append_chunk_header(out, 0x1a2b);
  CHECK(out == "1a2b\r\n");
  out.clear();
  append_chunk_header(out, 1);
  CHECK(out == "1\r\n");
}

TEST_CASE("redact_query hides SAS signatures and tokens but keeps the rest", "[http1]") {
  CHECK(redact_query("/c/b?sv=2021-08-06&se=2030&sig=abc%2Bdef&comp=list") ==
        "/c/b?sv=2021-08-06&se=REDACTED&sig=REDACTED&comp=list");
  CHECK(redact_query("/x?access_token=eyJ&a=1") == "/x?access_token=REDACTED&a=1");
  CHECK(redact_query("/plain/path") == "/plain/path");
  CHECK(redact_query("/x?flag") == "/x?flag");
}

TEST_CASE("strip_sas_params drops every SAS parameter and keeps operation parameters", "[http1]") {
  CHECK(strip_sas_params("/c/b?comp=block&blockid=QQ%3D%3D&sv=2021&sig=x&se=y&sp=rw") ==
        "/c/b?comp=block&blockid=QQ%3D%3D");
  CHECK(strip_sas_params("/c?sv=1&sig=2") == "/c");
  CHECK(strip_sas_params("/c?restype=container") == "/c?restype=container");
  CHECK(strip_sas_params("/c") == "/c");
}

TEST_CASE("storage x-ms-version is raised only when missing or too old", "[http1]") {
  const char* blob = "acct.blob.core.windows.net";
  CHECK(storage_version_to_send(blob, "") == kStorageBearerVersion);
  CHECK(storage_version_to_send(blob, "2015-04-05") == kStorageBearerVersion);
  CHECK(storage_version_to_send(blob, "2017-11-09") == "2017-11-09");
  CHECK(storage_version_to_send(blob, "2025-01-05") == "2025-01-05");
  // Files needs 2024-11-04 for OAuth service/share operations.
  CHECK(storage_version_to_send("acct.file.core.windows.net", "2022-11-02") ==
        kStorageBearerVersion);
  CHECK(storage_version_to_send("acct.table.core.windows.net", "2018-03-28") ==
        kStorageBearerVersion);
  CHECK(storage_version_to_send("acct.table.core.windows.net", "2019-02-02") == "2019-02-02");
}

TEST_CASE("new_uuid is a random version-4 UUID", "[http1]") {
  std::string a = new_uuid(), b = new_uuid();
  REQUIRE(a.size() == 36);
  CHECK(a[14] == '4');
  CHECK((a[19] == '8' || a[19] == '9' || a[19] == 'a' || a[19] == 'b'));
  CHECK(a != b);
}

TEST_CASE("percent-encoded SAS parameter names are recognised", "[http1]") {
  CHECK(strip_sas_params("/c/b?comp=list&s%69g=zz&%73v=2021") == "/c/b?comp=list");
  CHECK(redact_query("/c/b?comp=list&s%69g=zz") == "/c/b?comp=list&s%69g=REDACTED");
  CHECK(strip_sas_params("/c?x=%zz") == "/c?x=%zz");
}

TEST_CASE("connection_lists_name reads every Connection header", "[http1]") {
  miproxy::proxy::HeaderList h;
  auto add = [&](std::string_view n, std::string_view v) {
    h.append_name(n.data(), n.size());
    h.append_value(v.data(), v.size());
    h.finish_value();
  };
  add("Connection", "keep-alive, X-A");
  add("X-A", "1");
  add("connection", " x-b ");
  CHECK(h.connection_lists_name("x-a"));
  CHECK(h.connection_lists_name("X-B"));
  CHECK_FALSE(h.connection_lists_name("X-C"));
}
