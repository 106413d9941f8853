# bench/lib.sh: setup shared by bench/run.sh and bench/profile.sh (sourced, not run).
#
# The caller sets BENCH_NAME (for messages) and KEEP_TMP, then calls, in order:
#   bench_setup_tmp               temp dir + EXIT/INT trap that stops every started PID
#   bench_make_pki_and_token      $CA (test CA + server cert for 127.0.0.1) and $TOKEN/$TMP/token
#   bench_make_upstream           free ports UP_PORT and SINK_PORT, $UP_DIR/nginx.conf
#   start_nginx DIR PORT          starts an nginx, sets STARTED_NGINX_PID
#   bench_write_miproxy_config FILE PORT WORKERS
# Everything listens on 127.0.0.1; only PIDs recorded in STARTED_PIDS are ever stopped.

BENCH_NAME=${BENCH_NAME:-bench}
KEEP_TMP=${KEEP_TMP:-0}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: only what this script starts is ever stopped, by PID.

STARTED_PIDS=()
TMP=""

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local i
  # Stop in reverse start order (an nginx master before the workers recorded after it).
  for (( i=${#STARTED_PIDS[@]}-1; i>=0; i-- )); do
    stop_pid "${STARTED_PIDS[$i]}"
  done
  if [[ -n "$TMP" && -d "$TMP" ]]; then
    if (( KEEP_TMP )); then
      echo "$BENCH_NAME: kept $TMP (contains a dummy token and test keys)" >&2
    else
      rm -rf "$TMP"
    fi
  fi
}

bench_setup_tmp() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  TMP=$(mktemp -d /tmp/miproxy-bench.XXXXXX)
  # nginx workers run as an unprivileged user when started as root: let them traverse the
  # directory and read the static files (the token and keys stay private, read by the masters).
  chmod 711 "$TMP"
}

port_in_use() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
taken_ports=" "
free_port() {  # free_port VAR: sets VAR to a free loopback port not handed out before
  local p i
  for i in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 40000 ))
    if [[ "$taken_ports" != *" $p "* ]] && ! port_in_use "$p"; then
      taken_ports+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  echo "$BENCH_NAME: no free port found" >&2
  exit 1
}

wait_port() {  # wait_port PORT PID SECONDS
  local port=$1 pid=$2 secs=$3 i
  for (( i=0; i<secs*20; i++ )); do
    kill -0 "$pid" 2>/dev/null || return 1
    port_in_use "$port" && return 0
    sleep 0.05
  done
  return 1
}

child_pids() { pgrep -P "$1" 2>/dev/null | tr '\n' ' ' || true; }

# Test PKI: a CA and a server certificate for 127.0.0.1 / localhost; a dummy token.
bench_make_pki_and_token() {
  local now jwt_header jwt_payload
PKI="$TMP/pki"
mkdir -p "$PKI"
(
  cd "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=miproxy bench CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=127.0.0.1" -keyout server.key -out server.csr 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost" > server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null
)
CA="$PKI/ca.pem"

# A dummy JWT (alg none) with exp one hour ahead: token_file takes its expiry from exp.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
jwt_header=$(printf '{"alg":"none","typ":"JWT"}' | b64url)
jwt_payload=$(printf '{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/00000000-0000-0000-0000-000000000000/","iat":%d,"nbf":%d,"exp":%d}' \
  "$now" "$now" $(( now + 3600 )) | b64url)
TOKEN="$jwt_header.$jwt_payload.$(printf 'bench-signature' | b64url)"
printf '%s' "$TOKEN" > "$TMP/token"
chmod 600 "$TMP/token"
}


nginx_common() {  # nginx_common DIR
  local d=$1
  mkdir -p "$d/tmp"
  cat <<EOF
worker_processes 1;
master_process on;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_temp_paths() {  # nginx_temp_paths DIR
  local d=$1
  cat <<EOF
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
EOF
}

# Upstream: nginx, one worker, HTTPS with keep-alive; /1k and /1m static; PUT /upload reads the
# whole body (the proxy module reads it before contacting its upstream) and answers 200 "ok".
# It answers 401 unless the request carries the bearer token, so a proxy that does not inject
# it shows up as errors.
bench_make_upstream() {
WWW="$TMP/www"
mkdir -p "$WWW"
head -c 1024 /dev/zero | tr '\0' 'a' > "$WWW/1k"
head -c 1048576 /dev/zero | tr '\0' 'b' > "$WWW/1m"
chmod 755 "$WWW"
chmod 644 "$WWW/1k" "$WWW/1m"
  free_port UP_PORT
  free_port SINK_PORT
UP_DIR="$TMP/upstream"
mkdir -p "$UP_DIR"
{
  nginx_common "$UP_DIR"
  cat <<EOF
http {
  access_log off;
$(nginx_temp_paths "$UP_DIR")
  default_type application/octet-stream;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  upstream sink {
    server 127.0.0.1:$SINK_PORT;
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$UP_PORT ssl;
    ssl_certificate $PKI/server.pem;
    ssl_certificate_key $PKI/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench_up:1m;
    root $WWW;
    if (\$http_authorization != "Bearer $TOKEN") {
      return 401;
    }
    location / {
    }
    location = /upload {
      client_max_body_size 2m;
      client_body_buffer_size 2m;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header Authorization "";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://sink/ok;
    }
  }
  server {
    listen 127.0.0.1:$SINK_PORT;
    keepalive_requests 1000000;
    location / {
      return 200 "ok\n";
    }
  }
}
EOF
} > "$UP_DIR/nginx.conf"
}

# bench_write_miproxy_config FILE PORT WORKERS: one token_file identity, one route / to the
# upstream, log level warn (access lines are info, so silenced).
bench_write_miproxy_config() {
  local file=$1 port=$2 workers=$3
cat > "$file" <<EOF
{
  "listeners": [ { "address": "127.0.0.1:$port" } ],
  "workers": $workers,
  "log": { "level": "warn" },
  "tls": { "ca_file": "$CA" },
  "identities": { "t": { "type": "token_file", "path": "$TMP/token" } },
  "routes": [
    {
      "name": "bench",
      "match": { "path_prefix": "/" },
      "upstream": "https://127.0.0.1:$UP_PORT",
      "identity": "t",
      "scope": "https://storage.azure.com/.default",
      "tls": { "ca_file": "$CA" }
    }
  ]
}
EOF
}

start_nginx() {  # start_nginx DIR PORT -> sets STARTED_NGINX_PID
  local d=$1 port=$2 pid w
  "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" > "$d/stdout.log" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  if ! wait_port "$port" "$pid" 10; then
    echo "$BENCH_NAME: nginx in $d did not start; its error log:" >&2
    tail -n 20 "$d/error.log" "$d/stdout.log" >&2 || true
    exit 1
  fi
  for w in $(child_pids "$pid"); do STARTED_PIDS+=("$w"); done
  STARTED_NGINX_PID=$pid
}
