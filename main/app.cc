#include "main/app.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <optional>
#include <cstdio>
#include <cstring>
#include <thread>

#include "auth/process.h"
#include "auth/scheduler.h"
#include "auth/source.h"
#include "auth/token_manager.h"
#include "auth/uv_executor.h"
#include "base/guard.h"
#include "base/log.h"
#include "base/sd_notify.h"
#include "config/config.h"
#include "proxy/admin.h"
#include "proxy/fetcher.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/transport.h"

namespace miproxy::app {
namespace {

void harden_process() {
  // Tokens and secrets live in this process's memory: never let it dump core.
  struct rlimit no_core {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);
}

unsigned worker_count(const config::Config& cfg) {
  if (cfg.workers > 0) return cfg.workers;
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

void print_diagnostics(const std::vector<config::Diagnostic>& ds, const char* prefix) {
  for (const auto& d : ds) std::fprintf(stderr, "%s%s\n", prefix, d.to_string().c_str());
}

// The control thread's state for `run`.
class ControlPlane {
 public:
  explicit ControlPlane(std::string config_path) : config_path_(std::move(config_path)) {
    uv_loop_init(&loop_);
  }

  int run() {
    auto loaded = config::load_file(config_path_);
    if (!loaded) {
      print_diagnostics(loaded.error(), "miproxy: config error: ");
      return 1;
    }
    config_ = loaded->config;
    print_diagnostics(loaded->warnings, "miproxy: warning: ");
    log::Level level;
    if (log::parse_level(config_->log.level, &level)) log::set_level(level);

    executor_ = std::make_unique<UvExecutor>(&loop_);
    scheduler_ = std::make_unique<auth::UvScheduler>(&loop_);
    connector_ = std::make_unique<proxy::Connector>(&loop_);
    fetcher_ = std::make_unique<proxy::Fetcher>(&loop_, *connector_);
    processes_ = std::make_unique<auth::UvProcessRunner>(&loop_);
    deps_.fetcher = fetcher_.get();
    deps_.processes = processes_.get();
    deps_.getenv = [](const std::string& name) {
      const char* v = std::getenv(name.c_str());
      return v ? std::string(v) : std::string();
    };
    deps_.ca_file = config_->tls.ca_file;
    deps_.defer = [this](std::function<void()> task) { executor_->post(std::move(task)); };
    // Read per request on the control thread: a reload's value applies to every source.
    deps_.request_timeout = [this] { return to_ms(config_->limits.token_request_timeout); };
    auth::TokenManagerOptions token_options;
    token_options.waiter_budget = to_ms(config_->limits.token_wait_timeout);
    token_options.request_timeout = to_ms(config_->limits.token_request_timeout);
    token_options.limit_hit = [](const char* limit) { proxy::count_limit_hit(limit); };
    tokens_ = std::make_unique<auth::TokenManager>(
        *executor_, *scheduler_,
        [this](const config::Identity& id) { return auth::make_source(id, deps_); },
        std::move(token_options));
    tokens_->set_observer([this](const auth::AcquisitionEvent& e) {
      metrics_.token_acquisition(e.identity, e.source, e.ok,
                                 std::chrono::duration<double>(e.latency).count());
      if (e.ok) {
        log::info("token acquired", {{"identity", e.identity}, {"scope", e.scope},
                                     {"source", e.source}, {"refresh", e.refresh}});
      } else {
        log::warn("token acquisition failed", {{"identity", e.identity}, {"scope", e.scope},
                                               {"source", e.source}, {"error", e.error}});
      }
    });

    auto bound = proxy::bind_listeners(*config_);
    if (!bound) {
      log::error("cannot listen", {{"error", bound.error()}});
      sd::notify("STATUS=cannot listen: " + bound.error());
      return fail_start();
    }
    server_ = std::make_unique<proxy::Server>(std::move(*bound), worker_count(*config_));
    server_->set_on_stopped([this] { executor_->post([this] { on_workers_stopped(); }); });
    auto snap = build_snapshot(config_);
    server_->start(snap);
    for (const auto& l : server_->listeners()) {
      log::info("listening", {{"address", l.display}});
    }
    for (const auto& r : config_->routes) {
      log::info("route", {{"name", r.name}, {"upstream", r.upstream}, {"identity", r.identity},
                          {"scope", r.scope}});
    }
    for (const auto& [name, id] : config_->identities) {
      log::info("identity", {{"name", name}, {"type", config::to_string(id.type)}});
    }
    if (config_->admin.enabled && !start_admin()) return fail_start();
    log::info("started", {{"workers", worker_count(*config_)}, {"version", MIPROXY_VERSION}});
    tokens_->prefetch();

    start_signal(&sigterm_, SIGTERM);
    start_signal(&sigint_, SIGINT);
    start_signal(&sighup_, SIGHUP);
    // Type=notify: every listener and the admin listener are bound (connections queue in the
    // backlog until the workers accept them). Tokens are not waited for: docs/deploy-vm.md.
    sd::notify("READY=1\nSTATUS=" + serving_status());

    uv_run(&loop_, UV_RUN_DEFAULT);
    server_->join();
    server_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    uv_loop_close(&loop_);
    log::info("stopped", {});
    return 0;
  }

 private:
  std::shared_ptr<const proxy::Snapshot> build_snapshot(std::shared_ptr<const config::Config> c) {
    auto snap = std::make_shared<proxy::Snapshot>(c);
    snap->generation = ++generation_;
    snap->unrouted_metrics = metrics_.route("");
    auth::TokenManager* tokens = tokens_.get();
    snap->make_slot = [tokens, c](const std::string& identity, const std::string& scope) {
      return tokens->slot(c->identities.at(identity), scope);
    };
    for (const auto& cr : snap->table.routes()) {
      proxy::RouteRuntime rt;
      const config::Route& r = *cr.route;
      if (r.scope != "auto") {
        rt.slot = tokens_->slot(c->identities.at(r.identity), r.scope);
      } else {
        rt.learned = std::make_shared<proxy::LearnedScope>(c->limits.max_learned_scopes);
      }
      rt.metrics = metrics_.route(r.name);
      snap->routes.push_back(std::move(rt));
    }
    return snap;
  }

  bool start_admin() {
    proxy::AdminServer::Handlers h;
    h.readiness = [this] { return readiness(); };
    h.metrics = [this] { return scrape(); };
    h.allow_quit = config_->admin.allow_quit;
    h.quit = [this] { on_signal(SIGTERM); };
    admin_ = std::make_unique<proxy::AdminServer>(&loop_, std::move(h));
    auto bound = admin_->listen(config_->admin.host, config_->admin.port);
    if (!bound) {
      log::error("cannot listen", {{"error", bound.error()}});
      server_->force_close();
      server_->join();
      return false;
    }
    log::info("admin listening", {{"address", *bound}});
    return true;
  }

  std::pair<bool, std::string> readiness() {
    nlohmann::json slots = tokens_->status_json();
    bool ready = !stopping_ && tokens_->ready();
    nlohmann::json body = {{"ready", ready}, {"identities", slots}};
    if (stopping_) body["reason"] = "draining";
    // The slots' last_error carries a token endpoint's words: whatever bytes they are, the
    // answer is valid JSON (invalid UTF-8 becomes U+FFFD; control bytes are escaped).
    return {ready, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
  }

  std::string scrape() {
    metrics_.set_worker_totals(server_->total(&proxy::WorkerStats::upstream_connects),
                               server_->total(&proxy::WorkerStats::upstream_reused),
                               server_->total(&proxy::WorkerStats::upstream_open),
                               server_->total(&proxy::WorkerStats::active_connections));
    for (const auto& s : tokens_->status_json()) {
      double secs = s.contains("expires_in") && s["expires_in"].is_number()
                        ? s["expires_in"].get<double>()
                        : 0.0;
      metrics_.token_expiry(s.value("identity", ""), s.value("scope", ""), secs);
    }
    return metrics_.serialize();
  }

  void start_signal(uv_signal_t* h, int signum) {
    uv_signal_init(&loop_, h);
    h->data = this;
    uv_signal_start(h, [](uv_signal_t* s, int num) {
      guard::run("signal", [&] { static_cast<ControlPlane*>(s->data)->on_signal(num); });
    }, signum);
  }

  void on_signal(int signum) {
    if (signum == SIGHUP) {
      reload();
      return;
    }
    if (stopping_) {
      log::warn("second stop signal: closing all connections now", {});
      server_->force_close();
      return;
    }
    stopping_ = true;
    sd::notify("STOPPING=1\nSTATUS=draining");
    log::info("draining", {{"signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"},
                           {"grace_seconds", config_->shutdown_grace}});
    server_->drain();
    uv_timer_init(&loop_, &grace_);
    grace_.data = this;
    uv_timer_start(&grace_, [](uv_timer_t* t) {
      auto* self = static_cast<ControlPlane*>(t->data);
      guard::run("shutdown grace timer", [self] {
        log::warn("shutdown grace period over: closing remaining connections", {});
        self->server_->force_close();
      });
    }, static_cast<uint64_t>(config_->shutdown_grace * 1000), 0);
  }

  std::string serving_status() const {
    return "serving " + std::to_string(config_->routes.size()) + " route(s), config generation " +
           std::to_string(generation_);
  }

  void reload() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    sd::notify("RELOADING=1\nSTATUS=reloading " + config_path_ + "\nMONOTONIC_USEC=" +
               std::to_string(static_cast<uint64_t>(now.tv_sec) * 1000000 +
                              static_cast<uint64_t>(now.tv_nsec) / 1000));
    auto loaded = config::load_file(config_path_);
    if (!loaded) {
      metrics_.config_reload(false);
      std::vector<std::string> errors;
      for (const auto& d : loaded.error()) errors.push_back(d.to_string());
      log::error("reload failed: keeping the running config", {{"errors", errors}});
      sd::notify("READY=1\nSTATUS=reload refused (" + std::to_string(errors.size()) +
                 " error(s)), " + serving_status());
      return;
    }
    auto c = loaded->config;
    if (c->listeners.size() != config_->listeners.size()) {
      log::warn("listener changes take effect after a restart", {});
    }
    config_ = c;
    metrics_.config_reload(true);
    tokens_->set_wait_limits(to_ms(c->limits.token_wait_timeout),
                             to_ms(c->limits.token_request_timeout));
    server_->publish(build_snapshot(c));
    tokens_->retain(c->identities);
    tokens_->prefetch();
    log::info("reloaded", {{"routes", c->routes.size()}, {"generation", generation_}});
    sd::notify("READY=1\nSTATUS=" + serving_status());
  }

  // A start that failed once the loop had handles: they are closed as a stop closes them, so
  // the loop closes cleanly and nothing is left behind (LeakSanitizer saw the admin listener's).
  int fail_start() {
    server_.reset();
    close_components();
    uv_run(&loop_, UV_RUN_NOWAIT);  // runs the close callbacks
    uv_loop_close(&loop_);
    return 1;
  }

  void on_workers_stopped() {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sighup_), nullptr);
    if (stopping_) uv_close(reinterpret_cast<uv_handle_t*>(&grace_), nullptr);
    close_components();
  }

  // Everything on the control loop except the signal handles, in dependency order: one list for
  // a normal stop and for a failed start.
  void close_components() {
    admin_.reset();
    tokens_.reset();
    processes_.reset();
    fetcher_.reset();
    connector_.reset();
    scheduler_.reset();
    if (executor_) executor_->close();
  }

  std::string config_path_;
  uv_loop_t loop_;
  std::shared_ptr<const config::Config> config_;
  std::unique_ptr<UvExecutor> executor_;
  std::unique_ptr<auth::UvScheduler> scheduler_;
  std::unique_ptr<proxy::Connector> connector_;
  std::unique_ptr<proxy::Fetcher> fetcher_;
  std::unique_ptr<auth::UvProcessRunner> processes_;
  auth::SourceDeps deps_;
  std::unique_ptr<auth::TokenManager> tokens_;
  std::unique_ptr<proxy::Server> server_;
  std::unique_ptr<proxy::AdminServer> admin_;
  proxy::Metrics metrics_;
  uv_signal_t sigterm_, sigint_, sighup_;
  uv_timer_t grace_;
  bool stopping_ = false;
  uint64_t generation_ = 0;
};

}  // namespace

int run_proxy(const std::string& config_path) {
  harden_process();
  ControlPlane control(config_path);
  return control.run();
}

int check_config(const std::string& config_path) {
  auto loaded = config::load_file(config_path);
  if (!loaded) {
    print_diagnostics(loaded.error(), "error: ");
    std::fprintf(stderr, "%zu error(s) in %s\n", loaded.error().size(), config_path.c_str());
    return 1;
  }
  std::fputs(config::describe(*loaded->config).c_str(), stdout);
  print_diagnostics(loaded->warnings, "warning: ");
  std::printf("config OK: %s\n", config_path.c_str());
  return 0;
}

namespace {

// A blocking TCP connection to an IP literal (or "localhost"); -1 on failure.
int connect_tcp(const std::string& host, uint16_t port) {
  sockaddr_storage ss{};
  socklen_t sl = 0;
  if (inet_pton(AF_INET6, host.c_str(), &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr) == 1) {
    ss.ss_family = AF_INET6;
    reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
    sl = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &a->sin_addr);
    sl = sizeof(sockaddr_in);
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&ss), sl) == 0) return fd;
  if (fd >= 0) ::close(fd);
  return -1;
}

// Whether |r| holds a whole response: its head and Content-Length bytes of body (the admin
// listener may keep the connection open after answering).
bool complete(const std::string& r) {
  size_t end = r.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  std::string head = r.substr(0, end);
  for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  size_t at = head.find("\r\ncontent-length:");
  if (at == std::string::npos) return false;
  return r.size() - end - 4 >= std::strtoull(head.c_str() + at + 17, nullptr, 10);
}

// A tiny blocking HTTP/1.0 GET: the whole response (head and body), or nothing.
std::optional<std::string> http_get(const std::string& host, uint16_t port,
                                    const std::string& path, size_t max_bytes) {
  int fd = connect_tcp(host, port);
  if (fd < 0) return std::nullopt;
  bool v6 = host.find(':') != std::string::npos;
  std::string authority = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: " + authority + "\r\n\r\n";
  std::string out;
  if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
      if (out.size() >= max_bytes || complete(out)) break;
    }
  }
  ::close(fd);
  if (out.size() < 12) return std::nullopt;
  return out;
}

bool is_200(const std::string& response) { return response.compare(9, 3, "200") == 0; }

// miproxy_config_reloads_total{result=|result|} in a /metrics answer (0 when absent).
double reload_count(const std::string& metrics, const std::string& result) {
  std::string key = "miproxy_config_reloads_total{result=\"" + result + "\"} ";
  size_t at = metrics.find("\n" + key);
  if (at == std::string::npos) return 0;
  return std::strtod(metrics.c_str() + at + 1 + key.size(), nullptr);
}

}  // namespace

int wait_ready(const std::string& admin, double timeout_seconds) {
  // Runs before anything else in a pod or script: blocking calls, no event loop.
  std::string host = admin, port = "80";
  size_t colon = admin.rfind(':');
  if (colon != std::string::npos) {
    host = admin.substr(0, colon);
    port = admin.substr(colon + 1);
  }
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  do {
    auto r = http_get(host, static_cast<uint16_t>(std::stoi(port)), "/readyz", 64);
    if (r && is_200(*r)) return 0;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } while (std::chrono::steady_clock::now() < deadline);
  std::fprintf(stderr, "miproxy wait: %s not ready after %.0f s\n", admin.c_str(), timeout_seconds);
  return 1;
}

int reload_running(const std::string& config_path, long pid, double timeout_seconds) {
  // 1. The file the running process will read on SIGHUP must pass the same validation.
  auto loaded = config::load_file(config_path);
  if (!loaded) {
    print_diagnostics(loaded.error(), "error: ");
    std::fprintf(stderr, "miproxy reload: %zu error(s) in %s; process %ld not signalled, it "
                 "keeps serving its running config\n", loaded.error().size(),
                 config_path.c_str(), pid);
    return 1;
  }
  // 2. Its verdict: the admin listener's reload counters (the running process's admin
  // address; a reload never moves it). Without an admin listener there is nothing to read.
  const config::Admin& admin = loaded->config->admin;
  std::optional<std::string> before;
  if (admin.enabled) {
    before = http_get(admin.host, admin.port, "/metrics", 1 << 20);
    if (!before || !is_200(*before)) {
      std::fprintf(stderr, "miproxy reload: cannot read http://%s:%u/metrics: the verdict "
                   "could not be observed; not signalling\n", admin.host.c_str(), admin.port);
      return 1;
    }
  }
  if (::kill(static_cast<pid_t>(pid), SIGHUP) != 0) {
    std::fprintf(stderr, "miproxy reload: cannot signal process %ld: %s\n", pid,
                 std::strerror(errno));
    return 1;
  }
  if (!before) {
    std::printf("miproxy reload: %s is valid; process %ld signalled (no admin listener: its "
                "verdict is in its log)\n", config_path.c_str(), pid);
    return 0;
  }
  double ok0 = reload_count(*before, "success"), failed0 = reload_count(*before, "failure");
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000));
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto now = http_get(admin.host, admin.port, "/metrics", 1 << 20);
    if (!now || !is_200(*now)) continue;
    if (reload_count(*now, "failure") > failed0) {
      std::fprintf(stderr, "miproxy reload: process %ld refused %s and keeps serving its "
                   "running config (its log has the errors)\n", pid, config_path.c_str());
      return 1;
    }
    if (reload_count(*now, "success") > ok0) {
      std::printf("miproxy reload: process %ld reloaded %s\n", pid, config_path.c_str());
      return 0;
    }
  } while (std::chrono::steady_clock::now() < deadline);
  std::fprintf(stderr, "miproxy reload: process %ld gave no verdict within %.0f s\n", pid,
               timeout_seconds);
  return 1;
}

}  // namespace miproxy::app
