#include "auth/process.h"

#include <signal.h>

#include <algorithm>
#include <cstring>

#include "base/guard.h"

namespace miproxy::auth {

// One child process. Four handles (process, stdout pipe, stderr pipe, timer); the job is deleted
// by the last close callback, and |done| runs just before that, so it always runs from a loop
// callback and after every handle is closed.
struct UvProcessRunner::Job {
  UvProcessRunner* runner = nullptr;  // null once the runner closed or the job finished
  uv_process_t process;
  uv_pipe_t out_pipe;
  uv_pipe_t err_pipe;
  uv_timer_t timer;
  ProcessResult result;
  std::function<void(ProcessResult)> done;
  bool spawned = false;
  bool exited = false;
  bool out_open = false;  // still reading
  bool err_open = false;
  bool closing = false;
  bool process_inited = false;
  int handles_open = 0;

  static Job* of(uv_handle_t* h) { return static_cast<Job*>(h->data); }

  void init_handles(uv_loop_t* loop) {
    uv_pipe_init(loop, &out_pipe, 0);
    uv_pipe_init(loop, &err_pipe, 0);
    uv_timer_init(loop, &timer);
    out_pipe.data = this;
    err_pipe.data = this;
    timer.data = this;
    process.data = this;
    handles_open = 3;  // the process handle counts once uv_spawn is called
  }

  // Called after every event: finishes once the process exited and both pipes reached EOF (or
  // were abandoned on timeout).
  void maybe_finish() {
    if (closing || !exited || out_open || err_open) {
      return;
    }
    close_all();
  }

  void close_pipe(uv_pipe_t* pipe, bool* open) {
    if (*open) {
      *open = false;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(pipe));
    }
  }

  void close_all() {
    closing = true;
    if (runner != nullptr) {
      runner->jobs_.erase(this);
      runner = nullptr;
    }
    close_pipe(&out_pipe, &out_open);
    close_pipe(&err_pipe, &err_open);
    uv_timer_stop(&timer);
    auto on_closed = [](uv_handle_t* h) {
      Job* job = of(h);
      if (--job->handles_open == 0) {
        auto done = std::move(job->done);
        ProcessResult result = std::move(job->result);
        delete job;
        if (done) {
          guard::run("process: result", [&] { done(std::move(result)); });
        }
      }
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&out_pipe), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&err_pipe), on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), on_closed);
    if (process_inited) {
      uv_close(reinterpret_cast<uv_handle_t*>(&process), on_closed);
    }
  }

  void kill_group() {
    if (spawned && !exited) {
      // The child called setsid() (UV_PROCESS_DETACHED), so its pid is its process group id.
      if (::kill(-process.pid, SIGKILL) != 0) {
        uv_process_kill(&process, SIGKILL);
      }
    }
  }

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
    static thread_local char scratch[64 * 1024];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(scratch, sizeof(scratch));
  }

  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    Job* job = of(reinterpret_cast<uv_handle_t*>(stream));
    bool is_out = stream == reinterpret_cast<uv_stream_t*>(&job->out_pipe);
    if (nread > 0) {
      std::string& sink = is_out ? job->result.out : job->result.err;
      size_t room = kProcessOutputLimit - std::min(sink.size(), kProcessOutputLimit);
      // Out of memory loses output (the parse then fails), never the process.
      guard::run("process: output", [&] {
        sink.append(buf->base, std::min(static_cast<size_t>(nread), room));
      });
      return;
    }
    if (nread < 0) {  // UV_EOF or a read error: either way this pipe is done
      job->close_pipe(is_out ? &job->out_pipe : &job->err_pipe,
                      is_out ? &job->out_open : &job->err_open);
      job->maybe_finish();
    }
  }

  static void on_exit(uv_process_t* process, int64_t exit_status, int term_signal) {
    Job* job = of(reinterpret_cast<uv_handle_t*>(process));
    job->exited = true;
    job->result.exit_code = term_signal == 0 ? static_cast<int>(exit_status) : -1;
    job->maybe_finish();
  }

  static void on_timeout(uv_timer_t* timer) {
    Job* job = of(reinterpret_cast<uv_handle_t*>(timer));
    job->result.timed_out = true;
    job->kill_group();
    // Output is abandoned: a grandchild outside the group could hold the pipes open forever.
    job->close_pipe(&job->out_pipe, &job->out_open);
    job->close_pipe(&job->err_pipe, &job->err_open);
    job->maybe_finish();
  }
};

UvProcessRunner::UvProcessRunner(uv_loop_t* loop) : loop_(loop) {}

UvProcessRunner::~UvProcessRunner() { close(); }

void UvProcessRunner::run(std::vector<std::string> argv, std::vector<std::string> env,
                          std::chrono::milliseconds timeout,
                          std::function<void(ProcessResult)> done) {
  auto* job = new Job;
  job->done = std::move(done);
  job->init_handles(loop_);

  std::vector<char*> args;
  for (auto& a : argv) {
    args.push_back(a.data());
  }
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (auto& e : env) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);

  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;  // /dev/null
  stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&job->out_pipe);
  stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[2].data.stream = reinterpret_cast<uv_stream_t*>(&job->err_pipe);

  uv_process_options_t options;
  std::memset(&options, 0, sizeof(options));
  options.exit_cb = &Job::on_exit;
  options.file = argv.empty() ? "" : argv[0].c_str();
  options.args = args.data();
  options.env = envp.data();
  options.stdio_count = 3;
  options.stdio = stdio;
  options.flags = UV_PROCESS_DETACHED;

  int rc = UV_EINVAL;
  if (!closed_ && !argv.empty() && !argv[0].empty()) {
    // uv_spawn initialises the process handle even when it fails, so from here on it must be
    // closed like the others.
    job->process_inited = true;
    job->handles_open = 4;
    rc = uv_spawn(loop_, &job->process, &options);
  }
  if (rc != 0) {
    job->process.data = job;
    job->result.spawn_failed = true;
    job->result.err =
        std::string("cannot start ") + (argv.empty() ? "" : argv[0]) + ": " + uv_strerror(rc);
    job->exited = true;
    job->close_all();
    return;
  }
  job->spawned = true;
  job->process.data = job;
  job->runner = this;
  jobs_.insert(job);
  job->out_open = true;
  job->err_open = true;
  uv_read_start(reinterpret_cast<uv_stream_t*>(&job->out_pipe), &Job::on_alloc, &Job::on_read);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&job->err_pipe), &Job::on_alloc, &Job::on_read);
  uint64_t ms = timeout.count() > 0 ? static_cast<uint64_t>(timeout.count()) : 0;
  uv_timer_start(&job->timer, &Job::on_timeout, ms, 0);
}

void UvProcessRunner::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  auto jobs = std::move(jobs_);
  jobs_.clear();
  for (Job* job : jobs) {
    job->runner = nullptr;
    job->done = nullptr;
    job->kill_group();
    job->close_all();
  }
}

}  // namespace miproxy::auth
