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

// `miproxy reload --pid PID --config FILE`: validates FILE (the file that process runs), sends
// it SIGHUP and, when the config has an admin listener, waits for the process's verdict on its
// reload counters. 0 when reloaded; 1 when FILE is invalid, refused, or no verdict came.
int reload_running(const std::string& config_path, long pid, double timeout_seconds);

}  // namespace miproxy::app
