#include "main/doctor.h"

#include <cstdio>

namespace miproxy::app {

int run_doctor(const std::string& config_path, const std::string& route, bool json) {
  // TODO(miproxy): issue 4 — token evidence, upstream probe, explanations.
  std::fprintf(stderr, "miproxy doctor: not implemented yet\n");
  return 2;
}

}  // namespace miproxy::app
