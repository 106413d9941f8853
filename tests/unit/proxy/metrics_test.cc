#include <catch2/catch.hpp>

#include <string>
#include <thread>
#include <vector>

#include "proxy/metrics.h"

using namespace miproxy::proxy;

TEST_CASE("limit hits are counted per limit and exposed as one family", "[metrics]") {
  Metrics metrics;
  auto& c = limit_hits("test_limit_a");
  uint64_t before = c.load();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([] {
      for (int i = 0; i < 1000; ++i) count_limit_hit("test_limit_a");
    });
  }
  for (auto& t : threads) t.join();
  CHECK(c.load() == before + 4000);
  CHECK(&limit_hits("test_limit_a") == &c);  // one counter per name, stable

  std::string text = metrics.serialize();
  CHECK(text.find("# TYPE miproxy_limit_hits_total counter") != std::string::npos);
  CHECK(text.find("miproxy_limit_hits_total{limit=\"test_limit_a\"} " +
                  std::to_string(before + 4000)) != std::string::npos);
  // Limits miproxy enforces are listed before their first hit.
  CHECK(text.find("miproxy_limit_hits_total{limit=\"max_connections\"}") != std::string::npos);
}
