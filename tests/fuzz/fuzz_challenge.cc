// WWW-Authenticate: parse_bearer_challenge() on any header value, and the scope it yields
// checked against a fixed upstream host.

#include <string_view>

#include "auth/challenge.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view header(reinterpret_cast<const char*>(data), size);
  auto challenge = miproxy::auth::parse_bearer_challenge(header);
  if (!challenge) return 0;
  for (std::string_view host : {"myvault.vault.azure.net", "contoso.blob.core.windows.net",
                                "localhost", "127.0.0.1"}) {
    std::string scope = miproxy::auth::scope_from_challenge(*challenge, host);
    (void)miproxy::auth::resource_of_scope(scope);
  }
  return 0;
}
