#pragma once
// `miproxy doctor`: per route, acquire a token, show the evidence from its claims (never the
// token), probe the upstream and explain failures in words (interface.md).

#include <string>
#include <string_view>

namespace miproxy::app {

// Returns 0 only when every selected route passes.
int run_doctor(const std::string& config_path, const std::string& route, bool json);

// |text| made safe for a terminal: C0, DEL and C1 control characters as \xNN, each byte that is
// not part of valid UTF-8 as U+FFFD. Doctor's human output passes every outside string through it.
std::string terminal_safe(std::string_view text);

}  // namespace miproxy::app
