#pragma once
// Prometheus metrics (interface.md "Logs and metrics"). Families and per-route children are
// created when a config snapshot is built (control thread); the request path only increments
// pre-resolved children, which are lock-free atomics in prometheus-cpp. Per-worker counters
// (WorkerStats) are summed into their families when /metrics is scraped.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <atomic>
#include <prometheus/metric_family.h>
#include <vector>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace miproxy::proxy {

// A histogram whose Observe() is a few relaxed atomic increments: no lock (prometheus-cpp 1.0's
// Histogram takes a mutex per observation, which every worker would share per route). The sum
// is kept in integer nanoseconds so it needs no compare-and-swap loop on a double.
class AtomicHistogram {
 public:
  explicit AtomicHistogram(const std::vector<double>* bounds);
  void observe(double seconds);
  prometheus::ClientMetric::Histogram snapshot() const;

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_->size() + 1 (the +Inf bucket)
  std::atomic<uint64_t> sum_ns_{0};
};

// A family of AtomicHistograms, one per route label, serialised next to the registry's.
class AtomicHistogramFamily {
 public:
  AtomicHistogramFamily(std::string name, std::string help, std::vector<double> bounds);
  // Control thread (or any, under the family's mutex); the child lives as long as the family.
  AtomicHistogram* add(const std::string& route);
  prometheus::MetricFamily collect() const;

 private:
  std::string name_, help_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, std::unique_ptr<AtomicHistogram>>> children_;
};

// Methods with their own label value; anything else counts as "OTHER".
inline constexpr std::array<std::string_view, 8> kMetricMethods = {
    "GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "OTHER"};

// Times a limit in config "limits" was hit, by limit name: the family
// miproxy_limit_hits_total{limit="..."}. Process-wide and usable from any thread; the first use
// of a name registers it (under a lock), so a hot path keeps the returned counter, which lives
// as long as the process.
std::atomic<uint64_t>& limit_hits(std::string_view limit);
inline void count_limit_hit(std::string_view limit) {
  limit_hits(limit).fetch_add(1, std::memory_order_relaxed);
}
// The current value of every registered limit counter (tests, serialisation).
std::vector<std::pair<std::string, uint64_t>> limit_hit_totals();

struct RouteMetrics {
  // [method index][status class 1xx..5xx]
  std::array<std::array<prometheus::Counter*, 5>, kMetricMethods.size()> requests{};
  AtomicHistogram* duration = nullptr;
  AtomicHistogram* upstream_duration = nullptr;

  void observe(std::string_view method, int status, double seconds, double upstream_seconds) const;
};

class Metrics {
 public:
  Metrics();

  // The children for route |name| (created once, reused across reloads). Any thread.
  std::shared_ptr<const RouteMetrics> route(const std::string& name);

  // Control thread.
  void token_acquisition(const std::string& identity, const std::string& source, bool ok,
                         double seconds);
  void token_expiry(const std::string& identity, const std::string& scope, double seconds);
  void config_reload(bool ok);
  // Sets the totals that workers keep (monotonic counters and gauges) just before a scrape.
  void set_worker_totals(uint64_t upstream_connects, uint64_t upstream_reused,
                         uint64_t upstream_open, uint64_t downstream_open);

  // Prometheus text exposition format.
  std::string serialize();
  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  AtomicHistogramFamily duration_;
  AtomicHistogramFamily upstream_duration_;
  prometheus::Family<prometheus::Counter>& token_acquisitions_;
  prometheus::Family<prometheus::Histogram>& token_latency_;
  prometheus::Family<prometheus::Gauge>& token_expiry_;
  prometheus::Family<prometheus::Counter>& reloads_;
  prometheus::Counter& upstream_connects_;
  prometheus::Counter& upstream_reused_;
  prometheus::Gauge& upstream_open_;
  prometheus::Gauge& downstream_open_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const RouteMetrics>> routes_;
  uint64_t seen_connects_ = 0;
  uint64_t seen_reused_ = 0;
};

}  // namespace miproxy::proxy
