#pragma once
// `miproxy doctor`: per route, acquire a token, show the evidence from its claims (never the
// token), probe the upstream and explain failures in words (interface.md).

#include <string>

namespace miproxy::app {

// Returns 0 only when every selected route passes.
int run_doctor(const std::string& config_path, const std::string& route, bool json);

}  // namespace miproxy::app
