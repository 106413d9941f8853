#!/usr/bin/env bash
# Configures and builds miproxy with CMake, using every core.
#   scripts/build.sh              Release build in build/
#   scripts/build.sh --debug      Debug build with AddressSanitizer + UBSan in build-debug/
#   scripts/build.sh --quiet      print the compiler's output only if the build fails
# Further arguments go to `cmake --build` (e.g. --target miproxy).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$repo_root/build"
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
quiet=0

while [ $# -gt 0 ]; do
  case "$1" in
    --debug)
      build_dir="$repo_root/build-debug"
      cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DMIPROXY_SANITIZE=ON)
      shift
      ;;
    --quiet)
      quiet=1
      shift
      ;;
    -h|--help)
      sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      break
      ;;
  esac
done

jobs=$(nproc 2>/dev/null || echo 2)
build() {
  cmake -S "$repo_root" -B "$build_dir" "${cmake_args[@]}" >/dev/null
  cmake --build "$build_dir" -j "$jobs" "$@"
}

if [ "$quiet" -eq 1 ]; then
  log=$(mktemp -t miproxy-build.XXXXXX)
  trap 'rm -f "$log"' EXIT
  if ! build "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "build: failed" >&2
    exit 1
  fi
else
  build "$@"
fi
