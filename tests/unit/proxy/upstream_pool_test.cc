#include "proxy/upstream_pool.h"

#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "proxy/metrics.h"

using namespace miproxy::proxy;

namespace {

// A parked upstream connection as the pool sees it: records what the pool does to it.
class FakeTransport : public Transport {
 public:
  void set_handler(Handler* h) override { handler = h; }
  void read_start() override { reading = true; }
  void read_stop() override { reading = false; }
  void write(const uv_buf_t*, size_t) override {}
  size_t write_queue_bytes() const override { return 0; }
  void close() override { closed = true; handler = nullptr; }
  bool is_closing() const override { return closed; }
  int fd() const override { return -1; }
  Handler* handler = nullptr;
  bool reading = false;
  bool closed = false;
};

struct PoolFixture {
  uv_loop_t loop;
  std::atomic<uint64_t> open{0};
  std::unique_ptr<UpstreamPool> pool;
  std::vector<std::unique_ptr<FakeTransport>> transports;
  PoolFixture() {
    uv_loop_init(&loop);
    pool = std::make_unique<UpstreamPool>(&loop, &open);
  }
  ~PoolFixture() {
    pool.reset();
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_loop_close(&loop);
  }
  FakeTransport* park(const std::string& key) {
    transports.push_back(std::make_unique<FakeTransport>());
    open.fetch_add(1);
    pool->checkin(key, transports.back().get(), 60);
    return transports.back().get();
  }
};

}  // namespace

TEST_CASE("the upstream pool keeps at most max_hosts hosts, closing the least recently used",
          "[pool][limits]") {
  PoolFixture f;
  f.pool->set_max_hosts(2);
  uint64_t hits = limit_hits("max_pool_hosts").load();
  FakeTransport* a1 = f.park("a:443|");
  FakeTransport* a2 = f.park("a:443|");
  FakeTransport* b1 = f.park("b:443|");
  CHECK(f.pool->host_count() == 2);
  CHECK(f.pool->idle_count() == 3);
  // Using a makes b the least recently used.
  CHECK(f.pool->checkout("a:443|") == a2);
  f.pool->checkin("a:443|", a2, 60);
  FakeTransport* c1 = f.park("c:443|");
  CHECK(f.pool->host_count() == 2);
  CHECK(b1->closed);
  CHECK_FALSE(a1->closed);
  CHECK_FALSE(c1->closed);
  CHECK(f.pool->checkout("b:443|") == nullptr);
  CHECK(limit_hits("max_pool_hosts").load() == hits + 1);
  CHECK(f.open.load() == 3);  // the open-connections gauge follows the closes
}

TEST_CASE("a host whose last idle connection leaves the pool is forgotten", "[pool][limits]") {
  PoolFixture f;
  for (int i = 0; i < 1000; ++i) {
    std::string key = "host" + std::to_string(i) + ":443|";
    FakeTransport* t = f.park(key);
    if (i % 2 == 0) {
      CHECK(f.pool->checkout(key) == t);  // taken for a request
    } else {
      t->handler->on_eof();  // the server closed it while parked
      CHECK(t->closed);
    }
  }
  CHECK(f.pool->host_count() == 0);
  CHECK(f.pool->idle_count() == 0);
}

TEST_CASE("with the default bound a thousand hosts leave the pool at max_hosts",
          "[pool][limits]") {
  PoolFixture f;
  for (int i = 0; i < 1000; ++i) f.park("host" + std::to_string(i) + ":443|");
  CHECK(f.pool->host_count() == UpstreamPool::kDefaultMaxHosts);
  CHECK(f.pool->idle_count() == UpstreamPool::kDefaultMaxHosts);
  CHECK(f.pool->checkout("host999:443|") != nullptr);
  CHECK(f.pool->checkout("host0:443|") == nullptr);
}
