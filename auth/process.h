#pragma once
// ProcessRunner (source.h) over uv_spawn on the control loop: no shell, the environment given in
// full, stdin from /dev/null, stdout and stderr captured through pipes (each bounded to
// kProcessOutputLimit bytes; the rest is read and discarded so the child never blocks on a full
// pipe). The child starts in its own session (process group); on timeout the whole group gets
// SIGKILL, so helpers it started (az is a Python script) die with it.

#include <uv.h>

#include <cstddef>
#include <unordered_set>

#include "auth/source.h"

namespace miproxy::auth {

inline constexpr size_t kProcessOutputLimit = 1024 * 1024;

class UvProcessRunner : public ProcessRunner {
 public:
  // On |loop|'s thread; every call must be made on it.
  explicit UvProcessRunner(uv_loop_t* loop);
  ~UvProcessRunner() override;  // close()
  UvProcessRunner(const UvProcessRunner&) = delete;
  UvProcessRunner& operator=(const UvProcessRunner&) = delete;

  // |done| runs exactly once, from a loop callback (never inside run()), after the process has
  // exited (or failed to start, or was killed on timeout) and every handle of the run is closed.
  // exit_code is the exit status, or -1 when the process was killed by a signal or never ran.
  void run(std::vector<std::string> argv, std::vector<std::string> env,
           std::chrono::milliseconds timeout, std::function<void(ProcessResult)> done) override;

  // Kills every running child's process group with SIGKILL and closes the handles; their
  // |done| callbacks are destroyed unrun. Later run() calls report spawn_failed (on the next
  // loop turn). The loop must run once more to free the handles. Safe to call twice.
  void close();

  size_t running() const { return jobs_.size(); }

 private:
  struct Job;
  friend struct Job;

  uv_loop_t* loop_;
  std::unordered_set<Job*> jobs_;
  bool closed_ = false;
};

}  // namespace miproxy::auth
