#!/usr/bin/env bash
# bench/profile.sh: miproxy's cost per request as counts that do not depend on machine load.
#
# For each workload it sends an exact number of requests through miproxy to one local TLS
# upstream (the same upstream, token and config as bench/run.sh, from bench/lib.sh) and reports
# per request: user-space instructions and heap allocations (one run under valgrind's callgrind,
# counters zeroed after the warm-up and dumped after the measured requests) and system calls
# (a second run of the plain binary with strace -c -f attached for the measured requests only).
# Prints a table and writes bench/results/profile-<timestamp>.json. See bench/README.md.
#
# Usage: bench/profile.sh [--miproxy PATH] [--workers N|auto] [--workloads get1k,get1m,put1m]
#                         [--conns 1,64] [--small N] [--large N] [--no-strace]
#                         [--breakdown WORKLOAD:CONNS] [--top N] [--label TEXT]
#                         [--out DIR] [--keep-tmp]
#
# Everything runs on 127.0.0.1; every process is started here and stopped by PID on exit.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

MIPROXY="$ROOT/build/miproxy"
WORKERS=1
WORKLOADS="get1k,get1m,put1m"
CONNS="1,64"
SMALL=2000        # requests per 1 KiB workload
LARGE=64          # requests per 1 MiB workload
DO_STRACE=1
BREAKDOWN=""
TOP=25
LABEL=""
OUTDIR="$HERE/results"
KEEP_TMP=0

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --miproxy) MIPROXY="$2"; shift 2 ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --workloads) WORKLOADS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --small) SMALL="$2"; shift 2 ;;
    --large) LARGE="$2"; shift 2 ;;
    --no-strace) DO_STRACE=0; shift ;;
    --breakdown) BREAKDOWN="$2"; shift 2 ;;
    --top) TOP="$2"; shift 2 ;;
    --label) LABEL="$2"; shift 2 ;;
    --out) OUTDIR="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "profile.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

for n in "$SMALL" "$LARGE" "$TOP"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "profile.sh: --small, --large, --top take positive whole numbers" >&2; exit 2; }
done
case "$WORKERS" in
  auto) WORKERS_JSON='"auto"' ;;
  *) [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || { echo "profile.sh: --workers takes N or auto" >&2; exit 2; }
     WORKERS_JSON=$WORKERS ;;
esac
IFS=',' read -r -a WORKLOAD_LIST <<< "$WORKLOADS"
IFS=',' read -r -a CONN_LIST <<< "$CONNS"
for w in "${WORKLOAD_LIST[@]}"; do
  case "$w" in get1k|get1m|put1m) ;; *) echo "profile.sh: unknown workload $w" >&2; exit 2 ;; esac
done
for c in "${CONN_LIST[@]}"; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "profile.sh: --conns takes whole numbers" >&2; exit 2; }
done
if [[ -n "$BREAKDOWN" && ! "$BREAKDOWN" =~ ^(get1k|get1m|put1m):[0-9]+$ ]]; then
  echo "profile.sh: --breakdown takes WORKLOAD:CONNS, e.g. get1k:64" >&2; exit 2
fi

for t in valgrind callgrind_control callgrind_annotate node nginx openssl curl ss; do
  command -v "$t" >/dev/null 2>&1 || { echo "profile.sh: needs $t" >&2; exit 1; }
done
if (( DO_STRACE )) && ! command -v strace >/dev/null 2>&1; then
  echo "profile.sh: needs strace (or pass --no-strace)" >&2; exit 1
fi
if [[ ! -x "$MIPROXY" ]]; then
  echo "profile.sh: no miproxy binary at $MIPROXY (build it or pass --miproxy PATH)" >&2; exit 1
fi
MIPROXY=$(cd "$(dirname "$MIPROXY")" && pwd)/$(basename "$MIPROXY")
NGINX=$(command -v nginx)

# Workload table: path, method, request body bytes, expected response bytes, request count.
wl_path() { case "$1" in get1k) echo /1k ;; get1m) echo /1m ;; put1m) echo /upload ;; esac; }
wl_method() { case "$1" in put1m) echo PUT ;; *) echo GET ;; esac; }
wl_body() { case "$1" in put1m) echo 1048576 ;; *) echo 0 ;; esac; }
wl_expect() { case "$1" in get1k) echo 1024 ;; get1m) echo 1048576 ;; put1m) echo 3 ;; esac; }
wl_requests() { case "$1" in get1k) echo "$SMALL" ;; *) echo "$LARGE" ;; esac; }
# Warm-up: every connection opened and used, the upstream pool filled, the token cached.
wl_warmup() {
  local w=$1 c=$2 n
  case "$w" in get1k) n=$(( c * 4 > 200 ? c * 4 : 200 )) ;; *) n=$(( c * 2 > 8 ? c * 2 : 8 )) ;; esac
  echo "$n"
}

# ---------------------------------------------------------------------------------------------
# Setup (bench/lib.sh): temp dir, PKI, token, upstream nginx.

BENCH_NAME=profile.sh
source "$HERE/lib.sh"
bench_setup_tmp
bench_make_pki_and_token
bench_make_upstream
free_port MIPROXY_PORT
start_nginx "$UP_DIR" "$UP_PORT"; UP_PID=$STARTED_NGINX_PID

MP_DIR="$TMP/miproxy"
mkdir -p "$MP_DIR" "$TMP/cg" "$TMP/strace"
bench_write_miproxy_config "$MP_DIR/miproxy.json" "$MIPROXY_PORT" "$WORKERS_JSON"
MIPROXY_VERSION=$("$MIPROXY" --version 2>/dev/null | head -n 1 || true)

# start_miproxy LOG [WRAPPER...]: starts miproxy (under WRAPPER when given), sets MP_PID.
start_miproxy() {
  local log=$1; shift
  "$@" "$MIPROXY" run --config "$MP_DIR/miproxy.json" > "$log" 2>&1 &
  MP_PID=$!
  STARTED_PIDS+=("$MP_PID")
  if ! wait_port "$MIPROXY_PORT" "$MP_PID" 90; then
    echo "profile.sh: miproxy did not start listening on 127.0.0.1:$MIPROXY_PORT; its log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  local i out=""
  for (( i=0; i<100; i++ )); do
    out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 30 \
      "http://127.0.0.1:$MIPROXY_PORT/1k" || true)
    [[ "$out" == "200 1024" ]] && return 0
    sleep 0.2
  done
  echo "profile.sh: miproxy: GET /1k gave '$out', expected '200 1024'" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
}

stop_miproxy() { stop_pid "$MP_PID"; MP_PID=""; }

# measure W C START_CMD STOP_CMD: runs the load generator for workload W with C connections;
# after its warm-up, runs START_CMD, then the measured requests, then STOP_CMD.
LG_TIMEOUT=900
measure() {
  local w=$1 c=$2 start_cmd=$3 stop_cmd=$4 line lg_pid rc=0
  coproc LG { timeout "$LG_TIMEOUT" node "$HERE/loadgen.mjs" --port "$MIPROXY_PORT" \
    --path "$(wl_path "$w")" --conns "$c" --requests "$(wl_requests "$w")" \
    --warmup "$(wl_warmup "$w" "$c")" --method "$(wl_method "$w")" \
    --body-bytes "$(wl_body "$w")" --expect-bytes "$(wl_expect "$w")" 2>"$TMP/loadgen.err"; }
  lg_pid=$LG_PID
  STARTED_PIDS+=("$lg_pid")
  local out_fd=${LG[0]} in_fd=${LG[1]}
  read -r line <&"$out_fd" || line=""
  if [[ "$line" != "warm 0" ]]; then
    echo "profile.sh: $w/$c: warm-up failed ('$line'): $(cat "$TMP/loadgen.err")" >&2
    return 1
  fi
  eval "$start_cmd"
  echo go >&"$in_fd"
  read -r line <&"$out_fd" || line=""
  eval "$stop_cmd"
  echo end >&"$in_fd"
  wait "$lg_pid" || rc=$?
  MEASURED_OK=$(awk '{print $2}' <<< "$line")
  MEASURED_BAD=$(awk '{print $3}' <<< "$line")
  if [[ "${line%% *}" != done || "$MEASURED_BAD" != 0 || $rc != 0 ]]; then
    echo "profile.sh: $w/$c: measured run failed ('$line', rc $rc): $(cat "$TMP/loadgen.err")" >&2
    return 1
  fi
}

# callgrind_control (zero / dump the counters of the running miproxy); the timeout turns a
# target that never picks up the command into a clear error instead of a hang.
cg_ctl() {  # cg_ctl OPTION
  if ! timeout 60 callgrind_control "$1" "$MP_PID" > "$TMP/cg/ctl.log" 2>&1; then
    echo "profile.sh: callgrind_control $1 $MP_PID failed: $(cat "$TMP/cg/ctl.log")" >&2
    exit 1
  fi
}

# Sum of calls to the C allocator in a callgrind dump (operator new, OpenSSL's CRYPTO_malloc
# and libuv all end in these). Names are compressed: "(id) name" defines, "(id)" reuses.
count_allocs() {
  awk '
    function name(s,   id, rest) {
      if (match(s, /^\([0-9]+\)/)) {
        id = substr(s, 2, RLENGTH - 2); rest = substr(s, RLENGTH + 1); sub(/^ /, "", rest)
        if (rest != "") names[id] = rest
        return names[id]
      }
      return s
    }
    /^fn=/ { name(substr($0, 4)); next }
    /^cfn=/ { callee = name(substr($0, 5)); next }
    /^calls=/ {
      if (callee ~ /^(malloc|calloc|realloc|posix_memalign|aligned_alloc|memalign|valloc)('\''[0-9]+)?$/) {
        split(substr($0, 7), a, " "); total += a[1]
      }
    }
    END { printf "%d\n", total }' "$1"
}
cg_total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

TS=$(date -u +%Y%m%dT%H%M%SZ)
GIT=$(git -C "$(dirname "$MIPROXY")" rev-parse --short HEAD 2>/dev/null || true)
printf '\nmiproxy profile %s: %s (%s), workers %s, %d CPUs\n' "$TS" "$MIPROXY" \
  "${GIT:-unknown commit}" "$WORKERS" "$(nproc)"

declare -A INSTR ALLOCS SYSCALLS REQS SYSTOP DUMP

# ---------------------------------------------------------------------------------------------
# Run 1: callgrind (instructions, allocations).

start_miproxy "$MP_DIR/callgrind.log" valgrind --tool=callgrind \
  --callgrind-out-file="$TMP/cg/callgrind.out.%p" --dump-instr=no --compress-strings=yes
printf 'callgrind: miproxy pid %s under valgrind\n' "$MP_PID" >&2
for w in "${WORKLOAD_LIST[@]}"; do
  for c in "${CONN_LIST[@]}"; do
    before=$(ls "$TMP/cg" | grep -c "^callgrind.out.$MP_PID\." || true)
    measure "$w" "$c" 'cg_ctl -z' 'cg_ctl -d' || exit 1
    dump=$(ls -t "$TMP/cg"/callgrind.out."$MP_PID".* | head -n 1)
    after=$(ls "$TMP/cg" | grep -c "^callgrind.out.$MP_PID\." || true)
    (( after == before + 1 )) || { echo "profile.sh: no new callgrind dump for $w/$c" >&2; exit 1; }
    cp "$dump" "$TMP/cg/$w-$c.out"
    DUMP[$w-$c]="$TMP/cg/$w-$c.out"
    REQS[$w-$c]=$MEASURED_OK
    INSTR[$w-$c]=$(cg_total "$dump")
    ALLOCS[$w-$c]=$(count_allocs "$dump")
    printf '  %-6s %3d conns: %d requests, %s instructions, %s allocations\n' "$w" "$c" \
      "$MEASURED_OK" "${INSTR[$w-$c]}" "${ALLOCS[$w-$c]}" >&2
  done
done
stop_miproxy

# ---------------------------------------------------------------------------------------------
# Run 2: strace -c -f on the plain binary (system calls), attached for the measured part only.

strace_start() {  # attach to every thread; wait until strace reports each one attached
  local ntask i
  ntask=$(ls "/proc/$MP_PID/task" | wc -l)
  strace -c -f -p "$MP_PID" -o "$STRACE_OUT" 2> "$STRACE_OUT.err" &
  STRACE_PID=$!
  STARTED_PIDS+=("$STRACE_PID")
  for (( i=0; i<200; i++ )); do
    # "Process N attached with T threads", or one "attached" line per thread.
    grep -q "attached with $ntask threads" "$STRACE_OUT.err" 2>/dev/null && return 0
    (( $(grep -c 'attached' "$STRACE_OUT.err" 2>/dev/null || true) >= ntask )) && return 0
    sleep 0.05
  done
  echo "profile.sh: strace did not attach to $ntask threads: $(cat "$STRACE_OUT.err")" >&2
  exit 1
}
strace_stop() { kill -INT "$STRACE_PID" 2>/dev/null || true; wait "$STRACE_PID" 2>/dev/null || true; }

if (( DO_STRACE )); then
  start_miproxy "$MP_DIR/strace.log"
  for w in "${WORKLOAD_LIST[@]}"; do
    for c in "${CONN_LIST[@]}"; do
      STRACE_OUT="$TMP/strace/$w-$c.txt"
      measure "$w" "$c" strace_start strace_stop || exit 1
      n=$(awk '$NF == "total" {print $4}' "$STRACE_OUT")
      SYSCALLS[$w-$c]=$(awk -v n="${n:-0}" -v r="$MEASURED_OK" 'BEGIN {printf "%.2f", n / r}')
      # The four most frequent, as "name:calls per request".
      SYSTOP[$w-$c]=$(awk -v r="$MEASURED_OK" '
        $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4 }
        END { for (s in calls) printf "%s %.2f\n", s, calls[s] / r }' "$STRACE_OUT" |
        sort -k2,2nr | head -n 4 | awk '{printf "%s%s:%s", (NR > 1 ? " " : ""), $1, $2}')
    done
  done
  stop_miproxy
fi

# ---------------------------------------------------------------------------------------------
# Report.

printf '\n%-8s %5s %8s %14s %12s %11s  %s\n' workload conns requests "instr/req" "syscalls/req" \
  "allocs/req" "most frequent syscalls (per request)"
ROWS_JSON=()
for w in "${WORKLOAD_LIST[@]}"; do
  for c in "${CONN_LIST[@]}"; do
    k=$w-$c
    r=${REQS[$k]}
    ipr=$(awk -v i="${INSTR[$k]}" -v r="$r" 'BEGIN {printf "%.0f", i / r}')
    apr=$(awk -v a="${ALLOCS[$k]}" -v r="$r" 'BEGIN {printf "%.2f", a / r}')
    spr=${SYSCALLS[$k]:-null}
    printf '%-8s %5d %8d %14s %12s %11s  %s\n' "$w" "$c" "$r" "$ipr" "$spr" "$apr" "${SYSTOP[$k]:-}"
    ROWS_JSON+=("{ \"workload\": \"$w\", \"connections\": $c, \"requests\": $r, \"instructions\": ${INSTR[$k]}, \"instructions_per_request\": $ipr, \"allocations\": ${ALLOCS[$k]}, \"allocations_per_request\": $apr, \"syscalls_per_request\": $spr, \"top_syscalls\": \"${SYSTOP[$k]:-}\" }")
  done
done
printf '(instructions and allocations: callgrind, all threads, measured requests only;\n'
printf ' syscalls: strace -c -f, separate run of the plain binary)\n'

mkdir -p "$OUTDIR"
JSON="$OUTDIR/profile-$TS.json"
[[ -e "$JSON" ]] && JSON="$OUTDIR/profile-$TS-$$.json"   # two runs started in the same second
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
  printf '{\n'
  printf '  "timestamp": %s,\n' "$(json_str "$TS")"
  printf '  "label": %s,\n' "$(json_str "$LABEL")"
  printf '  "miproxy": %s,\n' "$(json_str "$MIPROXY")"
  printf '  "miproxy_version": %s,\n' "$(json_str "$MIPROXY_VERSION")"
  printf '  "git": %s,\n' "$(json_str "$GIT")"
  printf '  "workers": %s,\n' "$WORKERS_JSON"
  printf '  "valgrind": %s,\n' "$(json_str "$(valgrind --version)")"
  printf '  "results": [\n'
  for (( i=0; i<${#ROWS_JSON[@]}; i++ )); do
    printf '    %s%s\n' "${ROWS_JSON[$i]}" "$( (( i + 1 < ${#ROWS_JSON[@]} )) && echo ,)"
  done
  printf '  ]\n}\n'
} > "$JSON"
printf '\nwrote %s\n' "$JSON"

# ---------------------------------------------------------------------------------------------
# Breakdown: where one workload's instructions go, by inclusive cost.

if [[ -n "$BREAKDOWN" ]]; then
  k=${BREAKDOWN/:/-}
  if [[ -z "${DUMP[$k]:-}" ]]; then
    echo "profile.sh: --breakdown $BREAKDOWN was not among the measured workloads" >&2; exit 2
  fi
  printf '\ntop %d functions by inclusive instructions, %s (%d requests; divide by it for per request):\n' \
    "$TOP" "$BREAKDOWN" "${REQS[$k]}"
  callgrind_annotate --inclusive=yes --threshold=100 "${DUMP[$k]}" 2>/dev/null |
    awk -v top="$TOP" -v r="${REQS[$k]}" '
      /^-+$/ { sep++; next }
      sep >= 3 && NF >= 2 && $1 ~ /^[0-9,]+$/ && n < top {
        ir = $1; gsub(",", "", ir)
        # Thread start, uv_run and the like contain everything: print the total once.
        if (total == "") total = ir; else if (ir >= 0.99 * total) next
        n++
        line = $0; sub(/^ *[0-9,]+ +(\([^)]*\) +)?/, "", line)
        printf "%12.0f /req  %s\n", ir / r, substr(line, 1, 140)
      }'
  printf '\ntop %d functions by their own (exclusive) instructions, %s:\n' "$TOP" "$BREAKDOWN"
  callgrind_annotate --threshold=100 "${DUMP[$k]}" 2>/dev/null |
    awk -v top="$TOP" -v r="${REQS[$k]}" '
      /^-+$/ { sep++; next }
      sep >= 3 && NF >= 2 && $1 ~ /^[0-9,]+$/ && n < top {
        ir = $1; gsub(",", "", ir)
        # PROGRAM TOTALS was printed above; thread-entry frames repeat it.
        if (total == "") { total = ir; next } else if (ir >= 0.99 * total) next
        n++
        line = $0; sub(/^ *[0-9,]+ +(\([^)]*\) +)?/, "", line)
        printf "%12.0f /req  %s\n", ir / r, substr(line, 1, 140)
      }'
  cp "${DUMP[$k]}" "${JSON%.json}-$k.callgrind"
  printf '(full dump: %s; open it with callgrind_annotate or kcachegrind)\n' \
    "${JSON%.json}-$k.callgrind"
fi
