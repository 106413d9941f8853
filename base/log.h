#pragma once
// Structured logging: one JSON object per line, written with a single write(2) so lines from
// different threads never interleave. Callers check enabled() before building fields, so a
// disabled level costs one relaxed load.
//
// Secrets never go through here: callers pass only redacted values (see auth::redact and the
// access-log query redaction in proxy/).

#include <atomic>
#include <initializer_list>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace miproxy::log {

enum class Level { DEBUG = 0, INFO = 1, WARN = 2, ERROR = 3, OFF = 4 };

// Parses "debug", "info", "warn", "error", "off". Returns false for anything else.
bool parse_level(std::string_view text, Level* out);
void set_level(Level level);
Level level();
inline bool enabled(Level l) { return l >= level(); }

// Writes {"time":..., "level":..., "msg": |msg|, ...|fields|} to stderr (diagnostics).
void write(Level level, std::string_view msg, const nlohmann::json& fields = nlohmann::json::object());
// Writes |record| (already a JSON object) as one line to stdout: the access log.
void access(const nlohmann::json& record);
// Same, for a line already serialised without its trailing newline (hot path).
void access_line(std::string line);

inline void debug(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  if (enabled(Level::DEBUG)) write(Level::DEBUG, m, f);
}
inline void info(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  if (enabled(Level::INFO)) write(Level::INFO, m, f);
}
inline void warn(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  if (enabled(Level::WARN)) write(Level::WARN, m, f);
}
inline void error(std::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  if (enabled(Level::ERROR)) write(Level::ERROR, m, f);
}

// RFC 3339 UTC time with milliseconds, e.g. 2026-01-01T12:00:00.123Z.
std::string now_rfc3339();

}  // namespace miproxy::log
