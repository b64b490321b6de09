#!/usr/bin/env bash
# Runs a local stack: two Chroma servers (primary and replica) and chroma-ha in front of them
# (WAL in an embedded SQLite file),
# with data and logs under .dev/. Prints the proxy URL; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PRIMARY_PORT="${PRIMARY_PORT:-8001}"
REPLICA_PORT="${REPLICA_PORT:-8002}"
LISTEN_ADDR="${LISTEN_ADDR:-127.0.0.1:8080}"
DEV="$PWD/.dev"

VENV="$(scripts/setup-venv.sh)"
cargo build --release --quiet
mkdir -p "$DEV"

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for role in primary replica; do
  port=$PRIMARY_PORT; [ "$role" = replica ] && port=$REPLICA_PORT
  mkdir -p "$DEV/$role"
  printf 'port: %s\nlisten_address: "127.0.0.1"\npersist_path: "%s"\nallow_reset: true\n' \
    "$port" "$DEV/$role/data" > "$DEV/$role/config.yaml"
  ANONYMIZED_TELEMETRY=False "$VENV/bin/chroma" run "$DEV/$role/config.yaml" > "$DEV/$role/chroma.log" 2>&1 &
  pids+=($!)
done
for port in "$PRIMARY_PORT" "$REPLICA_PORT"; do
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$port/api/v2/heartbeat" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/api/v2/heartbeat" >/dev/null || { echo "chroma on port $port did not start; see $DEV" >&2; exit 1; }
done

export ADMIN_TOKEN="${ADMIN_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
PRIMARY_URL="http://127.0.0.1:$PRIMARY_PORT" REPLICA_URL="http://127.0.0.1:$REPLICA_PORT" \
  LISTEN_ADDR="$LISTEN_ADDR" RUST_LOG="${RUST_LOG:-info}" DATABASE_URL="${DATABASE_URL:-$DEV/chroma-ha-wal.sqlite}" \
  target/release/chroma-ha > >(tee "$DEV/proxy.log") 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://$LISTEN_ADDR/health" >/dev/null && break
  sleep 0.1
done
echo
echo "chroma-ha proxy:  http://$LISTEN_ADDR   (primary :$PRIMARY_PORT, replica :$REPLICA_PORT)"
echo "admin token:      $ADMIN_TOKEN"
echo "status:           curl http://$LISTEN_ADDR/status"
echo "Ctrl-C stops the stack; data and logs stay in .dev/"
wait "${pids[-1]}"
