#include "proxy/metrics.h"

#include <prometheus/text_serializer.h>

#include <limits>
#include <sstream>

namespace miproxy::proxy {
namespace {

const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

size_t method_index(std::string_view method) {
  for (size_t i = 0; i + 1 < kMetricMethods.size(); ++i) {
    if (kMetricMethods[i] == method) return i;
  }
  return kMetricMethods.size() - 1;
}

struct LimitRegistry {
  std::mutex mu;
  // Map nodes never move, so a counter handed out stays valid.
  std::map<std::string, std::atomic<uint64_t>, std::less<>> counters;
};

LimitRegistry& limit_registry() {
  static LimitRegistry* r = new LimitRegistry;  // never destroyed: workers may outlive main
  return *r;
}

}  // namespace

std::atomic<uint64_t>& limit_hits(std::string_view limit) {
  auto& r = limit_registry();
  std::lock_guard lock(r.mu);
  auto it = r.counters.find(limit);
  if (it == r.counters.end()) it = r.counters.try_emplace(std::string(limit), 0).first;
  return it->second;
}

std::vector<std::pair<std::string, uint64_t>> limit_hit_totals() {
  auto& r = limit_registry();
  std::lock_guard lock(r.mu);
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& [name, n] : r.counters) out.emplace_back(name, n.load(std::memory_order_relaxed));
  return out;
}

AtomicHistogram::AtomicHistogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void AtomicHistogram::observe(double seconds) {
  size_t i = 0;
  while (i < bounds_->size() && seconds > (*bounds_)[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(static_cast<uint64_t>(seconds * 1e9), std::memory_order_relaxed);
}

prometheus::ClientMetric::Histogram AtomicHistogram::snapshot() const {
  prometheus::ClientMetric::Histogram h;
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    prometheus::ClientMetric::Bucket b;
    b.cumulative_count = cumulative;
    b.upper_bound = i < bounds_->size() ? (*bounds_)[i] : std::numeric_limits<double>::infinity();
    h.bucket.push_back(b);
  }
  h.sample_count = cumulative;
  h.sample_sum = static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return h;
}

AtomicHistogramFamily::AtomicHistogramFamily(std::string name, std::string help,
                                             std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), bounds_(std::move(bounds)) {}

AtomicHistogram* AtomicHistogramFamily::add(const std::string& route) {
  std::lock_guard lock(mu_);
  for (auto& [r, h] : children_) {
    if (r == route) return h.get();
  }
  children_.emplace_back(route, std::make_unique<AtomicHistogram>(&bounds_));
  return children_.back().second.get();
}

prometheus::MetricFamily AtomicHistogramFamily::collect() const {
  prometheus::MetricFamily f;
  f.name = name_;
  f.help = help_;
  f.type = prometheus::MetricType::Histogram;
  std::lock_guard lock(mu_);
  for (const auto& [route, h] : children_) {
    prometheus::ClientMetric m;
    m.label.push_back({"route", route});
    m.histogram = h->snapshot();
    f.metric.push_back(std::move(m));
  }
  return f;
}

void RouteMetrics::observe(std::string_view method, int status, double seconds,
                           double upstream_seconds) const {
  int cls = status / 100;
  if (cls < 1 || cls > 5) cls = 5;
  requests[method_index(method)][static_cast<size_t>(cls - 1)]->Increment();
  duration->observe(seconds);
  if (upstream_seconds > 0) upstream_duration->observe(upstream_seconds);
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("miproxy_requests_total")
                    .Help("Requests answered, by route, method and status class.")
                    .Register(*registry_)),
      duration_("miproxy_request_duration_seconds",
                "Time from the request head to the end of the response, by route.",
                kLatencyBuckets),
      upstream_duration_("miproxy_upstream_duration_seconds",
                         "Time from the request head sent upstream to the first response "
                         "byte, by route.",
                         kLatencyBuckets),
      token_acquisitions_(prometheus::BuildCounter()
                              .Name("miproxy_token_acquisitions_total")
                              .Help("Token endpoint attempts, by identity, source and result.")
                              .Register(*registry_)),
      token_latency_(prometheus::BuildHistogram()
                         .Name("miproxy_token_acquisition_duration_seconds")
                         .Help("Latency of token endpoint attempts, by identity.")
                         .Register(*registry_)),
      token_expiry_(prometheus::BuildGauge()
                        .Name("miproxy_token_expiry_seconds")
                        .Help("Seconds until the cached token of each identity and scope "
                              "expires (0 when none is cached).")
                        .Register(*registry_)),
      reloads_(prometheus::BuildCounter()
                   .Name("miproxy_config_reloads_total")
                   .Help("Configuration reloads, by result.")
                   .Register(*registry_)),
      upstream_connects_(prometheus::BuildCounter()
                             .Name("miproxy_upstream_connections_opened_total")
                             .Help("Upstream connections opened (TCP + TLS handshake).")
                             .Register(*registry_)
                             .Add({})),
      upstream_reused_(prometheus::BuildCounter()
                           .Name("miproxy_upstream_connections_reused_total")
                           .Help("Requests sent on a pooled keep-alive upstream connection.")
                           .Register(*registry_)
                           .Add({})),
      upstream_open_(prometheus::BuildGauge()
                         .Name("miproxy_upstream_connections_open")
                         .Help("Upstream connections open now (busy and idle).")
                         .Register(*registry_)
                         .Add({})),
      downstream_open_(prometheus::BuildGauge()
                           .Name("miproxy_downstream_connections_open")
                           .Help("Client connections open now.")
                           .Register(*registry_)
                           .Add({})) {
  reloads_.Add({{"result", "success"}});
  reloads_.Add({{"result", "failure"}});
  // The limits miproxy enforces show up at 0 before the first hit.
  for (std::string_view l : {"max_connections", "file_descriptors", "max_queued_response_bytes",
                             "max_pool_hosts", "max_tls_sessions", "max_learned_scopes",
                             "max_response_header_bytes", "response_head_timeout",
                             "token_request_timeout", "token_wait_timeout",
                             "body_stall_timeout", "lingering_timeout"}) {
    limit_hits(l);
  }
}

std::shared_ptr<const RouteMetrics> Metrics::route(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = routes_.find(name);
  if (it != routes_.end()) return it->second;
  auto m = std::make_shared<RouteMetrics>();
  static constexpr std::string_view kClasses[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
  for (size_t i = 0; i < kMetricMethods.size(); ++i) {
    for (size_t c = 0; c < 5; ++c) {
      m->requests[i][c] = &requests_.Add({{"route", name},
                                          {"method", std::string(kMetricMethods[i])},
                                          {"status_class", std::string(kClasses[c])}});
    }
  }
  m->duration = duration_.add(name);
  m->upstream_duration = upstream_duration_.add(name);
  routes_[name] = m;
  return m;
}

void Metrics::token_acquisition(const std::string& identity, const std::string& source, bool ok,
                                double seconds) {
  token_acquisitions_
      .Add({{"identity", identity}, {"source", source}, {"result", ok ? "success" : "failure"}})
      .Increment();
  token_latency_.Add({{"identity", identity}}, kLatencyBuckets).Observe(seconds);
}

void Metrics::token_expiry(const std::string& identity, const std::string& scope,
                           double seconds) {
  token_expiry_.Add({{"identity", identity}, {"scope", scope}}).Set(seconds);
}

void Metrics::config_reload(bool ok) {
  reloads_.Add({{"result", ok ? "success" : "failure"}}).Increment();
}

void Metrics::set_worker_totals(uint64_t connects, uint64_t reused, uint64_t upstream_open,
                                uint64_t downstream_open) {
  std::lock_guard lock(mu_);
  if (connects > seen_connects_) {
    upstream_connects_.Increment(static_cast<double>(connects - seen_connects_));
    seen_connects_ = connects;
  }
  if (reused > seen_reused_) {
    upstream_reused_.Increment(static_cast<double>(reused - seen_reused_));
    seen_reused_ = reused;
  }
  upstream_open_.Set(static_cast<double>(upstream_open));
  downstream_open_.Set(static_cast<double>(downstream_open));
}

std::string Metrics::serialize() {
  std::ostringstream out;
  auto families = registry_->Collect();
  families.push_back(duration_.collect());
  families.push_back(upstream_duration_.collect());
  prometheus::MetricFamily limits;
  limits.name = "miproxy_limit_hits_total";
  limits.help = "Times a configured limit was hit (a connection refused or paused, an entry "
                "evicted), by limit.";
  limits.type = prometheus::MetricType::Counter;
  for (const auto& [name, n] : limit_hit_totals()) {
    prometheus::ClientMetric m;
    m.label.push_back({"limit", name});
    m.counter.value = static_cast<double>(n);
    limits.metric.push_back(std::move(m));
  }
  families.push_back(std::move(limits));
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace miproxy::proxy
