// miproxy command line (interface.md "Command line").
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "main/app.h"
#include "main/doctor.h"

namespace {

constexpr const char* kUsage =
    "usage:\n"
    "  miproxy [run] --config FILE          run the proxy (default verb)\n"
    "  miproxy check --config FILE          validate; print the resolved routes\n"
    "  miproxy doctor --config FILE [--route NAME] [--json]\n"
    "                                       acquire each route's token, show the evidence,\n"
    "                                       probe the upstream, explain failures\n"
    "  miproxy wait --admin ADDR [--timeout SECONDS]\n"
    "                                       block until that instance is ready\n"
    "  miproxy reload --pid PID --config FILE [--timeout SECONDS]\n"
    "                                       validate FILE, SIGHUP process PID, wait for its\n"
    "                                       verdict (non-zero when refused)\n"
    "  miproxy --version | --help\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "miproxy: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  std::string verb = "run";
  size_t i = 0;
  if (!args.empty() && !args[0].starts_with("-")) {
    verb = std::string(args[0]);
    i = 1;
  }
  std::string config_path, admin, route, pid;
  double timeout = 30;
  bool json = false;
  for (; i < args.size(); ++i) {
    std::string_view a = args[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= args.size()) return false;
      out = std::string(args[++i]);
      return true;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::printf("miproxy %s\n", MIPROXY_VERSION);
      return 0;
    } else if (a == "--config" || a == "-c") {
      if (!value(config_path)) return usage_error("--config needs a file");
    } else if (a == "--admin") {
      if (!value(admin)) return usage_error("--admin needs an address");
    } else if (a == "--pid") {
      if (!value(pid)) return usage_error("--pid needs a process id");
    } else if (a == "--route") {
      if (!value(route)) return usage_error("--route needs a name");
    } else if (a == "--timeout") {
      std::string t;
      if (!value(t)) return usage_error("--timeout needs seconds");
      char* end = nullptr;
      timeout = std::strtod(t.c_str(), &end);
      if (end == t.c_str() || *end != '\0' || timeout < 0) return usage_error("bad --timeout");
    } else if (a == "--json") {
      json = true;
    } else {
      return usage_error("unknown argument '" + std::string(a) + "'");
    }
  }
  if (verb == "wait") {
    if (admin.empty()) return usage_error("wait needs --admin ADDR");
    return miproxy::app::wait_ready(admin, timeout);
  }
  if (verb == "reload") {
    char* end = nullptr;
    long n = pid.empty() ? 0 : std::strtol(pid.c_str(), &end, 10);
    if (n <= 0 || *end != '\0') return usage_error("reload needs --pid PID (a positive number)");
    if (config_path.empty()) return usage_error("reload needs --config FILE");
    return miproxy::app::reload_running(config_path, n, timeout);
  }
  if (verb != "run" && verb != "check" && verb != "doctor") {
    return usage_error("unknown verb '" + verb + "'");
  }
  if (config_path.empty()) return usage_error(verb + " needs --config FILE");
  if (verb == "check") return miproxy::app::check_config(config_path);
  if (verb == "doctor") return miproxy::app::run_doctor(config_path, route, json);
  return miproxy::app::run_proxy(config_path);
}
