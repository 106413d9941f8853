#include "base/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace miproxy::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::INFO)};

const char* level_name(Level l) {
  switch (l) {
    case Level::DEBUG: return "debug";
    case Level::INFO: return "info";
    case Level::WARN: return "warn";
    case Level::ERROR: return "error";
    case Level::OFF: return "off";
  }
  return "info";
}

void write_all(int fd, const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // Nothing sensible to do when the log sink is gone.
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// journald reads a "<N>" prefix on a stream line as its syslog priority; it is written only
// when stderr is that stream ($JOURNAL_STREAM is "device:inode" of stderr, systemd.exec(5)).
bool stderr_is_journal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  char tail = 0;
  if (std::sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) != 2) return false;
  struct stat st{};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return static_cast<unsigned long long>(st.st_dev) == dev &&
         static_cast<unsigned long long>(st.st_ino) == ino;
}

const char* journal_prefix(Level l) {
  static const bool journal = stderr_is_journal();
  if (!journal) return "";
  switch (l) {
    case Level::DEBUG: return "<7>";
    case Level::INFO: return "<6>";
    case Level::WARN: return "<4>";
    case Level::ERROR: return "<3>";
    case Level::OFF: return "";
  }
  return "";
}

}  // namespace

bool parse_level(std::string_view text, Level* out) {
  static constexpr std::pair<std::string_view, Level> kLevels[] = {
      {"debug", Level::DEBUG}, {"info", Level::INFO}, {"warn", Level::WARN},
      {"error", Level::ERROR}, {"off", Level::OFF}};
  for (const auto& [name, l] : kLevels) {
    if (name == text) {
      *out = l;
      return true;
    }
  }
  return false;
}

void set_level(Level l) { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }
Level level() { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  std::time_t secs = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

void write(Level l, std::string_view msg, const nlohmann::json& fields) {
  nlohmann::json line = nlohmann::json::object();
  line["time"] = now_rfc3339();
  line["level"] = level_name(l);
  line["msg"] = msg;
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) line[it.key()] = it.value();
  }
  std::string text = journal_prefix(l);
  text += line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  write_all(STDERR_FILENO, text);
}

void access(const nlohmann::json& record) {
  access_line(record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

void access_line(std::string line) {
  line.push_back('\n');
  write_all(STDOUT_FILENO, line);
}

}  // namespace miproxy::log
