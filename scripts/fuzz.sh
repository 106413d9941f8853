#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-19, ASan + UBSan, in build-fuzz/) and runs each one with
# its seed corpus for a while.
#   scripts/fuzz.sh                       every target, 30 s each
#   scripts/fuzz.sh --seconds 600 http1   one target for ten minutes
#   scripts/fuzz.sh --list                the target names
#   scripts/fuzz.sh --seconds 1200 --runs 10000000   a campaign: stop at 10M executions or 20 min
# The seed corpus (tests/fuzz/corpus/<target>/) is copied to a scratch directory, so new inputs
# the fuzzer finds never land in the repository. Exits non-zero on any finding (crash, leak,
# timeout, out-of-memory, UBSan report); the input is kept under the scratch directory, whose
# path is printed. One summary line per target: name, status, executions, seconds.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir="$repo_root/build-fuzz"
seconds=30
runs=-1
targets=()
list=0

while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --runs) runs="$2"; shift 2 ;;
    --runs=*) runs="${1#*=}"; shift ;;
    --list) list=1; shift ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("${1#fuzz_}"); shift ;;
  esac
done

all_targets=()
for f in "$repo_root"/tests/fuzz/fuzz_*.cc; do
  name=$(basename "$f" .cc)
  all_targets+=("${name#fuzz_}")
done
if [ "$list" -eq 1 ]; then
  printf '%s\n' "${all_targets[@]}"
  exit 0
fi
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
  if [ ! -f "$repo_root/tests/fuzz/fuzz_$t.cc" ]; then
    echo "fuzz.sh: no target $t (have: ${all_targets[*]})" >&2
    exit 2
  fi
done

export CMAKE_C_COMPILER_LAUNCHER="${CMAKE_C_COMPILER_LAUNCHER:-$(command -v ccache || true)}"
export CMAKE_CXX_COMPILER_LAUNCHER="${CMAKE_CXX_COMPILER_LAUNCHER:-$(command -v ccache || true)}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$repo_root}"
CC=clang-19 CXX=clang++-19 cmake -S "$repo_root" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMIPROXY_FUZZ=ON -DBUILD_TESTING=OFF >/dev/null
build_targets=()
for t in "${targets[@]}"; do build_targets+=(--target "fuzz_$t"); done
log=$(mktemp -t miproxy-fuzz-build.XXXXXX)
if ! cmake --build "$build_dir" -j "$(nproc 2>/dev/null || echo 2)" "${build_targets[@]}" >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "fuzz.sh: build failed" >&2
  exit 1
fi
rm -f "$log"

scratch=$(mktemp -d -t miproxy-fuzz.XXXXXX)
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
for t in "${targets[@]}"; do
  work="$scratch/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "$repo_root/tests/fuzz/corpus/$t" ]; then
    cp -r "$repo_root/tests/fuzz/corpus/$t/." "$work/corpus/"
  fi
  args=(-max_total_time="$seconds" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -max_len=65536
        -print_final_stats=1 -artifact_prefix="$work/artifacts/")
  if [ -f "$repo_root/tests/fuzz/$t.dict" ]; then
    args+=(-dict="$repo_root/tests/fuzz/$t.dict")
  fi
  start=$(date +%s)
  set +e
  "$build_dir/tests/fuzz/fuzz_$t" "${args[@]}" "$work/corpus" >"$work/log" 2>&1
  status=$?
  set -e
  elapsed=$(( $(date +%s) - start ))
  execs=$(grep -E '^stat::number_of_executed_units:' "$work/log" | awk '{print $2}' | tail -n 1)
  if [ "$status" -eq 0 ] && ! ls "$work/artifacts/"* >/dev/null 2>&1; then
    echo "fuzz $t: ok, ${execs:-0} execs in ${elapsed} s"
  else
    echo "fuzz $t: FINDING (exit $status), ${execs:-?} execs in ${elapsed} s; log $work/log"
    grep -E 'ERROR: |runtime error|SUMMARY|Test unit written' "$work/log" | head -n 8 | sed 's/^/  /'
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: findings in ${failed[*]} (inputs under $scratch)" >&2
  exit 1
fi
rm -rf "$scratch"
