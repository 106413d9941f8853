#!/usr/bin/env bash
# Creates a throw-away CA and a server certificate for 127.0.0.1 and localhost, signed by it:
#   scripts/gen-ca.sh [DIR]      (default DIR: .demo/pki)
# Writes DIR/ca.pem, DIR/ca.key, DIR/server.pem, DIR/server.key. Keeps existing files while the
# server certificate is valid for at least another day. For local demos and tests only.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-"$repo_root/.demo/pki"}
mkdir -p "$dir"
chmod 700 "$dir"

if [ -f "$dir/ca.pem" ] && [ -f "$dir/server.pem" ] && [ -f "$dir/server.key" ] \
  && openssl x509 -checkend 86400 -noout -in "$dir/server.pem" >/dev/null 2>&1; then
  exit 0
fi

quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf 'gen-ca: failed: %s\n%s\n' "$*" "$out" >&2
    exit 1
  fi
}

quiet openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
quiet openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 30 -subj "/CN=miproxy demo CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$dir/ca.pem"
quiet openssl ecparam -name prime256v1 -genkey -noout -out "$dir/server.key"
quiet openssl req -new -key "$dir/server.key" -subj "/CN=localhost" -out "$dir/server.csr"
cat >"$dir/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
quiet openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -days 30 -sha256 -extfile "$dir/server.ext" -out "$dir/server.pem"
rm -f "$dir/server.csr" "$dir/server.ext" "$dir/ca.srl"
chmod 600 "$dir/ca.key" "$dir/server.key"
