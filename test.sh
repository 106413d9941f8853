#!/usr/bin/env bash
# Installs missing dependencies, builds, and runs every test (unit + integration) with ctest.
#   ./test.sh                 Release build in build/
#   ./test.sh --debug         ASan/UBSan Debug build in build-debug/
#   ./test.sh -R integration  any other arguments go to ctest (here: only integration tests)
# Exits non-zero if anything fails; the last line is ctest's summary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

build_args=()
build_dir=build
if [ "${1:-}" = "--debug" ]; then
  build_args=(--debug)
  build_dir=build-debug
  shift
fi

./scripts/install-deps.sh
./scripts/build.sh "${build_args[@]}"

ctest_log=$(mktemp -t miproxy-ctest.XXXXXX)
trap 'rm -f "$ctest_log"' EXIT
set +e
ctest --test-dir "$build_dir" --output-on-failure "$@" 2>&1 | tee "$ctest_log"
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$ctest_log" | tail -n 1 || true)
if [ -z "$summary" ]; then
  echo "test.sh: ctest printed no summary" >&2
  exit 1
fi
echo
echo "$summary"
exit "$status"
