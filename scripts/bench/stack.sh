# Sourced by scripts/bench.sh and scripts/soak.sh: builds the release proxy, makes $WORK, and
# defines the helpers that start real Chroma servers, PostgreSQL and proxies in it. Everything
# started is stopped and $WORK removed when the sourcing script exits.
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
VENV="$(scripts/setup-venv.sh)"
cargo build --release --quiet
CHROMA_HA_RELEASE="${CARGO_TARGET_DIR:-$PWD/target}/release"
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

# on CPU CMD...: execs CMD on that CPU alone when BENCH_PIN=1 (the pinned mode: the client, the
# direct Chroma and the primary on CPU 0; the replicas, PostgreSQL and the proxies on CPU 1, as
# if the replica and the proxy had a machine of their own); else runs it as it is.
on() {
  local cpu=$1
  shift
  if [ "${BENCH_PIN:-0}" = 1 ]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi
}
# PIN1: the prefix that puts a command on CPU 1 in the pinned mode (nothing otherwise).
PIN1=()
[ "${BENCH_PIN:-0}" = 1 ] && PIN1=(taskset -c 1)

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

# start_chroma NAME [CPU]: starts a Chroma server (pinned to CPU, default 1, in the pinned
# mode), sets $PORT and $CHROMA_PID.
start_chroma() {
  PORT="$(free_port)"
  mkdir -p "$WORK/$1"
  printf 'port: %s\nlisten_address: "127.0.0.1"\npersist_path: "%s"\nallow_reset: true\n' \
    "$PORT" "$WORK/$1/data" > "$WORK/$1/config.yaml"
  (export ANONYMIZED_TELEMETRY=False; on "${2:-1}" "$VENV/bin/chroma" run "$WORK/$1/config.yaml") > "$WORK/$1/log" 2>&1 &
  CHROMA_PID=$!
  pids+=($CHROMA_PID)
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
  "${PIN1[@]}" "${as[@]}" "$bin/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $port -k $WORK/pg -c listen_addresses=127.0.0.1" start > /dev/null
  PG_CTL=("${as[@]}" "$bin/pg_ctl" -D "$WORK/pg/data")
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# start_proxy NAME VAR=VALUE...: starts the release proxy (or $CHROMA_HA_BIN, to compare two
# builds) with these settings in $WORK/NAME (on CPU 1 in the pinned mode; RUST_LOG is
# $BENCH_RUST_LOG, default warn; $BENCH_PROXY_ENV, VAR=VALUE words, is added to every proxy's
# environment, e.g. to try an allocator setting), sets $PROXY and $PROXY_PID.
start_proxy() {
  local port name=$1
  shift
  port="$(free_port)"
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && exec env "$@" ${BENCH_PROXY_ENV:-} LISTEN_ADDR="127.0.0.1:$port" RUST_LOG="${BENCH_RUST_LOG:-warn}" "${PIN1[@]}" "${CHROMA_HA_BIN:-$CHROMA_HA_RELEASE/chroma-ha}") > "$WORK/$name/log" 2>&1 &
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
  "${PIN1[@]}" nginx -c "$WORK/nginx/nginx.conf" 2> "$WORK/nginx/log" &
  pids+=($!)
  NGINX="http://127.0.0.1:$port"
  wait_http "$NGINX/api/v2/heartbeat"
}

# rss_mb PID: resident set size of a process, in MB.
rss_mb() {
  awk '/VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}

# hwm_mb PID: the peak of its resident set size (VmHWM), in MB; reset_hwm PID starts the peak
# again from the current RSS (Linux 4.0 and later).
hwm_mb() {
  awk '/VmHWM/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}
reset_hwm() {
  echo 5 > "/proc/$1/clear_refs"
}

# sched_now PID...: for each process, the seconds its threads (those alive now) have run on a
# CPU and have waited runnable for one (schedstat); sched_since "$(sched_now PID...)" PID...:
# the same, counted from that snapshot. A thread that ends while it is read is left out.
sched_now() {
  for pid in "$@"; do
    { cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true; } | awk '{ r += $1; w += $2 } END { printf "%.2f %.2f ", r / 1e9, w / 1e9 }'
  done
}
sched_since() {
  local before=$1
  shift
  echo "$(sched_now "$@") $before" | awk '{ n = NF / 2; for (i = 1; i <= n; i++) printf "%.2f ", $i - $(i + n) }'
}

# anon_mb PID: the anonymous part of its RSS (heap, stacks), in MB.
anon_mb() {
  awk '/RssAnon/ { printf "%.1f\n", $2 / 1024 }' "/proc/$1/status"
}
