#pragma once
// Wiring for the `run` verb: the control thread (token manager, signals, reload, admin) and the
// data-plane workers. main.cc parses the command line and calls run_proxy().

#include <string>

namespace miproxy::app {

// Runs until SIGTERM/SIGINT (graceful drain) and returns the process exit code.
int run_proxy(const std::string& config_path);

// `miproxy check`: prints the resolved routes or every error; returns the exit code.
int check_config(const std::string& config_path);

// `miproxy wait --admin ADDR --timeout S`: polls ADDR/readyz; 0 when ready, 1 on timeout.
int wait_ready(const std::string& admin_address, double timeout_seconds);

}  // namespace miproxy::app
