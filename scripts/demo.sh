#!/usr/bin/env bash
# The demo stack, all on loopback: the Azure Storage emulator (Azurite) over HTTPS with OAuth
# enforced, and miproxy in front of it, so that plain curl without any credentials can create
# containers and upload, download and list blobs. Runs in the foreground until Ctrl-C, then stops
# every process it started (by PID) and exits.
#
# Environment:
#   MIPROXY_BIN               miproxy binary (default: build/miproxy)
#   MIPROXY_DEMO_IDENTITY     imds (default): miproxy asks a local IMDS-compatible endpoint
#                             (tests/tools/dev-imds.mjs) as a managed identity would on a VM
#                             token_file: miproxy reads a bearer token from a file
#   MIPROXY_DEMO_PORT         proxy listener port (default 8080, or a free one if taken)
#   MIPROXY_DEMO_ADMIN_PORT   admin listener port (default 9464, or a free one if taken)
#   MIPROXY_DEMO_DIR          where generated files go (default .demo/, git-ignored): CA and
#                             certificates, token, miproxy.json, Azurite's data, logs
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo_dir=${MIPROXY_DEMO_DIR:-"$repo_root/.demo"}
it_dir="$repo_root/tests/integration"
miproxy_bin=${MIPROXY_BIN:-"$repo_root/build/miproxy"}
identity_kind=${MIPROXY_DEMO_IDENTITY:-imds}
azurite_main="$it_dir/node_modules/azurite/dist/src/blob/main.js"

die() { echo "demo: $*" >&2; exit 1; }

[ -x "$miproxy_bin" ] || die "no miproxy binary at $miproxy_bin (run scripts/build.sh)"
[ -f "$azurite_main" ] || die "Azurite is not installed (run scripts/install-deps.sh)"
case "$identity_kind" in
  token_file|imds) ;;
  *) die "MIPROXY_DEMO_IDENTITY must be token_file or imds, not '$identity_kind'" ;;
esac

pids=()
cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
pick_port() {
  if port_in_use "$1"; then free_port; else echo "$1"; fi
}
# wait_for_log FILE REGEX PID: prints the first capture group of REGEX once FILE has it.
wait_for_log() {
  local i
  for i in $(seq 1 600); do
    if grep -qE "$2" "$1" 2>/dev/null; then
      grep -oE "$2" "$1" | head -n 1
      return 0
    fi
    kill -0 "$3" 2>/dev/null || { cat "$1" >&2; die "process $3 exited while starting"; }
    sleep 0.1
  done
  die "timed out waiting for '$2' in $1"
}
wait_for_port() {
  local i
  for i in $(seq 1 300); do
    port_in_use "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

mkdir -p "$demo_dir/azurite" "$demo_dir/logs"
chmod 700 "$demo_dir"
"$repo_root/scripts/gen-ca.sh" "$demo_dir/pki"

# 1. Azurite's blob service: HTTPS (required for bearer tokens) with OAuth checks on.
: >"$demo_dir/logs/azurite.log"
node "$azurite_main" --blobHost 127.0.0.1 --blobPort 0 \
  --cert "$demo_dir/pki/server.pem" --key "$demo_dir/pki/server.key" --oauth basic \
  --location "$demo_dir/azurite" --skipApiVersionCheck --disableTelemetry \
  --disableProductStyleUrl >"$demo_dir/logs/azurite.log" 2>&1 &
pids+=($!)
azurite_url=$(wait_for_log "$demo_dir/logs/azurite.log" 'https://127\.0\.0\.1:[0-9]+' "${pids[-1]}")

# 2. The identity miproxy uses.
if [ "$identity_kind" = imds ]; then
  rm -f "$demo_dir/imds.port"
  node "$repo_root/tests/tools/dev-imds.mjs" --port 0 --port-file "$demo_dir/imds.port" \
    >"$demo_dir/logs/dev-imds.log" 2>&1 &
  pids+=($!)
  imds_url=$(wait_for_log "$demo_dir/logs/dev-imds.log" 'http://127\.0\.0\.1:[0-9]+' "${pids[-1]}")
  identity_json=$(printf '{ "type": "managed_identity", "source": "imds", "endpoint": "%s" }' \
    "$imds_url/metadata/identity/oauth2/token")
else
  node "$repo_root/tests/tools/mint-token.mjs" --out "$demo_dir/token" \
    --aud https://storage.azure.com --lifetime 86400
  identity_json=$(printf '{ "type": "token_file", "path": "%s" }' "$demo_dir/token")
fi

# 3. miproxy: plain HTTP on loopback in, HTTPS with the demo CA out.
port=$(pick_port "${MIPROXY_DEMO_PORT:-8080}")
admin_port=$(pick_port "${MIPROXY_DEMO_ADMIN_PORT:-9464}")
cat >"$demo_dir/miproxy.json" <<JSON
{
  "listeners": [ { "address": "127.0.0.1:$port" } ],
  "admin": { "address": "127.0.0.1:$admin_port" },
  "shutdown_grace": 5,
  "log": { "level": "info", "format": "json" },
  "identities": {
    "demo": $identity_json
  },
  "routes": [
    {
      "name": "demo-blob-by-host",
      "match": { "host": "devstoreaccount1.blob.core.windows.net" },
      "upstream": "$azurite_url",
      "identity": "demo",
      "scope": "https://storage.azure.com/.default",
      "tls": { "ca_file": "$demo_dir/pki/ca.pem" }
    },
    {
      "name": "demo-blob",
      "match": { "path_prefix": "/devstoreaccount1/" },
      "upstream": "$azurite_url",
      "identity": "demo",
      "scope": "https://storage.azure.com/.default",
      "tls": { "ca_file": "$demo_dir/pki/ca.pem" }
    }
  ]
}
JSON

"$miproxy_bin" run --config "$demo_dir/miproxy.json" \
  >"$demo_dir/logs/access.log" 2>"$demo_dir/logs/miproxy.log" &
pids+=($!)
miproxy_pid=${pids[-1]}
if ! wait_for_port "$port" "$miproxy_pid"; then
  cat "$demo_dir/logs/miproxy.log" >&2
  die "miproxy did not start (config: $demo_dir/miproxy.json)"
fi

base="http://127.0.0.1:$port/devstoreaccount1"
cat <<EOF

miproxy demo is running (identity: $identity_kind). Azurite (the Storage emulator) at
$azurite_url requires a bearer token; the commands below send none: miproxy adds it.

  # create a container
  curl -i -X PUT "$base/demo?restype=container"

  # upload a blob
  echo "hello from miproxy" > hello.txt
  curl -i -X PUT -H "x-ms-blob-type: BlockBlob" --data-binary @hello.txt "$base/demo/hello.txt"

  # download it
  curl "$base/demo/hello.txt"

  # list the container
  curl "$base/demo?restype=container&comp=list"

  # an app that honours http_proxy, using the real account host name
  http_proxy=http://127.0.0.1:$port curl "http://devstoreaccount1.blob.core.windows.net/devstoreaccount1/demo/hello.txt"

  # without miproxy the emulator refuses the same request (403)
  curl -i --cacert "$demo_dir/pki/ca.pem" "$azurite_url/devstoreaccount1/demo/hello.txt"

  # health, readiness and metrics
  curl http://127.0.0.1:$admin_port/healthz
  curl http://127.0.0.1:$admin_port/readyz
  curl http://127.0.0.1:$admin_port/metrics

Access log: $demo_dir/logs/access.log   miproxy log: $demo_dir/logs/miproxy.log
Config: $demo_dir/miproxy.json
Press Ctrl-C to stop.
EOF

# Stay in the foreground until Ctrl-C or until one of the processes exits.
set +e
wait -n "${pids[@]}"
status=$?
set -e
echo "demo: a demo process exited (status $status); stopping the rest" >&2
for f in miproxy azurite dev-imds; do
  [ -s "$demo_dir/logs/$f.log" ] && { echo "--- $f.log (last lines)" >&2; tail -n 5 "$demo_dir/logs/$f.log" >&2; }
done
exit 1
