// describe(): the resolved configuration as `miproxy check` prints it. Plain text, one fact per
// line, defaults spelled out so the operator sees what will actually happen. No secrets exist in
// a Config (only file paths), so everything here may be printed.

#include <cstdio>
#include <sstream>

#include "config/config.h"

namespace miproxy::config {

namespace {

std::string seconds(double s) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%gs", s);
  return buffer;
}

std::string octal(mode_t mode) {
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "%04o", static_cast<unsigned>(mode));
  return buffer;
}

std::string identity_detail(const Identity& id) {
  std::string out;
  auto add = [&](const char* key, const std::string& value) {
    if (!value.empty()) {
      out += std::string(out.empty() ? "" : ", ") + key + " " + value;
    }
  };
  switch (id.type) {
    case Identity::Type::MANAGED_IDENTITY:
      add("source", id.source.empty() ? "auto-detect" : id.source);
      add("endpoint", id.endpoint);
      add("client_id", id.client_id);
      add("object_id", id.object_id);
      add("resource_id", id.resource_id);
      if (id.client_id.empty() && id.object_id.empty() && id.resource_id.empty()) {
        add("assigned", "system");
      }
      break;
    case Identity::Type::WORKLOAD_IDENTITY:
      add("client_id", id.client_id.empty() ? "$AZURE_CLIENT_ID" : id.client_id);
      add("tenant_id", id.tenant_id.empty() ? "$AZURE_TENANT_ID" : id.tenant_id);
      add("federated_token_file", id.federated_token_file.empty() ? "$AZURE_FEDERATED_TOKEN_FILE"
                                                                  : id.federated_token_file);
      add("authority_host", id.authority_host);
      break;
    case Identity::Type::CLIENT_SECRET:
      add("tenant_id", id.tenant_id);
      add("client_id", id.client_id);
      add("secret_file", id.secret_file);
      add("authority_host", id.authority_host);
      break;
    case Identity::Type::CLIENT_CERTIFICATE:
      add("tenant_id", id.tenant_id);
      add("client_id", id.client_id);
      add("certificate_file", id.certificate_file);
      if (id.send_certificate_chain) {
        add("send_certificate_chain", "yes");
      }
      add("authority_host", id.authority_host);
      break;
    case Identity::Type::AZURE_CLI:
      add("tenant_id", id.tenant_id);
      break;
    case Identity::Type::DEFAULT:
      add("client_id", id.client_id);
      add("tenant_id", id.tenant_id);
      add("authority_host", id.authority_host);
      break;
    case Identity::Type::TOKEN_FILE:
      add("path", id.path);
      break;
  }
  return out;
}

}  // namespace

std::string describe(const Config& config) {
  std::ostringstream out;
  if (!config.source_path.empty()) {
    out << "config: " << config.source_path << "\n";
  }
  out << "listeners:\n";
  for (const auto& l : config.listeners) {
    if (l.kind == Listener::Kind::TCP) {
      out << "  tcp  " << l.address;
      if (l.allow_remote) {
        out << "  (allow_remote)";
      }
    } else {
      out << "  unix " << l.unix_path << "  mode " << octal(l.mode);
      if (!l.allowed_uids.empty()) {
        out << "  allowed_uids";
        for (auto uid : l.allowed_uids) {
          out << " " << uid;
        }
      }
    }
    out << "\n";
  }
  if (config.admin.enabled) {
    out << "admin: " << config.admin.address << "  allow_quit "
        << (config.admin.allow_quit ? "yes" : "no") << "\n";
  } else {
    out << "admin: off\n";
  }
  out << "workers: " << (config.workers == 0 ? std::string("auto") : std::to_string(config.workers))
      << "\n";
  out << "shutdown_grace: " << seconds(config.shutdown_grace) << "\n";
  out << "tls: ca_file " << (config.tls.ca_file.empty() ? "(system store)" : config.tls.ca_file)
      << ", min_version " << (config.tls.min_version == 0x0304 ? "1.3" : "1.2") << "\n";
  out << "identities:\n";
  for (const auto& [name, id] : config.identities) {
    out << "  " << name << ": " << to_string(id.type);
    std::string detail = identity_detail(id);
    if (!detail.empty()) {
      out << " (" << detail << ")";
    }
    out << "\n";
  }
  out << "routes (first match wins):\n";
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const Route& r = config.routes[i];
    out << "  [" << i << "] " << r.name << "\n";
    out << "      match:    host " << (r.match_host.empty() ? "*" : r.match_host)
        << ", path prefix " << (r.path_prefix.empty() ? "(any)" : r.path_prefix) << ", methods ";
    if (r.methods.empty()) {
      out << "(any)";
    } else {
      for (size_t m = 0; m < r.methods.size(); ++m) {
        out << (m ? " " : "") << r.methods[m];
      }
    }
    out << "\n";
    out << "      upstream: " << r.upstream << "\n";
    auto id = config.identities.find(r.identity);
    out << "      identity: " << r.identity << " ("
        << (id == config.identities.end() ? "undefined" : to_string(id->second.type)) << ")\n";
    out << "      scope:    " << r.scope
        << (r.scope == "auto" ? " (learned from the upstream's challenge)" : "") << "\n";
    out << "      strip_prefix: " << (r.strip_prefix ? "yes" : "no") << ", inbound_authorization: "
        << (r.inbound_authorization == Route::InboundAuthorization::REJECT ? "reject" : "replace")
        << "\n";
    if (!r.headers.set.empty() || !r.headers.remove.empty()) {
      out << "      headers:";
      for (const auto& [name, value] : r.headers.set) {
        out << " set " << name;
      }
      for (const auto& name : r.headers.remove) {
        out << " remove " << name;
      }
      out << "\n";
    }
    if (!r.tls_ca_file.empty()) {
      out << "      tls ca_file: " << r.tls_ca_file << "\n";
    }
    out << "      timeouts: connect " << seconds(r.timeouts.connect) << ", idle "
        << seconds(r.timeouts.idle) << ", response " << seconds(r.timeouts.response) << "\n";
  }
  return out.str();
}

}  // namespace miproxy::config
