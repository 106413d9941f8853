// JWT claims and base64: decode_jwt_claims() on any text never throws; base64url_decode()
// inverts base64url_encode() and base64_encode() for every byte string.

#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include "auth/jwt.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)miproxy::auth::decode_jwt_claims(text);
  (void)miproxy::auth::base64url_decode(text);
  auto round = miproxy::auth::base64url_decode(miproxy::auth::base64url_encode(text));
  auto round_std = miproxy::auth::base64url_decode(miproxy::auth::base64_encode(text));
  if (!round || *round != text || !round_std || *round_std != text) {
    std::fprintf(stderr, "base64 round trip lost bytes\n");
    std::abort();
  }
  return 0;
}
