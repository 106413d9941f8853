#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <string>

#include "proxy/metrics.h"
#include "proxy/tls_stream.h"

using miproxy::proxy::limit_hits;
using miproxy::proxy::detail::SessionCache;

TEST_CASE("the TLS session cache keeps at most its bound, dropping the least recently used",
          "[tls][limits]") {
  uint64_t evicted_before = limit_hits("max_tls_sessions").load();
  SessionCache cache(3);
  SSL_SESSION* a = SSL_SESSION_new();
  SSL_SESSION* b = SSL_SESSION_new();
  SSL_SESSION* c = SSL_SESSION_new();
  cache.put("a", a);
  cache.put("b", b);
  cache.put("c", c);
  CHECK(cache.size() == 3);
  CHECK(cache.get("a") == a);  // a is now the most recently used; b the least
  cache.put("d", SSL_SESSION_new());
  CHECK(cache.size() == 3);
  CHECK(cache.get("b") == nullptr);
  CHECK(cache.get("a") == a);
  CHECK(cache.get("c") == c);
  CHECK(cache.get("d") != nullptr);
  CHECK(limit_hits("max_tls_sessions").load() == evicted_before + 1);

  // Replacing a peer's session is no eviction and keeps the size.
  SSL_SESSION* c2 = SSL_SESSION_new();
  cache.put("c", c2);
  CHECK(cache.size() == 3);
  CHECK(cache.get("c") == c2);
  CHECK(limit_hits("max_tls_sessions").load() == evicted_before + 1);

  // Lowering the bound drops the oldest at once: c is newest, then d, then a.
  cache.set_max_entries(1);
  CHECK(cache.size() == 1);
  CHECK(cache.get("c") == c2);
  CHECK(cache.get("a") == nullptr);
  CHECK(limit_hits("max_tls_sessions").load() == evicted_before + 3);
}

TEST_CASE("a thousand upstream hosts leave the cache at its bound", "[tls][limits]") {
  SessionCache cache(64);
  for (int i = 0; i < 1000; ++i) cache.put("host" + std::to_string(i), SSL_SESSION_new());
  CHECK(cache.size() == 64);
  CHECK(cache.get("host999") != nullptr);
  CHECK(cache.get("host935") == nullptr);
}
