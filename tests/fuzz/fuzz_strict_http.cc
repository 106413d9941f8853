// The strict request reader against llhttp (the differential check of tests/unit/support/
// strict_diff.h): whatever prefix StrictRequestReader accepts, llhttp, configured as ClientConn
// configures it, must read into the same messages (method, target, version, field lines, body,
// end). Also: the verdict does not depend on how the bytes are split, and authority_problem
// never accepts a value with bytes that end an authority.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/strict_http.h"
#include "tests/unit/support/strict_diff.h"

using namespace miproxy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  testing::StrictRun whole = testing::run_strict(in);
  size_t step = size > 0 ? data[size - 1] % 13 + 1 : 1;
  testing::StrictRun split = testing::run_strict(in, step);
  if (split.accepted != whole.accepted || split.reason != whole.reason) {
    std::fprintf(stderr, "split by %zu: accepted %zu (%s), whole: %zu (%s)\n", step,
                 split.accepted, split.reason.c_str(), whole.accepted, whole.reason.c_str());
    std::abort();
  }
  testing::LlhttpRun l = testing::run_llhttp(in.substr(0, whole.accepted));
  if (std::string d = testing::compare(whole, l); !d.empty()) {
    std::fprintf(stderr, "strict reader and llhttp differ: %s\n", d.c_str());
    std::abort();
  }

  std::string_view authority = in.substr(0, in.find('\n'));
  if (proxy::authority_problem(authority) == nullptr &&
      authority.find_first_of("/?#@ \t\r\n\\\"") != std::string_view::npos) {
    std::fprintf(stderr, "authority accepted with a delimiter\n");
    std::abort();
  }
  return 0;
}
