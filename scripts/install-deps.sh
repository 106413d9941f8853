#!/usr/bin/env bash
# Installs what building and testing miproxy needs on Debian 12, and nothing that is already
# there: Debian packages (checked with dpkg first; `apt-get update` runs once, only when
# something is missing) and the integration tests' npm packages (npm ci from the committed
# lockfile, skipped when node_modules already matches it). Idempotent and quiet; prints one line
# per thing it installs, and the tool's log only on failure.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log=$(mktemp -t miproxy-install-deps.XXXXXX)
trap 'rm -f "$log"' EXIT

fail() {
  echo "install-deps: $*" >&2
  sed -e 's/^/  | /' "$log" >&2
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    echo "install-deps: need root (or sudo) to run: $*" >&2
    return 1
  fi
}

# Build toolchain and libraries, test tools, benchmark tools, the fuzzing toolchain (clang 19:
# older clangs cannot compile libstdc++ 12's <expected>).
packages=(
  build-essential cmake pkg-config
  libuv1-dev node-llhttp libssl-dev nlohmann-json3-dev prometheus-cpp-dev catch2
  curl openssl
  wrk nginx-light
  clang-19 libfuzzer-19-dev libclang-rt-19-dev
  shellcheck wget
)
# node and npm: keep whatever provides them already (e.g. a newer Node.js build).
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# promtool (metrics tests) comes with Debian's prometheus package.
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
# systemd-analyze (unit file checks).
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)

missing=()
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
for p in "${packages[@]}"; do
  grep -qx "$p installed" <<<"$installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >"$log" 2>&1 || fail "apt-get update failed"
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 \
    || fail "apt-get install failed"
fi

# npm packages for tests/integration (Azurite, the Storage SDK), pinned by package-lock.json.
it_dir="$repo_root/tests/integration"
if [ -f "$it_dir/package.json" ]; then
  stamp="$it_dir/node_modules/.miproxy-deps-stamp"
  want=$(cat "$it_dir/package.json" "$it_dir/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "install-deps: installing npm packages in tests/integration"
    if [ -f "$it_dir/package-lock.json" ]; then
      (cd "$it_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1 \
        || fail "npm ci failed"
    else
      (cd "$it_dir" && npm install --no-audit --no-fund --loglevel=error) >"$log" 2>&1 \
        || fail "npm install failed"
    fi
    echo "$want" >"$stamp"
  fi
fi
