#!/usr/bin/env bash
# Where the time of a bulk ingest through a proxy with a replica goes (issue 17, part 3): one
# primary (CPU 0, with the client), one replica and the proxy (CPU 1), as the bench's pinned
# mode; BENCH_PROBE_RECORDS (5,000) records of 384-d in batches of 500, through the proxy with
# the replica as it is, with the replica reniced to 19 (so that it never delays the proxy on
# their shared core), and with the replica stopped; then the proxy's WAL append and request
# histograms. BENCH_PIN=0 runs it unpinned.
set -euo pipefail
cd "$(dirname "$0")/../.."
export BENCH_PIN="${BENCH_PIN:-1}"
N="${BENCH_PROBE_RECORDS:-5000}"
source scripts/bench/stack.sh
[ "$BENCH_PIN" = 1 ] && taskset -cp 0 $$ > /dev/null
start_chroma primary 0; PRIMARY="http://127.0.0.1:$PORT" PRIMARY_PID=$CHROMA_PID
start_chroma replica; REPLICA="http://127.0.0.1:$PORT" REPLICA_PID=$CHROMA_PID
start_proxy solo PRIMARY_URL="$PRIMARY"
SOLO=$PROXY
start_proxy proxy PRIMARY_URL="$PRIMARY" REPLICA_URL="$REPLICA" READ_REPLICA_RATIO=0
BULK="$VENV/bin/python scripts/bench/bulk.py"
metrics() {
  curl -sf "$1/metrics" | awk '/^chroma_ha_wal_append_seconds_(sum|count)/ || /^chroma_ha_request_seconds_(sum|count).*write/ { print "  " $0 }'
}
run() {
  local label=$1 url=$2 name=$3
  shift 3
  printf '%-40s %s\n' "$label" "$($BULK "$url" "$name" "$N" 384 500 "$@")"
  metrics "$url"
}
run "direct" "$PRIMARY" d1
run "proxy, no replica" "$SOLO" s1
run "proxy + replica" "$PROXY" r1 --replica "$REPLICA" --primary "$PRIMARY" --proxy "$PROXY"
NICE=$(ps -o ni= -p "$REPLICA_PID" | tr -d ' ')
renice -n 19 -p $(ls /proc/"$REPLICA_PID"/task) > /dev/null
run "proxy + replica reniced 19" "$PROXY" r2 --replica "$REPLICA" --primary "$PRIMARY" --proxy "$PROXY"
renice -n "$NICE" -p $(ls /proc/"$REPLICA_PID"/task) > /dev/null
kill -STOP "$REPLICA_PID"
run "proxy + replica stopped" "$PROXY" r3
kill -CONT "$REPLICA_PID"
run "direct, again" "$PRIMARY" d2
