#!/usr/bin/env bash
# Where the time of a bulk ingest through a proxy with a replica goes (issue 17, part 3): one
# primary (CPU 0, with the client), one replica and the proxy (CPU 1), as the bench's pinned
# mode; BENCH_PROBE_RECORDS (5,000) records of 384-d in batches of 500, through the proxy with
# the replica as it is, with the replica reniced to 19 (so that it never delays the proxy on
# their shared core), and with the replica stopped; then the proxy's WAL append and request
# histograms, and each Chroma server's CPU and off-CPU time (sleeping: disk, locks, network)
# over each run. BENCH_PIN=0 runs it unpinned; BENCH_PROBE_SHM="primary replica" puts those
# servers' data in /dev/shm (tmpfs: no disk); BENCH_PROBE_RUNS picks runs
# (direct solo replica niced stopped). BENCH_PROXY_ENV (stack.sh) tries allocator settings.
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_PIN="${BENCH_PIN:-1}"
N="${BENCH_PROBE_RECORDS:-5000}"
source scripts/bench/stack.sh
[ "$BENCH_PIN" = 1 ] && taskset -cp 0 $$ > /dev/null
RUNS="${BENCH_PROBE_RUNS:-direct solo replica niced stopped}"
for name in ${BENCH_PROBE_SHM:-}; do
  mkdir -p "$WORK/$name" "/dev/shm/${WORK##*/}-$name"
  ln -s "/dev/shm/${WORK##*/}-$name" "$WORK/$name/data"
done
trap 'cleanup; rm -rf /dev/shm/"${WORK##*/}"-*' EXIT
start_chroma primary 0; PRIMARY="http://127.0.0.1:$PORT" PRIMARY_PID=$CHROMA_PID
start_chroma replica; REPLICA="http://127.0.0.1:$PORT" REPLICA_PID=$CHROMA_PID
start_proxy solo PRIMARY_URL="$PRIMARY"
SOLO=$PROXY SOLO_PID=$PROXY_PID
start_proxy proxy PRIMARY_URL="$PRIMARY" REPLICA_URL="$REPLICA" READ_REPLICA_RATIO=0
PROXY_ONE_PID=$PROXY_PID
proxy_pid() { if [ "$1" = "$SOLO" ]; then echo "$SOLO_PID"; else echo "$PROXY_ONE_PID"; fi; }
BULK="$VENV/bin/python scripts/bench/bulk.py"
metrics() {
  { curl -sf "$1/metrics" || true; } | awk '/^chroma_ha_wal_append_seconds_(sum|count)/ || /^chroma_ha_request_seconds_(sum|count).*write/ { print "  " $0 }'
}
run() {
  local label=$1 url=$2 name=$3 before started out spent
  shift 3
  case " $RUNS " in *" $label "*) ;; *) return 0 ;; esac
  before=$(sched_now "$PRIMARY_PID" "$REPLICA_PID") started=$(date +%s.%N)
  out=$($BULK "$url" "$name" "$N" 384 500 "$@")
  read -ra spent <<< "$(sched_since "$before" "$PRIMARY_PID" "$REPLICA_PID")"
  printf '%-8s %s\n' "$label" "$out"
  printf '  %.1f s wall; primary on CPU %.1f s, waiting for CPU %.1f s; replica on CPU %.1f s, waiting for CPU %.1f s\n' \
    "$(echo "$(date +%s.%N) - $started" | bc)" "${spent[@]}"
  metrics "$url"
  [ "$url" = "$PRIMARY" ] || echo "  proxy RSS $(rss_mb "$(proxy_pid "$url")") MB (anonymous $(anon_mb "$(proxy_pid "$url")") MB), peak $(hwm_mb "$(proxy_pid "$url")") MB"
}
run direct "$PRIMARY" probe-d1
run solo "$SOLO" probe-s1
run replica "$PROXY" probe-r1 --replica "$REPLICA" --primary "$PRIMARY" --proxy "$PROXY"
NICE=$(ps -o ni= -p "$REPLICA_PID" | tr -d ' ')
renice -n 19 -p $(ls /proc/"$REPLICA_PID"/task) > /dev/null
run niced "$PROXY" probe-r2 --replica "$REPLICA" --primary "$PRIMARY" --proxy "$PROXY"
renice -n "$NICE" -p $(ls /proc/"$REPLICA_PID"/task) > /dev/null
kill -STOP "$REPLICA_PID"
run stopped "$PROXY" probe-r3
kill -CONT "$REPLICA_PID"
run direct "$PRIMARY" probe-d2
