#!/usr/bin/env bash
# bench/run.sh: miproxy and nginx doing the same job, side by side, in one run.
#
# Both proxies listen on plain HTTP on 127.0.0.1, inject a static bearer token and forward over
# verified, kept-alive TLS to one upstream nginx serving /1k, /1m and accepting PUT /upload.
# For each proxy and workload it records the proxy's CPU time (utime+stime of all its
# processes), the requests wrk completed, wrk's latency percentiles and the proxy's peak RSS,
# prints a table and writes bench/results/<timestamp>.json. See bench/README.md.
#
# Usage: bench/run.sh [--miproxy PATH] [--duration S] [--warmup S] [--repeat N]
#                     [--workloads get1k,get1m,put1m] [--proxies nginx,miproxy]
#                     [--out DIR] [--keep-tmp]
#
# Everything runs on 127.0.0.1; every process is started here and stopped by PID on exit.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

MIPROXY="$ROOT/build/miproxy"
DURATION=10
WARMUP=2
REPEAT=1
WORKLOADS="get1k,get1m,put1m"
PROXIES="nginx,miproxy"
OUTDIR="$HERE/results"
KEEP_TMP=0
MAX_SECONDS=290   # the whole run stays under five minutes

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --miproxy) MIPROXY="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --workloads) WORKLOADS="$2"; shift 2 ;;
    --proxies) PROXIES="$2"; shift 2 ;;
    --out) OUTDIR="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

for n in "$DURATION" "$WARMUP" "$REPEAT"; do
  if ! [[ "$n" =~ ^[0-9]+$ ]]; then
    echo "run.sh: --duration, --warmup and --repeat take whole numbers" >&2
    exit 2
  fi
done
if (( DURATION < 1 || REPEAT < 1 )); then
  echo "run.sh: --duration and --repeat must be at least 1" >&2
  exit 2
fi

IFS=',' read -r -a WORKLOAD_LIST <<< "$WORKLOADS"
IFS=',' read -r -a PROXY_LIST <<< "$PROXIES"
for w in "${WORKLOAD_LIST[@]}"; do
  case "$w" in get1k|get1m|put1m) ;; *) echo "run.sh: unknown workload $w" >&2; exit 2 ;; esac
done
for p in "${PROXY_LIST[@]}"; do
  case "$p" in nginx|nginx-stream|miproxy) ;; *) echo "run.sh: unknown proxy $p" >&2; exit 2 ;; esac
done

# Workload table: path, connections, method, request body bytes.
wl_path() { case "$1" in get1k) echo /1k ;; get1m) echo /1m ;; put1m) echo /upload ;; esac; }
wl_conns() { case "$1" in get1k) echo 64 ;; *) echo 8 ;; esac; }
wl_method() { case "$1" in put1m) echo PUT ;; *) echo GET ;; esac; }
wl_body() { case "$1" in put1m) echo 1048576 ;; *) echo 0 ;; esac; }
wl_desc() {
  case "$1" in
    get1k) echo "GET 1 KiB, 64 conns" ;;
    get1m) echo "GET 1 MiB, 8 conns" ;;
    put1m) echo "PUT 1 MiB, 8 conns" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Time budget.

estimate=$(( 20 + REPEAT * ${#PROXY_LIST[@]} * ${#WORKLOAD_LIST[@]} * (WARMUP + DURATION + 2) ))
if (( estimate > MAX_SECONDS )); then
  echo "run.sh: this run would take about ${estimate}s; keep it under ${MAX_SECONDS}s" \
       "(lower --duration, --repeat or the workload list)" >&2
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# Tools.

need_install=0
for t in wrk nginx openssl curl; do
  command -v "$t" >/dev/null 2>&1 || need_install=1
done
if (( need_install )); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: installing wrk, nginx-light, openssl, curl" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y wrk nginx-light openssl curl >&2
  else
    echo "run.sh: needs wrk, nginx, openssl and curl (apt-get install -y wrk nginx-light)" >&2
    exit 1
  fi
fi
NGINX=$(command -v nginx)
CLK_TCK=$(getconf CLK_TCK)

want_miproxy=0
for p in "${PROXY_LIST[@]}"; do [[ "$p" == miproxy ]] && want_miproxy=1; done
if (( want_miproxy )) && [[ ! -x "$MIPROXY" ]]; then
  echo "run.sh: no miproxy binary at $MIPROXY; measuring nginx only" \
       "(build it or pass --miproxy PATH)" >&2
  PROXY_LIST=(nginx)
  want_miproxy=0
fi

# Shared setup (process bookkeeping, PKI, token, upstream, miproxy config): bench/lib.sh.
BENCH_NAME=run.sh
source "$HERE/lib.sh"
bench_setup_tmp

# Sum of utime+stime (clock ticks) over the given PIDs; all threads of a process are included.
cpu_ticks() {
  local total=0 pid line
  local -a f
  for pid in "$@"; do
    [[ -r /proc/$pid/stat ]] || continue
    read -r line < "/proc/$pid/stat" || continue
    read -r -a f <<< "${line##*) }"
    total=$(( total + f[11] + f[12] ))
  done
  echo "$total"
}

# Sum of VmHWM (KiB) over the given PIDs.
peak_rss_kib() {
  local total=0 pid v
  for pid in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

# Busy clock ticks of the whole machine (all CPUs) from /proc/stat.
machine_busy_ticks() {
  local -a f
  read -r -a f < /proc/stat
  # cpu user nice system idle iowait irq softirq steal ...
  echo $(( f[1] + f[2] + f[3] + f[6] + f[7] + f[8] ))
}

# CPU ticks of this shell's reaped children (wrk runs as one): cutime + cstime.
children_ticks() {
  local line
  local -a f
  read -r line < "/proc/$$/stat"
  read -r -a f <<< "${line##*) }"
  echo $(( f[13] + f[14] ))
}

# Sum of Pss (KiB) over the given PIDs: shared pages split between the processes sharing them,
# so an nginx master + worker is not counted twice. Current value, not a peak.
pss_kib() {
  local total=0 pid v
  for pid in "$@"; do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
    total=$(( total + ${v:-0} ))
  done
  echo "$total"
}

# Reset VmHWM to the current RSS so each workload reports its own peak (Linux clear_refs 5).
HWM_RESET_OK=1
reset_peak_rss() {
  local pid
  for pid in "$@"; do
    echo 5 2>/dev/null > "/proc/$pid/clear_refs" || HWM_RESET_OK=0
  done
}

bench_make_pki_and_token
bench_make_upstream
free_port NGINX_PORT
free_port NGINX_STREAM_PORT
free_port MIPROXY_PORT

# Comparator: nginx, one worker, keep-alive TLS pool to the upstream, static bearer header.
NG_DIR="$TMP/nginx-proxy"
mkdir -p "$NG_DIR"
{
  nginx_common "$NG_DIR"
  cat <<EOF
http {
  access_log off;
$(nginx_temp_paths "$NG_DIR")
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream bench_up {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Authorization "Bearer $TOKEN";
  proxy_ssl_trusted_certificate $CA;
  proxy_ssl_verify on;
  proxy_ssl_verify_depth 2;
  proxy_ssl_name localhost;
  proxy_ssl_server_name on;
  proxy_ssl_session_reuse on;
  client_max_body_size 2m;
  # "nginx": the comparator, nginx defaults (buffers bodies, spills large ones to temp files).
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass https://bench_up;
    }
  }
  # "nginx-stream" (opt-in): the same worker and pool, streaming both bodies like miproxy.
  server {
    listen 127.0.0.1:$NGINX_STREAM_PORT;
    location / {
      proxy_pass https://bench_up;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
EOF
} > "$NG_DIR/nginx.conf"

MP_DIR="$TMP/miproxy"
mkdir -p "$MP_DIR"
bench_write_miproxy_config "$MP_DIR/miproxy.json" "$MIPROXY_PORT" 1

# ---------------------------------------------------------------------------------------------
# Start.

UP_PID=""; NG_PID=""; MP_PID=""
UP_PIDS=(); NG_PIDS=(); MP_PIDS=()


start_nginx "$UP_DIR" "$UP_PORT"; UP_PID=$STARTED_NGINX_PID
start_nginx "$NG_DIR" "$NGINX_PORT"; NG_PID=$STARTED_NGINX_PID

MIPROXY_VERSION=""
if (( want_miproxy )); then
  MIPROXY_VERSION=$("$MIPROXY" --version 2>/dev/null | head -n 1 || true)
  "$MIPROXY" run --config "$MP_DIR/miproxy.json" > "$MP_DIR/miproxy.log" 2>&1 &
  MP_PID=$!
  STARTED_PIDS+=("$MP_PID")
  if ! wait_port "$MIPROXY_PORT" "$MP_PID" 15; then
    echo "run.sh: miproxy did not start listening on 127.0.0.1:$MIPROXY_PORT; its log:" >&2
    tail -n 20 "$MP_DIR/miproxy.log" >&2 || true
    exit 1
  fi
fi

proxy_port() {
  case "$1" in
    nginx) echo "$NGINX_PORT" ;;
    nginx-stream) echo "$NGINX_STREAM_PORT" ;;
    miproxy) echo "$MIPROXY_PORT" ;;
  esac
}
# All processes of a proxy (nginx: master and worker).
proxy_pids() {
  case "$1" in
    nginx|nginx-stream) echo "$NG_PID $(child_pids "$NG_PID")" ;;
    miproxy) echo "$MP_PID" ;;
  esac
}
upstream_pids() { echo "$UP_PID $(child_pids "$UP_PID")"; }

# Smoke check: each proxy serves every workload correctly before anything is measured (the
# first token fetch may take a moment, so retry for a few seconds).
smoke() {  # smoke PROXY
  local proxy=$1 port out i
  port=$(proxy_port "$proxy")
  for (( i=0; i<50; i++ )); do
    out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 5 \
      "http://127.0.0.1:$port/1k" || true)
    [[ "$out" == "200 1024" ]] && break
    sleep 0.2
  done
  if [[ "$out" != "200 1024" ]]; then
    echo "run.sh: $proxy: GET /1k gave '$out', expected '200 1024'" >&2
    return 1
  fi
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' --max-time 10 \
    "http://127.0.0.1:$port/1m" || true)
  if [[ "$out" != "200 1048576" ]]; then
    echo "run.sh: $proxy: GET /1m gave '$out', expected '200 1048576'" >&2
    return 1
  fi
  out=$(head -c 1048576 /dev/zero | curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
    -X PUT -H 'Content-Type: application/octet-stream' --data-binary @- \
    "http://127.0.0.1:$port/upload" || true)
  if [[ "$out" != "200" ]]; then
    echo "run.sh: $proxy: PUT /upload (1 MiB) gave '$out', expected '200'" >&2
    return 1
  fi
}

ACTIVE_PROXIES=()
FAILED=0
for p in "${PROXY_LIST[@]}"; do
  if smoke "$p"; then
    ACTIVE_PROXIES+=("$p")
  else
    FAILED=1
    if [[ "$p" == miproxy ]]; then
      tail -n 20 "$MP_DIR/miproxy.log" >&2 || true
    fi
  fi
done
if (( ${#ACTIVE_PROXIES[@]} == 0 )); then
  echo "run.sh: no proxy passed the smoke check" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# Measure.

WRK_OUT="$TMP/wrk"
mkdir -p "$WRK_OUT"

run_wrk() {  # run_wrk WORKLOAD PORT SECONDS OUTFILE
  local w=$1 port=$2 secs=$3 out=$4
  BENCH_METHOD=$(wl_method "$w") BENCH_BODY_BYTES=$(wl_body "$w") \
    timeout $(( secs + 20 )) wrk -t2 -c"$(wl_conns "$w")" -d"${secs}s" --timeout 10s --latency \
    -s "$HERE/wrk.lua" "http://127.0.0.1:$port$(wl_path "$w")" > "$out" 2>&1
}

bench_field() {  # bench_field FILE KEY
  sed -n 's/^BENCH //p' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# One row per measurement, space separated:
#  1 proxy 2 workload 3 rep 4 requests 5 wrk_duration_us 6 proxy_ticks 7 upstream_ticks
#  8 peak_rss_kib 9 p50_us 10 p90_us 11 p99_us 12 p999_us 13 max_us 14 errors 15 wrk_ticks
#  16 other_ticks 17 pss_kib_after 18 warmup_errors
ROWS=()
TS=$(date -u +%Y%m%dT%H%M%SZ)

printf '\nmiproxy bench %s: %d s per measurement after %d s warm-up, %d repeat(s), %d CPUs\n' \
  "$TS" "$DURATION" "$WARMUP" "$REPEAT" "$(nproc)"
printf 'upstream nginx 127.0.0.1:%s; proxies: %s\n\n' "$UP_PORT" "${ACTIVE_PROXIES[*]}"

for (( rep=1; rep<=REPEAT; rep++ )); do
  for w in "${WORKLOAD_LIST[@]}"; do
    # Alternate which proxy goes first, so a drift in machine load does not always favour one.
    order=("${ACTIVE_PROXIES[@]}")
    if (( rep % 2 == 0 )); then
      order=()
      for (( i=${#ACTIVE_PROXIES[@]}-1; i>=0; i-- )); do order+=("${ACTIVE_PROXIES[$i]}"); done
    fi
    for p in "${order[@]}"; do
      port=$(proxy_port "$p")
      out="$WRK_OUT/$p-$w-$rep.txt"
      werrs=0
      if (( WARMUP > 0 )); then
        run_wrk "$w" "$port" "$WARMUP" "$out.warmup" || true
        for k in err_connect err_read err_write err_status err_timeout; do
          v=$(bench_field "$out.warmup" "$k"); werrs=$(( werrs + ${v:-0} ))
        done
        if (( werrs > 0 )); then
          printf '  note: %s %s warm-up had %d errors (%s)\n' "$p" "$w" "$werrs" \
            "$(grep -E 'Socket errors|Non-2xx' "$out.warmup" | tr -s ' ' | tr '\n' ';')" >&2
        fi
      fi
      read -r -a pids <<< "$(proxy_pids "$p")"
      read -r -a upids <<< "$(upstream_pids)"
      reset_peak_rss "${pids[@]}"
      m0=$(machine_busy_ticks)
      k0=$(children_ticks)
      c0=$(cpu_ticks "${pids[@]}")
      u0=$(cpu_ticks "${upids[@]}")
      wrk_rc=0
      run_wrk "$w" "$port" "$DURATION" "$out" || wrk_rc=$?
      c1=$(cpu_ticks "${pids[@]}")
      u1=$(cpu_ticks "${upids[@]}")
      k1=$(children_ticks)
      m1=$(machine_busy_ticks)
      # CPU used on the machine by anything but the proxy, the upstream and wrk (other
      # tenants, builds): a busy machine inflates CPU per request and latency.
      other=$(( (m1 - m0) - (c1 - c0) - (u1 - u0) - (k1 - k0) ))
      (( other < 0 )) && other=0
      rss=$(peak_rss_kib "${pids[@]}")
      pss=$(pss_kib "${pids[@]}")
      if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "run.sh: $p exited during $w" >&2
        FAILED=1
      fi
      req=$(bench_field "$out" requests); req=${req:-0}
      dur=$(bench_field "$out" duration_us); dur=${dur:-0}
      errs=0
      for k in err_connect err_read err_write err_status err_timeout; do
        v=$(bench_field "$out" "$k"); errs=$(( errs + ${v:-0} ))
      done
      if (( wrk_rc != 0 || req == 0 )); then
        echo "run.sh: wrk failed for $p $w (rc $wrk_rc); output in $out" >&2
        FAILED=1
        errs=$(( errs + 1 ))
      fi
      ROWS+=("$p $w $rep $req $dur $(( c1 - c0 )) $(( u1 - u0 )) $rss \
$(bench_field "$out" p50_us) $(bench_field "$out" p90_us) $(bench_field "$out" p99_us) \
$(bench_field "$out" p999_us) $(bench_field "$out" max_us) $errs $(( k1 - k0 )) $other $pss $werrs")
      printf '  measured %-12s %-6s rep %d: %s requests\n' "$p" "$w" "$rep" "$req" >&2
    done
  done
done

NGINX_BODY_TEMPFILES=$(grep -c 'client request body is buffered to a temporary file' \
  "$NG_DIR/error.log" 2>/dev/null || true)
NGINX_RESPONSE_TEMPFILES=$(grep -c 'upstream response is buffered to a temporary file' \
  "$NG_DIR/error.log" 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------
# Report.

AWK_ROWS=$(printf '%s\n' "${ROWS[@]}")

printf '\n'
awk -v tck="$CLK_TCK" -v ncpu="$(nproc)" '
  BEGIN {
    printf "%-12s %-20s %3s %8s %10s %10s %8s %8s %8s %7s %7s %6s %6s\n", "proxy", "workload", "rep",
      "req/s", "cpu us/req", "upstr us/r", "p50 ms", "p99 ms", "max ms", "rss MiB", "pss MiB",
      "other%", "errors"
  }
  {
    desc = ($2 == "get1k") ? "GET 1 KiB, 64 conns" : ($2 == "get1m") ? "GET 1 MiB, 8 conns" : "PUT 1 MiB, 8 conns"
    rps = ($5 > 0) ? $4 / ($5 / 1e6) : 0
    cpu = ($4 > 0) ? $6 * 1e6 / tck / $4 : 0
    up = ($4 > 0) ? $7 * 1e6 / tck / $4 : 0
    other = ($5 > 0) ? 100 * ($16 / tck) / ($5 / 1e6) / ncpu : 0
    printf "%-12s %-20s %3d %8.0f %10.1f %10.1f %8.2f %8.2f %8.2f %7.1f %7.1f %6.0f %6d\n", $1,
      desc, $3, rps, cpu, up, $9 / 1000, $11 / 1000, $13 / 1000, $8 / 1024, $17 / 1024, other, $14
  }' <<< "$AWK_ROWS"
printf '(other%%: share of the machine used by processes other than the proxy, upstream and wrk)\n'


# Verdict per workload: mean over repeats; target cpu(miproxy) <= 0.8 x cpu(nginx) and
# p99(miproxy) <= p99(nginx).
VERDICT=$(awk -v tck="$CLK_TCK" -v ncpu="$(nproc)" '
  $4 > 0 && $14 == 0 {
    key = $1 SUBSEP $2
    n[key]++; cpu[key] += $6 * 1e6 / tck / $4; p99[key] += $11
    seen[$2] = 1
    o = 100 * ($16 / tck) / ($5 / 1e6) / ncpu
    if (o > other[$2]) other[$2] = o
  }
  END {
    for (w in seen) {
      kn = "nginx" SUBSEP w; km = "miproxy" SUBSEP w
      if (!(kn in n) || !(km in n)) continue
      cn = cpu[kn] / n[kn]; cm = cpu[km] / n[km]
      pn = p99[kn] / n[kn]; pm = p99[km] / n[km]
      ok = (cm <= 0.8 * cn && pm <= pn) ? "MEETS" : "MISSES"
      printf "%s %.1f %.1f %.3f %.0f %.0f %.3f %s %.0f\n", w, cn, cm, cm / cn, pn, pm, pm / pn, ok,
        other[w]
    }
  }' <<< "$AWK_ROWS" | sort)

if [[ -n "$VERDICT" ]]; then
  printf '\ntarget: miproxy CPU/request <= 0.8 x nginx and p99 <= nginx (means over repeats)\n'
  awk '{
    printf "  %-6s cpu us/req nginx %8.1f  miproxy %8.1f  ratio %5.2f | p99 ms nginx %7.2f  miproxy %7.2f  ratio %5.2f  %s%s\n",
      $1, $2, $3, $4, $5 / 1000, $6 / 1000, $7, $8,
      ($9 > 20 ? sprintf(" (noisy: other load up to %d%%)", $9) : "")
  }' <<< "$VERDICT"
fi
if [[ "${NGINX_BODY_TEMPFILES:-0}" != 0 || "${NGINX_RESPONSE_TEMPFILES:-0}" != 0 ]]; then
  printf '\nnote: the nginx proxy wrote %s request bodies and %s responses to temporary files\n' \
    "${NGINX_BODY_TEMPFILES:-0}" "${NGINX_RESPONSE_TEMPFILES:-0}"
  printf '      (its default client_body_buffer_size / proxy_buffers; counted in its CPU)\n'
fi
if (( ! HWM_RESET_OK )); then
  printf '\nnote: could not reset VmHWM; peak RSS is since process start\n'
fi

# JSON.
mkdir -p "$OUTDIR"
JSON="$OUTDIR/$TS.json"
json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
  printf '{\n'
  printf '  "timestamp": %s,\n' "$(json_str "$TS")"
  printf '  "machine": { "cpus": %d, "cpu_model": %s, "kernel": %s, "clk_tck": %d },\n' \
    "$(nproc)" "$(json_str "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)")" \
    "$(json_str "$(uname -r)")" "$CLK_TCK"
  printf '  "versions": { "nginx": %s, "wrk": %s, "openssl": %s, "miproxy": %s, "git": %s },\n' \
    "$(json_str "$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')")" \
    "$(json_str "$(wrk -v 2>&1 | head -n 1 | awk '{print $2}')")" \
    "$(json_str "$(openssl version)")" "$(json_str "$MIPROXY_VERSION")" \
    "$(json_str "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || true)")"
  printf '  "params": { "duration_s": %d, "warmup_s": %d, "repeat": %d, "wrk_threads": 2 },\n' \
    "$DURATION" "$WARMUP" "$REPEAT"
  printf '  "nginx_request_bodies_to_tempfile": %d,\n' "${NGINX_BODY_TEMPFILES:-0}"
  printf '  "nginx_responses_to_tempfile": %d,\n' "${NGINX_RESPONSE_TEMPFILES:-0}"
  printf '  "loadavg_end": %s,\n' "$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")"
  printf '  "results": [\n'
  awk -v tck="$CLK_TCK" '
    {
      rps = ($5 > 0) ? $4 / ($5 / 1e6) : 0
      cpu = ($4 > 0) ? $6 * 1e6 / tck / $4 : 0
      up = ($4 > 0) ? $7 * 1e6 / tck / $4 : 0
      conns = ($2 == "get1k") ? 64 : 8
      printf "%s    { \"proxy\": \"%s\", \"workload\": \"%s\", \"repeat\": %d, \"connections\": %d, " \
        "\"requests\": %d, \"wrk_duration_us\": %d, \"requests_per_s\": %.1f, " \
        "\"cpu_s\": %.2f, \"cpu_us_per_request\": %.2f, \"upstream_cpu_us_per_request\": %.2f, " \
        "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"p999_us\": %d, \"max_us\": %d, " \
        "\"peak_rss_kib\": %d, \"pss_kib_after\": %d, \"errors\": %d, \"warmup_errors\": %d, \"wrk_cpu_s\": %.2f, \"other_cpu_s\": %.2f }",
        (NR > 1 ? ",\n" : ""), $1, $2, $3, conns,
        $4, $5, rps, $6 / tck, cpu, up, $9, $10, $11, $12, $13, $8, $17, $14, $18, $15 / tck, $16 / tck
    }
    END { printf "\n" }' <<< "$AWK_ROWS"
  printf '  ],\n'
  printf '  "comparison": [\n'
  if [[ -n "$VERDICT" ]]; then
    awk '{
      printf "%s    { \"workload\": \"%s\", \"nginx_cpu_us_per_request\": %s, " \
        "\"miproxy_cpu_us_per_request\": %s, \"cpu_ratio\": %s, \"nginx_p99_us\": %s, " \
        "\"miproxy_p99_us\": %s, \"p99_ratio\": %s, \"target\": \"%s\", " \
        "\"max_other_load_pct\": %s }",
        (NR > 1 ? ",\n" : ""), $1, $2, $3, $4, $5, $6, $7, $8, $9
    } END { printf "\n" }' <<< "$VERDICT"
  fi
  printf '  ]\n'
  printf '}\n'
} > "$JSON"
printf '\nwrote %s\n' "$JSON"

exit "$FAILED"
