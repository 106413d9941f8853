#include "auth/http_fetcher.h"

#include "base/ascii.h"

namespace miproxy::auth {

std::string FetchResponse::header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (iequals(n, name)) return v;
  }
  return "";
}

}  // namespace miproxy::auth
