// Token-source response parsers, driven through make_source() with the unit tests' fakes, so
// each source's own parsing and error shaping runs on the bytes (token-sources.md): IMDS, App
// Service (2019 and 2017), Arc (401 challenge, then the token), Service Fabric, Cloud Shell,
// Entra (workload identity, client secret), the Azure CLI's output and a token file.
//
// Input: first byte picks the source; the rest is up to three replies separated by "\n====\n".
// A reply is a first line with the status (CLI: exit code), header lines "Name: value" up to an
// empty line, then the body (CLI: stdout; token file: the file's contents).

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "auth/expiry.h"
#include "tests/unit/auth/fakes.h"

using namespace miproxy;
using namespace miproxy::auth;
using namespace miproxy::auth::testing;

namespace {

constexpr char kDir[] = "/tmp/miproxy-fuzz-sources";  // fixed: seeds name the Arc key path

struct Reply {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

Reply parse_reply(std::string_view text) {
  Reply r;
  size_t eol = text.find('\n');
  std::string_view first = text.substr(0, eol);
  r.status = std::atoi(std::string(first.substr(0, 4)).c_str());
  size_t pos = eol == std::string_view::npos ? text.size() : eol + 1;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) break;
    size_t colon = line.find(':');
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    r.headers.emplace_back(std::string(line.substr(0, colon)), std::string(value));
  }
  if (pos < text.size()) r.body = std::string(text.substr(pos));
  return r;
}

void write_file(const std::string& path, std::string_view contents, mode_t mode) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << contents;
  ::chmod(path.c_str(), mode);
}

void setup_once() {
  static bool done = false;
  if (done) return;
  done = true;
  ::mkdir(kDir, 0700);
  ::mkdir((std::string(kDir) + "/arc").c_str(), 0700);
  write_file(std::string(kDir) + "/arc/fuzz.key", "arc-secret-key", 0600);
  write_file(std::string(kDir) + "/federated", "federated-assertion", 0600);
  write_file(std::string(kDir) + "/secret", "client-secret", 0600);
  write_file(std::string(kDir) + "/az", "#!/bin/sh\nexit 0\n", 0755);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  setup_once();
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<Reply> replies;
  size_t pos = 0;
  while (replies.size() < 3) {
    size_t sep = input.find("\n====\n", pos);
    replies.push_back(parse_reply(input.substr(pos, sep == std::string_view::npos ? sep : sep - pos)));
    if (sep == std::string_view::npos) break;
    pos = sep + 6;
  }

  Harness h;
  config::Identity id;
  id.name = "fuzz";
  SourceDeps deps = h.deps();
  deps.arc_key_directory = std::string(kDir) + "/arc";
  deps.az_search_path = {kDir};
  std::string token_file = std::string(kDir) + "/token." + std::to_string(::getpid());
  switch (data[0] % 10) {
    case 0:
      break;  // IMDS
    case 1:
      h.env["IDENTITY_ENDPOINT"] = "http://127.0.0.1:41234/msi/token";
      h.env["IDENTITY_HEADER"] = "app-service-header";
      break;
    case 2:
      h.env["MSI_ENDPOINT"] = "http://127.0.0.1:41235/MSI/token/";
      h.env["MSI_SECRET"] = "legacy-secret";
      break;
    case 3:
      h.env["IDENTITY_ENDPOINT"] = "http://localhost:40342/metadata/identity/oauth2/token";
      h.env["IMDS_ENDPOINT"] = "http://localhost:40342";
      break;
    case 4:
      h.env["IDENTITY_ENDPOINT"] = "https://localhost:2377/metadata/identity/oauth2/token";
      h.env["IDENTITY_HEADER"] = "sf-secret";
      h.env["IDENTITY_SERVER_THUMBPRINT"] = "0123456789ABCDEF0123456789ABCDEF01234567";
      break;
    case 5:
      h.env["MSI_ENDPOINT"] = "http://localhost:50342/oauth2/token";
      break;
    case 6:
      id.type = config::Identity::Type::WORKLOAD_IDENTITY;
      h.env["AZURE_TENANT_ID"] = "72f988bf-86f1-41af-91ab-2d7cd011db47";
      h.env["AZURE_CLIENT_ID"] = "11111111-2222-3333-4444-555555555555";
      h.env["AZURE_FEDERATED_TOKEN_FILE"] = std::string(kDir) + "/federated";
      break;
    case 7:
      id.type = config::Identity::Type::CLIENT_SECRET;
      id.tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47";
      id.client_id = "11111111-2222-3333-4444-555555555555";
      id.secret_file = std::string(kDir) + "/secret";
      break;
    case 8:
      id.type = config::Identity::Type::AZURE_CLI;
      h.env["PATH"] = "/usr/bin:/bin";
      h.env["HOME"] = "/nonexistent";
      break;
    default:
      id.type = config::Identity::Type::TOKEN_FILE;
      id.path = token_file;
      write_file(token_file, replies[0].body, 0600);
      break;
  }
  for (const Reply& r : replies) {
    h.fetcher.reply(r.status, r.body, r.headers);
    ProcessResult p;
    p.exit_code = r.status;
    p.out = r.body;
    p.err = r.headers.empty() ? "" : r.headers.front().second;
    h.processes.results.push_back(p);
  }
  auto source = make_source(id, deps);
  if (!source) std::abort();  // the settings above are all valid
  for (const char* scope : {"https://vault.azure.net/.default", "https://storage.azure.com/.default"}) {
    auto out = fetch_once(h, **source, scope, "{\"access_token\":{\"nbf\":{\"essential\":true}}}");
    if (out.calls != 1 || out.calls_inside_fetch != 0) std::abort();
  }
  // The date and Retry-After parsers on the first reply's body, as text.
  (void)parse_date_text(replies[0].body);
  (void)parse_retry_after(replies[0].body, h.now);
  (void)parse_cli_local_time(replies[0].body);
  (void)parse_decimal(replies[0].body);
  ::unlink(token_file.c_str());
  return 0;
}
