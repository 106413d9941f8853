#include "base/guard.h"

#include <chrono>
#include <exception>
#include <string>

#include "base/log.h"

namespace miproxy::guard {
namespace {

std::atomic<uint64_t> g_caught{0};
// A client that can make a callback throw could otherwise fill the log: at most kBurst lines
// per second, the rest counted and named in the next line that is written.
constexpr int64_t kBurst = 10;
std::atomic<int64_t> g_window{0};
std::atomic<int64_t> g_in_window{0};
std::atomic<uint64_t> g_suppressed{0};

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

bool may_log() {
  int64_t now = now_seconds();
  int64_t window = g_window.load(std::memory_order_relaxed);
  if (window != now && g_window.compare_exchange_strong(window, now)) {
    g_in_window.store(0, std::memory_order_relaxed);
  }
  return g_in_window.fetch_add(1, std::memory_order_relaxed) < kBurst;
}

}  // namespace

void report_current(const char* where) noexcept {
  g_caught.fetch_add(1, std::memory_order_relaxed);
  try {
    if (!may_log()) {
      g_suppressed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    std::string what = "unknown exception";
    try {
      throw;
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    nlohmann::json fields = {{"where", where ? where : "?"}, {"what", what}};
    if (uint64_t n = g_suppressed.exchange(0, std::memory_order_relaxed)) {
      fields["suppressed"] = n;
    }
    log::error("internal error: exception caught in a callback; serving goes on",
               fields);
  } catch (...) {
    // Out of memory while logging: the count above is all we can do.
  }
}

uint64_t caught() noexcept { return g_caught.load(std::memory_order_relaxed); }

}  // namespace miproxy::guard
