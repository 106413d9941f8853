#!/usr/bin/env bash
# Creates a throw-away CA and a server certificate for localhost, 127.0.0.1 and ::1 signed by
# it, with the same code the integration tests use (tests/integration/lib/pki.mjs):
#   scripts/gen-ca.sh [DIR]      (default DIR: .demo/pki)
# Writes DIR/ca.pem, DIR/ca.key, DIR/server.pem, DIR/server.key (valid 30 days). Keeps existing
# files while the server certificate is valid for at least another day. Local demos only.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-"$repo_root/.demo/pki"}
mkdir -p "$dir"
chmod 700 "$dir"

if [ -f "$dir/ca.pem" ] && [ -f "$dir/server.pem" ] && [ -f "$dir/server.key" ] \
  && openssl x509 -checkend 86400 -noout -in "$dir/server.pem" >/dev/null 2>&1; then
  exit 0
fi

node --input-type=module - "$repo_root/tests/integration/lib/pki.mjs" "$dir" <<'JS'
const [pkiModule, dir] = process.argv.slice(2);
const { makeCA, issueCert } = await import(pkiModule);
const ca = makeCA(dir, { cn: 'miproxy demo CA', days: 30 });
issueCert(ca, { dns: ['localhost'], ip: ['127.0.0.1', '::1'], name: 'server', days: 30 });
JS
