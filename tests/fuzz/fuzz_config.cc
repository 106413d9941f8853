// Config loader: any text given to config::parse() either loads (and then describes itself and
// compiles into a routing table) or yields diagnostics; it never throws or crashes.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "config/config.h"
#include "routing/router.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto result = miproxy::config::parse(text, "fuzz.json");
  if (!result) {
    for (const auto& d : result.error()) (void)d.to_string();
    return 0;
  }
  const auto& cfg = result->config;
  (void)miproxy::config::describe(*cfg);
  miproxy::routing::Table table(cfg);
  (void)table.routes().size();
  for (const auto& route : cfg->routes) {
    (void)miproxy::config::parse_upstream_url(route.upstream);
  }
  return 0;
}
