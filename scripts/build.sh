#!/usr/bin/env bash
# Configures and builds miproxy with CMake.
#   scripts/build.sh            Release build in build/
#   scripts/build.sh --debug    Debug build with AddressSanitizer + UBSan in build-debug/
# Extra arguments after the options are passed to `cmake --build` (e.g. --target miproxy).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$repo_root/build"
cmake_args=(-DCMAKE_BUILD_TYPE=Release)

while [ $# -gt 0 ]; do
  case "$1" in
    --debug)
      build_dir="$repo_root/build-debug"
      cmake_args=(-DCMAKE_BUILD_TYPE=Debug -DMIPROXY_SANITIZE=ON)
      shift
      ;;
    -h|--help)
      sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      break
      ;;
  esac
done

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$repo_root" -B "$build_dir" "${cmake_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$jobs" "$@"
