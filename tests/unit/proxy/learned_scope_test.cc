#include "proxy/learned_scope.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

using miproxy::proxy::LearnedScope;

namespace {

class NamedSlot : public miproxy::auth::TokenSlot {
 public:
  explicit NamedSlot(std::string scope) : scope_(std::move(scope)) {}
  std::shared_ptr<const miproxy::auth::AccessToken> current() const override { return nullptr; }
  void acquire(miproxy::Executor&, std::function<void(miproxy::auth::TokenResult)>) override {}
  void invalidate(const std::shared_ptr<const miproxy::auth::AccessToken>&,
                  const std::string&) override {}
  const std::string& identity_name() const override { return scope_; }
  const std::string& scope() const override { return scope_; }
  Status status() const override { return {}; }

 private:
  std::string scope_;
};

std::shared_ptr<miproxy::auth::TokenSlot> slot(const char* scope) {
  return std::make_shared<NamedSlot>(scope);
}

std::string scope_for(const LearnedScope& l, std::string_view host) {
  auto s = l.find(host);
  return s ? s->scope() : "<none>";
}

}  // namespace

TEST_CASE("learned scopes are per upstream host", "[learned_scope]") {
  LearnedScope l(8);
  CHECK(scope_for(l, "a.vault.azure.net") == "<none>");
  l.store("a.vault.azure.net", slot("https://vault.azure.net/.default"));
  l.store("b.example.com:8443", slot("https://b.example.com/.default"));
  CHECK(scope_for(l, "a.vault.azure.net") == "https://vault.azure.net/.default");
  CHECK(scope_for(l, "b.example.com:8443") == "https://b.example.com/.default");
  // Another host, even under the same route, has learned nothing.
  CHECK(scope_for(l, "c.vault.azure.net") == "<none>");
  CHECK(scope_for(l, "b.example.com") == "<none>");
  l.store("a.vault.azure.net", slot("https://other/.default"));
  CHECK(scope_for(l, "a.vault.azure.net") == "https://other/.default");
  CHECK(l.size() == 2);
}

TEST_CASE("the learned-scope cache forgets the least recently used host", "[learned_scope]") {
  LearnedScope l(2);
  l.store("one", slot("s1"));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  l.store("two", slot("s2"));
  // Use "one" (recency is kept to 100 ms, so wait past that).
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  CHECK(scope_for(l, "one") == "s1");
  l.store("three", slot("s3"));
  CHECK(l.size() == 2);
  CHECK(scope_for(l, "two") == "<none>");
  CHECK(scope_for(l, "one") == "s1");
  CHECK(scope_for(l, "three") == "s3");
  LearnedScope tiny(0);  // a limit below 1 still keeps one host
  tiny.store("x", slot("sx"));
  CHECK(scope_for(tiny, "x") == "sx");
}
