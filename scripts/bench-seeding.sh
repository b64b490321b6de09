#!/usr/bin/env bash
# Seeding and verification throughput (DESIGN 13), measured in one run on this machine:
#   1. a direct bulk copy of a collection between two Chroma servers (scripts/bench/bulk_copy.py:
#      ids listed, records read by id and upserted in pages of 1,000, as seeding does);
#   2. chroma-ha seeding the same collection into an empty replica (SEED_RATE=0);
#   3. a verification of the seeded pair, unpaced (VERIFY_RATE=1000000);
#   4. a verification of a BENCH_VERIFY_RECORDS-record collection (written straight on both),
#      unpaced and at the default VERIFY_RATE=5000.
#
#   scripts/bench-seeding.sh
#   BENCH_SEED_RECORDS=20000 BENCH_SEED_DIM=384 BENCH_VERIFY_RECORDS=100000 scripts/bench-seeding.sh
#   BENCH_VERIFY_RECORDS=0 scripts/bench-seeding.sh    # steps 1 to 3 only
set -euo pipefail
cd "$(dirname "$0")/.."
SEED_RECORDS="${BENCH_SEED_RECORDS:-20000}"
SEED_DIM="${BENCH_SEED_DIM:-384}"
VERIFY_RECORDS="${BENCH_VERIFY_RECORDS:-100000}"
VERIFY_DIM="${BENCH_VERIFY_DIM:-128}"
TOKEN=bench-admin-token-0123456789

source scripts/bench/stack.sh

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }
now() { date +%s.%N; }

start_chroma primary; PRIMARY="http://127.0.0.1:$PORT"
start_chroma copy; COPY="http://127.0.0.1:$PORT"
start_chroma replica; REPLICA="http://127.0.0.1:$PORT"
"$VENV/bin/python" scripts/bench/seed.py "$PRIMARY" bulk "$SEED_RECORDS" "$SEED_DIM" "$WORK/q.json" > /dev/null

direct=$("$VENV/bin/python" scripts/bench/bulk_copy.py "$PRIMARY" "$COPY" bulk)
direct_rate=$(json 'd["records_per_second"]' <<< "$direct")

start_proxy seeding PRIMARY_URL="$PRIMARY" REPLICA_URL="$REPLICA" DATABASE_URL="sqlite://$WORK/seeding/wal.db" \
  ADMIN_TOKEN="$TOKEN" VERIFY_INTERVAL=0 VERIFY_RATE=1000000
for _ in $(seq 1 6000); do
  state=$(curl -sf "$PROXY/status" | json '[i for i in d["instances"] if i["name"] == "replica"][0]["state"]')
  [ "$state" = healthy ] && break
  sleep 0.1
done
[ "$state" = healthy ] || { echo "bench: the replica was not seeded" >&2; exit 1; }
seeded=$(curl -sf "$PROXY/status" | json '[i for i in d["instances"] if i["name"] == "replica"][0]["seeding"]["last"]')
seed_rate=$(python3 -c "import ast,sys; print(ast.literal_eval(sys.argv[1])['records_per_second'])" "$seeded")
seed_seconds=$(python3 -c "import ast,sys; print(ast.literal_eval(sys.argv[1])['seconds'])" "$seeded")
seed_hwm=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$PROXY_PID/status")

# verify JOB_BODY: seconds until the check started now is over, and its records read.
verify() {
  local started since
  started=$(now)
  since=$(curl -sf -X POST -H "authorization: Bearer $TOKEN" -d "$1" "$PROXY/admin/verify" | json 'd["started"]["started_at"]')
  for _ in $(seq 1 60000); do
    last=$(curl -sf -H "authorization: Bearer $TOKEN" "$PROXY/admin/verify" | json 'd["last"]')
    python3 -c "import ast,sys; l=ast.literal_eval(sys.argv[1]); sys.exit(0 if l and l['started_at']==sys.argv[2] else 1)" "$last" "$since" && break
    sleep 0.05
  done
  python3 -c "import ast,sys,time; l=ast.literal_eval(sys.argv[1]); d=sum(i['divergent_records'] for i in l['instances']); print(f'{time.time()-float(sys.argv[2]):.1f} {l[\"records_read\"]} {d}')" "$last" "$started"
}
read -r v1_s v1_read v1_div <<< "$(verify '{"collection": "bulk"}')"

if [ "$VERIFY_RECORDS" -gt 0 ]; then
  "$VENV/bin/python" scripts/bench/seed.py "$PRIMARY" big "$VERIFY_RECORDS" "$VERIFY_DIM" "$WORK/q2.json" > /dev/null
  "$VENV/bin/python" scripts/bench/seed.py "$REPLICA" big "$VERIFY_RECORDS" "$VERIFY_DIM" "$WORK/q3.json" > /dev/null
  read -r v2_s v2_read v2_div <<< "$(verify '{"collection": "big"}')"
  kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true
  start_proxy paced PRIMARY_URL="$PRIMARY" REPLICA_URL="$REPLICA" DATABASE_URL="sqlite://$WORK/paced/wal.db" \
    ADMIN_TOKEN="$TOKEN" VERIFY_INTERVAL=0
  read -r v3_s v3_read v3_div <<< "$(verify '{"collection": "big"}')"
fi

echo
echo "| row | records | seconds | records/s | ratio to direct |"
echo "|---|---:|---:|---:|---:|"
printf '| direct bulk copy (%s-d, bulk_copy.py) | %s | %s | %s | 1.00 |\n' "$SEED_DIM" "$SEED_RECORDS" "$(json 'd["seconds"]' <<< "$direct")" "$direct_rate"
printf '| chroma-ha seeding (SEED_RATE=0; proxy peak RSS %s MB) | %s | %.2f | %.1f | %.2f |\n' "$seed_hwm" "$SEED_RECORDS" "$seed_seconds" "$seed_rate" "$(python3 -c "print($seed_rate / $direct_rate)")"
printf '| verify the seeded pair (unpaced; %s records read, %s divergent) | %s | %s | %.1f | |\n' "$v1_read" "$v1_div" "$SEED_RECORDS" "$v1_s" "$(python3 -c "print($SEED_RECORDS / $v1_s)")"
[ "$VERIFY_RECORDS" -gt 0 ] || exit 0
printf '| verify %s-d (unpaced; %s records read, %s divergent) | %s | %s | %.1f | |\n' "$VERIFY_DIM" "$v2_read" "$v2_div" "$VERIFY_RECORDS" "$v2_s" "$(python3 -c "print($VERIFY_RECORDS / $v2_s)")"
printf '| verify %s-d (VERIFY_RATE=5000; %s records read, %s divergent) | %s | %s | %.1f | |\n' "$VERIFY_DIM" "$v3_read" "$v3_div" "$VERIFY_RECORDS" "$v3_s" "$(python3 -c "print($VERIFY_RECORDS / $v3_s)")"
