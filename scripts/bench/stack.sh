# Sourced by scripts/bench.sh and scripts/soak.sh: builds the release proxy, makes $WORK, and
# defines the helpers that start real Chroma servers, PostgreSQL and proxies in it. Everything
# started is stopped and $WORK removed when the sourcing script exits.
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
VENV="$(scripts/setup-venv.sh)"
cargo build --release --quiet
WORK="$(mktemp -d /tmp/chroma-ha-bench.XXXXXX)"
chmod 755 "$WORK"  # PostgreSQL runs as its own user and must reach its directory
pids=()
PG_CTL=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ ${#PG_CTL[@]} -gt 0 ] && "${PG_CTL[@]}" -m immediate stop > /dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {
  for _ in $(seq 1 300); do
    curl -sf "$1" >/dev/null && return 0
    sleep 0.1
  done
  echo "bench: $1 did not come up" >&2
  exit 1
}

# start_chroma NAME: starts a Chroma server, sets $PORT.
start_chroma() {
  PORT="$(free_port)"
  mkdir -p "$WORK/$1"
  printf 'port: %s\nlisten_address: "127.0.0.1"\npersist_path: "%s"\nallow_reset: true\n' \
    "$PORT" "$WORK/$1/data" > "$WORK/$1/config.yaml"
  ANONYMIZED_TELEMETRY=False "$VENV/bin/chroma" run "$WORK/$1/config.yaml" > "$WORK/$1/log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$PORT/api/v2/heartbeat"
}

# start_postgres: initdb + pg_ctl in $WORK on a free port, sets $PG_URL.
start_postgres() {
  local bin port
  bin="$(dirname "$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")"
  port="$(free_port)"
  mkdir -p "$WORK/pg"
  local as=()
  [ "$(id -u)" = 0 ] && { chown postgres "$WORK/pg"; as=(runuser -u postgres --); }
  "${as[@]}" "$bin/initdb" -A trust -U postgres --no-sync -D "$WORK/pg/data" > /dev/null
  "${as[@]}" "$bin/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $port -k $WORK/pg -c listen_addresses=127.0.0.1" start > /dev/null
  PG_CTL=("${as[@]}" "$bin/pg_ctl" -D "$WORK/pg/data")
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# start_proxy NAME VAR=VALUE...: starts the release proxy (or $CHROMA_HA_BIN, to compare two
# builds) with these settings in $WORK/NAME, sets $PROXY and $PROXY_PID.
start_proxy() {
  local port name=$1
  shift
  port="$(free_port)"
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && exec env "$@" LISTEN_ADDR="127.0.0.1:$port" RUST_LOG=warn "${CHROMA_HA_BIN:-$OLDPWD/target/release/chroma-ha}") > "$WORK/$name/log" 2>&1 &
  PROXY_PID=$!
  pids+=($PROXY_PID)
  PROXY="http://127.0.0.1:$port"
  wait_http "$PROXY/health"
}

# start_nginx UPSTREAM_URL: nginx (one worker, keep-alive to the upstream) in front of
# UPSTREAM_URL, sets $NGINX. A reference hop: what any reverse proxy costs on this machine.
start_nginx() {
  if ! command -v nginx >/dev/null; then
    apt-get install -y -qq nginx-light >/dev/null 2>&1 || return 1
    service nginx stop >/dev/null 2>&1 || true  # the package starts one on port 80
  fi
  local port
  port="$(free_port)"
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  client_max_body_size 40m;
  upstream chroma { server ${1#http://}; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / { proxy_pass http://chroma; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  nginx -c "$WORK/nginx/nginx.conf" 2> "$WORK/nginx/log" &
  pids+=($!)
  NGINX="http://127.0.0.1:$port"
  wait_http "$NGINX/api/v2/heartbeat"
}

# rss_mb PID: resident set size of a process, in MB.
rss_mb() {
  awk '/VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}

# anon_mb PID: the anonymous part of its RSS (heap, stacks), in MB.
anon_mb() {
  awk '/RssAnon/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}
