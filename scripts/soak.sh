#!/usr/bin/env bash
# Soak (release build): mixed queries and single-record adds through the proxy (SQLite WAL, one
# replica) at SOAK_CONNS connections (default 32), sampling the proxy's RSS every 5 s.
#   phase 1: SOAK_MINUTES minutes (default 10) with both instances up;
#   phase 2: the replica killed, until SOAK_BACKLOG entries (default 100000) wait for it, or
#            SOAK_BACKLOG_MINUTES (default 120) have passed.
# Per phase it prints requests, failed requests, and RSS: median of the first and of the last
# minute, maximum, the least-squares trend after the first minute in MB per 10 minutes, and the
# anonymous part of RSS (heap and stacks, without the binary's and libraries' pages).
#   scripts/soak.sh
#   SOAK_MINUTES=1 SOAK_BACKLOG=5000 scripts/soak.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${SOAK_MINUTES:-10}"
BACKLOG="${SOAK_BACKLOG:-100000}"
CONNS="${SOAK_CONNS:-32}"
SHARE="${SOAK_WRITE_SHARE:-0.5}"
source scripts/bench/stack.sh

start_chroma primary; PRIMARY="http://127.0.0.1:$PORT"
start_chroma replica; REPLICA_PID=${pids[-1]}; REPLICA="http://127.0.0.1:$PORT"
start_proxy proxy PRIMARY_URL="$PRIMARY" REPLICA_URL="$REPLICA"
COLL="/api/v2/tenants/default_tenant/databases/default_database/collections"
SEED="$VENV/bin/python scripts/bench/seed.py"
READ_ID="$($SEED "$PROXY" soak-read 1000 32 "$WORK/query.json")"
WRITE_ID="$($SEED "$PROXY" soak-write 1 32 /dev/null)"

pending() {
  curl -sf "$PROXY/wal/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_writes"])'
}

# phase NAME SECONDS [MIN_BACKLOG]: the mixed load for SECONDS, or until MIN_BACKLOG entries
# are pending; then one summary line.
phase() {
  local name=$1 seconds=$2 backlog=${3:-} started load
  : > "$WORK/$name.rss"
  (RUN="$name$RANDOM" WRITE_SHARE="$SHARE" DIM=32 QUERY_FILE="$WORK/query.json" \
    QUERY_PATH="$COLL/$READ_ID/query" ADD_PATH="$COLL/$WRITE_ID/add" \
    exec wrk -t2 -c"$CONNS" -d"${seconds}s" -s scripts/bench/load.lua "$PROXY" > "$WORK/$name.wrk") &
  load=$!
  started=$(date +%s)
  while kill -0 "$load" 2>/dev/null; do
    echo "$(( $(date +%s) - started )) $(rss_mb "$PROXY_PID") $(pending) $(anon_mb "$PROXY_PID")" >> "$WORK/$name.rss"
    if [ -n "$backlog" ] && [ "$(pending)" -ge "$backlog" ]; then
      kill -INT "$load"  # wrk prints its summary on SIGINT
    fi
    sleep 5
  done
  wait "$load" || true
  python3 - "$name" "$WORK/$name.rss" "$WORK/$name.wrk" <<'PY'
import re, statistics, sys
name, samples, wrk = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
rows = [tuple(map(float, line.split())) for line in open(samples) if line.strip()]
t = [r[0] for r in rows]; rss = [r[1] for r in rows]
first = statistics.median([r[1] for r in rows if r[0] < 60])
last = statistics.median([r[1] for r in rows if r[0] >= t[-1] - 60])
anon_first = statistics.median([r[3] for r in rows if r[0] < 60])
anon_last = statistics.median([r[3] for r in rows if r[0] >= t[-1] - 60])
# The trend leaves out the first minute (pools and caches filling up) when there is more.
steady = [(r[0], r[1]) for r in rows if r[0] >= 60] if sum(1 for s in t if s >= 60) >= 3 else list(zip(t, rss))
mt, mr = statistics.mean(s for s, _ in steady), statistics.mean(m for _, m in steady)
slope = sum((a - mt) * (b - mr) for a, b in steady) / sum((a - mt) ** 2 for a, _ in steady)
requests = re.search(r"(\d+) requests in ([\d.]+)(\w+)", wrk)
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
errors = re.search(r"Socket errors: (.*)", wrk)
print(f"{name}: {t[-1] / 60:.1f} min, {requests.group(1)} requests, "
      f"non-2xx {bad.group(1) if bad else 0}, socket errors: {errors.group(1) if errors else 'none'}, "
      f"pending at end {int(rows[-1][2])}; RSS MB first minute {first:.1f}, last minute {last:.1f}, "
      f"max {max(rss):.1f}, trend {slope * 600:+.2f} MB/10 min ({len(rows)} samples); "
      f"anonymous memory first minute {anon_first:.1f}, last minute {anon_last:.1f}")
PY
}

echo "chroma-ha soak, $(date -u +%Y-%m-%d), $(nproc) cores, $CONNS connections, write share $SHARE"
echo "proxy RSS at rest: $(rss_mb "$PROXY_PID") MB"
phase mixed $(( MINUTES * 60 ))
{ kill -9 "$REPLICA_PID" && wait "$REPLICA_PID"; } 2>/dev/null || true
phase replica-down $(( ${SOAK_BACKLOG_MINUTES:-120} * 60 )) "$BACKLOG"
