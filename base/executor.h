#pragma once
// A place to run work later: each event-loop thread (worker or control) exposes one. post() is
// callable from any thread; the task runs on the executor's own thread, in post order, never
// inside the post() call itself.

#include <functional>

namespace miproxy {

class Executor {
 public:
  virtual ~Executor() = default;
  virtual void post(std::function<void()> task) = 0;
};

}  // namespace miproxy
