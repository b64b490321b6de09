#!/usr/bin/env bash
# Benchmarks chroma-ha against direct Chroma, measured in the same run on this machine, and
# prints one table. Each figure is the median of BENCH_RUNS runs of BENCH_DURATION seconds,
# alternating direct and proxied runs so drift hits both alike.
#
#   scripts/bench.sh                          # all sections
#   BENCH_RUNS=5 BENCH_DURATION=10 scripts/bench.sh
#   BENCH_SECTIONS="catchup" scripts/bench.sh   # only some: latency wal catchup failover bulk bigget suite
#   BENCH_PIN=1 scripts/bench.sh              # pinned: see below
#
# BENCH_PIN=1 pins the client (this script and all it runs), the direct Chroma and the primary
# to CPU 0, and the replicas, PostgreSQL and the proxies to CPU 1 (taskset). That stands in for
# separate machines: the primary has the same neighbour, the client, in direct and proxied
# runs, and the replica has a core of its own.
#
# bulk:   the official client adds BENCH_BULK_RECORDS (20,000) random 384-d records with
#         documents in batches of 500: direct, through a proxy without a replica, through one
#         with a replica (both SQLite WAL), and direct into the replica server (the pace the
#         replica could ingest at alone); then the replica's lag after the last batch.
#         BENCH_BULK_RUNS rounds (default 1); BENCH_OUT=DIR keeps the timelines and logs.
# bigget: the whole 20,000 x 384-d collection with embeddings (~80 MB of JSON) got with the
#         official client, direct and proxied, and the proxy's RSS before, at peak, after.
# suite:  Chroma's own tests (BENCH_SUITE_TESTS, selected by BENCH_SUITE_SELECT, Hypothesis at
#         most BENCH_SUITE_EXAMPLES examples) run direct and through a proxy with a replica, on
#         servers of their own (the tests reset them); the proxy's RSS before, at peak, after.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${BENCH_RUNS:-3}"
SECTIONS="${BENCH_SECTIONS:-latency wal catchup failover bulk bigget suite}"
CATCHUP_WRITES="${BENCH_CATCHUP_WRITES:-10000}"
DURATION="${BENCH_DURATION:-5}"
BULK_RECORDS="${BENCH_BULK_RECORDS:-20000}"
BULK_RUNS="${BENCH_BULK_RUNS:-1}"
SUITE_TESTS="${BENCH_SUITE_TESTS:-test_api.py property/test_add.py}"
# The SSL tests start servers of their own and wait ~70 s for a certificate that never works.
SUITE_SELECT="${BENCH_SUITE_SELECT:-not ssl}"

source scripts/bench/stack.sh
[ "${BENCH_PIN:-0}" = 1 ] && taskset -cp 0 $$ > /dev/null  # what this script runs is the client
section() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# wrk_once URL CONNS [BODY_FILE | add]: prints "req/s p50_ms p99_ms".
wrk_once() {
  local url=$1 conns=$2 body=${3:-} script=() share=0
  case "$body" in
    "") ;;
    add) script=(-s scripts/bench/load.lua) share=1 ;;
    *) script=(-s scripts/bench/load.lua) ;;
  esac
  RUN="r$RANDOM$RANDOM" QUERY_FILE="$body" WRITE_SHARE=$share wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${DURATION}s" --latency "${script[@]}" "$url" |
    awk '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /Requests\/sec/ { rps = $2 }
      $1 == "50%" { p50 = ms($2) }
      $1 == "99%" { p99 = ms($2) }
      /Non-2xx/ { bad = $NF }
      END { if (bad > 0) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 } printf "%.1f %.3f %.3f\n", rps, p50, p99 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# compare LABEL CONNS DIRECT_URL PROXY_URL [BODY_FILE]: one table row.
compare() {
  local label=$1 conns=$2 direct=$3 proxied=$4 body=${5:-}
  : > "$WORK/d" && : > "$WORK/p"
  for _ in $(seq 1 "$RUNS"); do
    wrk_once "$direct" "$conns" "$body" >> "$WORK/d"
    wrk_once "$proxied" "$conns" "$body" >> "$WORK/p"
  done
  local drps dp50 dp99 prps pp50 pp99 ratio added
  drps=$(cut -d' ' -f1 "$WORK/d" | median); dp50=$(cut -d' ' -f2 "$WORK/d" | median); dp99=$(cut -d' ' -f3 "$WORK/d" | median)
  prps=$(cut -d' ' -f1 "$WORK/p" | median); pp50=$(cut -d' ' -f2 "$WORK/p" | median); pp99=$(cut -d' ' -f3 "$WORK/p" | median)
  # Ratio and added p50 are medians over the pairs of back-to-back runs, so that the machine's
  # drift between pairs (CPU steal on a shared VM) cancels out.
  ratio=$(paste -d' ' "$WORK/d" "$WORK/p" | awk '{ print $4 / $1 }' | median)
  added=$(paste -d' ' "$WORK/d" "$WORK/p" | awk '{ print $5 - $2 }' | median)
  awk -v l="$label" -v c="$conns" -v drps="$drps" -v prps="$prps" -v dp50="$dp50" -v pp50="$pp50" -v dp99="$dp99" -v pp99="$pp99" -v ratio="$ratio" -v added="$added" \
    'BEGIN { printf "| %-28s | %3d | %9.1f | %9.1f | %5.2f | %7.3f | %7.3f | %+7.3f | %7.3f | %7.3f |\n", l, c, drps, prps, ratio, dp50, pp50, added, dp99, pp99 }'
}

start_chroma primary 0; PRIMARY_PORT=$PORT PRIMARY_PID=$CHROMA_PID
start_chroma replica; REPLICA_PORT=$PORT REPLICA_PID=$CHROMA_PID
start_chroma replica-pg; REPLICA_PG_PORT=$PORT
start_postgres
DIRECT="http://127.0.0.1:$PRIMARY_PORT"
REPLICA="http://127.0.0.1:$REPLICA_PORT"
# Two proxies share the primary, each with its own replica and WAL; each writes only to
# collections created through it, so each replicates exactly its own.
start_proxy proxy-pg PRIMARY_URL="$DIRECT" REPLICA_URL="http://127.0.0.1:$REPLICA_PG_PORT" DATABASE_URL="$PG_URL"
PROXY_PG=$PROXY
# A proxy with tokens declared, reads only: its queries carry a read token (the cost of
# checking it). Started before the SQLite proxy, whose $PROXY and $PROXY_PID the rest uses.
BENCH_TOKEN="bench-read-token-$RANDOM$RANDOM$RANDOM"
printf '[[tokens]]\nname = "bench"\ntoken = "%s"\nrole = "read"\ntenant = "*"\ndatabases = ["*"]\n' "$BENCH_TOKEN" > "$WORK/tokens.toml"
start_proxy proxy-auth PRIMARY_URL="$DIRECT" READ_REPLICA_RATIO=0 AUTH_TOKENS_FILE="$WORK/tokens.toml" DATABASE_URL="$WORK/auth-wal.sqlite"
PROXY_AUTH=$PROXY
# Its reads go to the primary, the server "direct" is measured on: the comparison is then the
# proxy's cost alone, not the difference between two servers.
start_proxy proxy-sqlite PRIMARY_URL="$DIRECT" REPLICA_URL="$REPLICA" READ_REPLICA_RATIO=0
# A second process on the same WAL file: a follower, which forwards every request to the
# proxy above (the leader). Its rows are against the leader: what the extra hop costs.
LEADER=$PROXY LEADER_PID=$PROXY_PID
start_proxy proxy-follower PRIMARY_URL="$DIRECT" REPLICA_URL="$REPLICA" READ_REPLICA_RATIO=0 DATABASE_URL="$WORK/proxy-sqlite/chroma-ha-wal.sqlite"
FOLLOWER=$PROXY PROXY=$LEADER PROXY_PID=$LEADER_PID
start_nginx "$DIRECT" || { NGINX=""; echo "bench: nginx unavailable; no reference-hop rows" >&2; }
SEED="$VENV/bin/python scripts/bench/seed.py"
ID="$($SEED "$PROXY" bench 1000 128 "$WORK/query.json")"
ADDS="$($SEED "$PROXY" adds 1 8 /dev/null)"
ADDS_PG="$($SEED "$PROXY_PG" adds-pg 1 8 /dev/null)"
ADDS_DIRECT="$($SEED "$DIRECT" adds-direct 1 8 /dev/null)"
COLL="/api/v2/tenants/default_tenant/databases/default_database/collections"
# The query collection is on both instances once replay has copied it.
until curl -sf "$REPLICA$COLL/bench" >/dev/null && [ "$(curl -sf "$PROXY/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["write_ahead_log"]["pending_writes"])')" = 0 ]; do sleep 0.2; done

echo "chroma-ha benchmark, $(date -u +%Y-%m-%d), $(nproc --all) cores, runs=$RUNS x ${DURATION}s, wrk, $([ "${BENCH_PIN:-0}" = 1 ] && echo "pinned (client, direct Chroma, primary on CPU 0; replicas, PostgreSQL, proxies on CPU 1)" || echo unpinned)"
echo "proxy RSS at rest: $(rss_mb "$PROXY_PID") MB"

if section latency; then
  echo
  echo "| test                         |   c | direct/s  | proxy/s   | ratio | p50 dir | p50 pxy | p50 add | p99 dir | p99 pxy |"
  echo "|------------------------------|-----|-----------|-----------|-------|---------|---------|---------|---------|---------|"
  compare "GET /api/v2/heartbeat" 1 "$DIRECT/api/v2/heartbeat" "$PROXY/api/v2/heartbeat"
  compare "query 1k x 128-d, k=10" 1 "$DIRECT$COLL/$ID/query" "$PROXY$COLL/$ID/query" "$WORK/query.json"
  compare "query 1k x 128-d, k=10" 16 "$DIRECT$COLL/$ID/query" "$PROXY$COLL/$ID/query" "$WORK/query.json"
  AUTH_TOKEN="$BENCH_TOKEN" compare "query, tokens declared" 16 "$DIRECT$COLL/$ID/query" "$PROXY_AUTH$COLL/$ID/query" "$WORK/query.json"
  if [ -n "$NGINX" ]; then
    compare "query, nginx (reference hop)" 1 "$DIRECT$COLL/$ID/query" "$NGINX$COLL/$ID/query" "$WORK/query.json"
    compare "query, nginx (reference hop)" 16 "$DIRECT$COLL/$ID/query" "$NGINX$COLL/$ID/query" "$WORK/query.json"
  fi
  compare "query via follower, vs leader" 1 "$PROXY$COLL/$ID/query" "$FOLLOWER$COLL/$ID/query" "$WORK/query.json"
  compare "query via follower, vs leader" 16 "$PROXY$COLL/$ID/query" "$FOLLOWER$COLL/$ID/query" "$WORK/query.json"
  compare "add 1 record, WAL sqlite" 1 "$DIRECT$COLL/$ADDS_DIRECT/add" "$PROXY$COLL/$ADDS/add" add
  compare "add 1 record, WAL sqlite" 8 "$DIRECT$COLL/$ADDS_DIRECT/add" "$PROXY$COLL/$ADDS/add" add
  compare "add 1 record, WAL postgres" 1 "$DIRECT$COLL/$ADDS_DIRECT/add" "$PROXY_PG$COLL/$ADDS_PG/add" add
  compare "add 1 record, WAL postgres" 8 "$DIRECT$COLL/$ADDS_DIRECT/add" "$PROXY_PG$COLL/$ADDS_PG/add" add
  echo
  echo "latencies in ms; ratio = proxy req/s / direct req/s and p50 add = proxy p50 - direct p50, each the median over pairs of back-to-back runs"
  echo "the nginx rows put a one-worker nginx with upstream keep-alive in the proxy's place: what any proxy hop costs on this machine"
  echo "the follower rows compare a follower (which forwards to the leader) with the leader itself: the \"direct\" columns are the leader's"
  echo "proxy RSS after the runs: $(rss_mb "$PROXY_PID") MB"
  # The same figure without drift: every round sends one query to each server in turn.
  python3 scripts/bench/interleave.py 2000 "$WORK/query.json" "$COLL/$ID/query" "$DIRECT" "$PROXY" "$PROXY_AUTH#$BENCH_TOKEN" "$FOLLOWER" ${NGINX:+"$NGINX"} > "$WORK/inter"
  added_ms() { awk -v u="$1" '$1 == u { print $2 }' "$WORK/inter"; }
  echo "query c=1 added p50, requests interleaved one at a time (2,000 rounds): chroma-ha $(added_ms "$PROXY") ms, chroma-ha with a token checked $(added_ms "$PROXY_AUTH#$BENCH_TOKEN") ms, through a follower $(added_ms "$FOLLOWER") ms${NGINX:+, nginx $(added_ms "$NGINX") ms}"
fi

if section wal; then
  echo
  echo "WAL append throughput (benches/wal_append.rs, group commit, ${DURATION}s per level):"
  cargo build --release --quiet --bench wal_append
  WAL_BENCH="$(ls -t "$CHROMA_HA_RELEASE"/deps/wal_append-* | grep -v '\.d$' | head -1)"
  DATABASE_URL="$WORK/append.sqlite" BENCH_DURATION="$DURATION" "$WAL_BENCH"
  DATABASE_URL="$PG_URL" BENCH_DURATION="$DURATION" "$WAL_BENCH"
fi

# keep FILE...: copies files to $BENCH_OUT, when it is set, to be read after the run.
keep() { [ -n "${BENCH_OUT:-}" ] && mkdir -p "$BENCH_OUT" && cp "$@" "$BENCH_OUT/"; return 0; }
json_field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(v)' "$1" "$2"; }
BULK="$VENV/bin/python scripts/bench/bulk.py"

if section bulk; then
  echo
  echo "Bulk ingest, official client, $BULK_RECORDS x 384-d random embeddings with documents, batches of 500, $BULK_RUNS round(s); proxies with the SQLite WAL (the default):"
  # A proxy in front of the primary alone: the proxy's and its log's cost without replication.
  SAVED=("$PROXY" "$PROXY_PID")
  start_proxy proxy-solo PRIMARY_URL="$DIRECT"
  SOLO=$PROXY SOLO_PID=$PROXY_PID PROXY=${SAVED[0]} PROXY_PID=${SAVED[1]}
  : > "$WORK/bulk"
  : > "$WORK/probe"
  for run in $(seq 1 "$BULK_RUNS"); do
    # What the proxy's health probe would see meanwhile, sent from where the proxy runs.
    "${PIN1[@]}" python3 scripts/bench/probe.py "$DIRECT/api/v2/healthcheck" "$WORK/probe" &
    probe=$!
    d=$($BULK "$DIRECT" "bulk-direct-$run" "$BULK_RECORDS" 384 500)
    kill "$probe"
    wait "$probe" || true
    reset_hwm "$SOLO_PID"
    before=$(sched_now "$SOLO_PID" "$PRIMARY_PID")
    s=$($BULK "$SOLO" "bulk-solo-$run" "$BULK_RECORDS" 384 500)
    solo_sched=$(sched_since "$before" "$SOLO_PID" "$PRIMARY_PID")
    solo_hwm=$(hwm_mb "$SOLO_PID")
    reset_hwm "$PROXY_PID"
    before=$(sched_now "$PROXY_PID" "$PRIMARY_PID")
    r=$($BULK "$PROXY" "bulk-replica-$run" "$BULK_RECORDS" 384 500 --replica "$REPLICA" --primary "$DIRECT" \
      --proxy "$PROXY" --deadline 600 --timeline "$WORK/bulk-timeline-$run.tsv" \
      --pids "primary=$PRIMARY_PID,replica=$REPLICA_PID,proxy=$PROXY_PID")
    replica_sched=$(sched_since "$before" "$PROXY_PID" "$PRIMARY_PID")
    replica_hwm=$(hwm_mb "$PROXY_PID")
    # The replica's own pace: the same batches sent to it directly (nothing else running), and
    # in batches of 5,000, about what replay merges a backlog into (max_batch_size 5,461).
    a=$($BULK "$REPLICA" "bulk-alone-$run" "$BULK_RECORDS" 384 500)
    a5=$($BULK "$REPLICA" "bulk-alone5k-$run" "$BULK_RECORDS" 384 5000)
    # A backlog: the replica stopped (SIGSTOP) during an ingest through the proxy, then let go:
    # how soon replay starts, and how fast it applies the backlog against the pace above.
    reset_hwm "$PROXY_PID"
    kill -STOP "$REPLICA_PID"
    bi=$($BULK "$PROXY" "bulk-backlog-$run" "$BULK_RECORDS" 384 500)
    kill -CONT "$REPLICA_PID"
    b=$($VENV/bin/python scripts/bench/follow.py "bulk-backlog-$run" --expect "$BULK_RECORDS" --replica "$REPLICA" --primary "$DIRECT" \
      --proxy "$PROXY" --timeline "$WORK/bulk-backlog-$run.tsv" --pids "replica=$REPLICA_PID,proxy=$PROXY_PID")
    backlog_hwm=$(hwm_mb "$PROXY_PID")
    keep "$WORK/bulk-backlog-$run.tsv"
    echo "$run $(json_field "$d" records_per_s) $(json_field "$s" records_per_s) $(json_field "$r" records_per_s) $(json_field "$a" records_per_s) $(json_field "$r" count_lag) $(json_field "$r" pending_lag) $(json_field "$r" fingerprint_lag) $(json_field "$r" fingerprint_match) $solo_hwm $replica_hwm $(rss_mb "$SOLO_PID") $(rss_mb "$PROXY_PID") $(json_field "$a5" records_per_s) $(json_field "$b" first_rise) $(json_field "$b" count_lag) $(json_field "$b" fingerprint_lag) $(json_field "$b" fingerprint_match) $(json_field "$bi" records_per_s) $backlog_hwm $solo_sched$replica_sched" >> "$WORK/bulk"
    keep "$WORK/bulk-timeline-$run.tsv"
  done
  # Columns: round, records/s direct, no replica, with a replica, replica alone; lags (count,
  # owed, fingerprint), identical; peak RSS of both proxies in their runs, then RSS after;
  # replica alone in batches of 5,000; backlog: first rise, count equal, identical (seconds
  # after SIGCONT), identical; records/s through the proxy while the replica was stopped; the
  # proxy's peak RSS from the backlog's first batch until the replica had it all; during the
  # ingest without a replica, then with one: the proxy's seconds on a CPU and waiting for one,
  # the primary's the same.
  keep "$WORK/bulk"
  col() { cut -d' ' -f"$1" "$WORK/bulk" | median; }
  echo
  echo "| test                         | records/s | ratio | replica lag after the last batch: count equal / nothing owed / identical | proxy peak RSS |"
  echo "|------------------------------|-----------|-------|--------------------------------------------|----------------|"
  awk -v v="$(col 2)" 'BEGIN { printf "| %-28s | %9.1f |  1.00 | %-42s | %14s |\n", "bulk ingest, direct", v, "-", "-" }'
  awk -v v="$(col 3)" -v r="$(awk '{ print $3 / $2 }' "$WORK/bulk" | median)" -v m="$(col 10)" \
    'BEGIN { printf "| %-28s | %9.1f | %5.2f | %-42s | %11.1f MB |\n", "bulk, proxy, no replica", v, r, "-", m }'
  awk -v v="$(col 4)" -v r="$(awk '{ print $4 / $2 }' "$WORK/bulk" | median)" -v m="$(col 11)" \
    -v lag="$(col 6) s / $(col 7) s / $(col 8) s (identical in $(awk '$9 == "True"' "$WORK/bulk" | wc -l)/$BULK_RUNS)" \
    'BEGIN { printf "| %-28s | %9.1f | %5.2f | %-42s | %11.1f MB |\n", "bulk, proxy + replica", v, r, lag, m }'
  awk -v v="$(col 5)" -v r="$(awk '{ print $5 / $2 }' "$WORK/bulk" | median)" \
    'BEGIN { printf "| %-28s | %9.1f | %5.2f | %-42s | %14s |\n", "bulk, replica server alone", v, r, "-", "-" }'
  awk -v v="$(col 19)" -v r="$(awk '{ print $19 / $2 }' "$WORK/bulk" | median)" \
    'BEGIN { printf "| %-28s | %9.1f | %5.2f | %-42s | %14s |\n", "bulk, proxy, replica stopped", v, r, "-", "-" }'
  awk -v v="$(col 14)" -v r="$(awk '{ print $14 / $2 }' "$WORK/bulk" | median)" \
    'BEGIN { printf "| %-28s | %9.1f | %5.2f | %-42s | %14s |\n", "bulk, replica alone, 5k batch", v, r, "-", "-" }'
  awk -v v="$(awk -v n="$BULK_RECORDS" '{ print n / $16 }' "$WORK/bulk" | median)" -v r="$(awk -v n="$BULK_RECORDS" '{ print n / $16 / $14 }' "$WORK/bulk" | median)" \
    -v lag="$(col 15) s / $(col 16) s / $(col 17) s (identical in $(awk '$18 == "True"' "$WORK/bulk" | wc -l)/$BULK_RUNS)" -v m="$(col 20)" \
    'BEGIN { printf "| %-28s | %9.1f | %5.2f | %-42s | %11.1f MB |\n", "catch-up of a backlog", v, r, lag, m }'
  echo
  echo "catch-up of a backlog: the replica stopped (SIGSTOP) while the same ingest went through the proxy, then let go (SIGCONT); records/s from SIGCONT until both counts are whole, ratio against the replica alone in batches of 5,000; lag: seconds from SIGCONT to the first rise / count equal / identical (counts are read from the replica, which answers them late while it applies a batch of 5,000: a resolution of seconds)"
  echo "ratio: against direct (into the primary), median over rounds; \"replica alone\" is the same ingest sent straight to the replica server, the pace it can take on its own"
  echo "proxy RSS after the rounds: without a replica $(col 12) MB, with one $(col 13) MB"
  pct() { sort -g "$WORK/probe" | awk -v p="$1" '{ v[NR] = $1 } END { print v[int((NR - 1) * p) + 1] }'; }
  echo "the primary's healthcheck while it ingested directly, one probe at a time from CPU 1: p50 $(pct 0.5) ms, p99 $(pct 0.99) ms, max $(pct 1) ms ($(wc -l < "$WORK/probe") probes; the proxy's own probe times out after 2 s)"
  echo "during the ingest, without a replica / with one, seconds: proxy on a CPU $(col 21) / $(col 25), waiting for one $(col 22) / $(col 26); primary on a CPU $(col 23) / $(col 27), waiting for one $(col 24) / $(col 28)"
  downs=$(cat "$WORK"/proxy-sqlite/log "$WORK"/proxy-solo/log | grep -o 'instance [^ ]* ([^)]*) is DOWN' | awk '{ print $2 }' | sort | uniq -c | awk '{ printf "%s%s %d", sep, $2, $1; sep = ", " }')
  echo "instances marked down during the section, by name: ${downs:-none} (the replica is stopped on purpose once a round, for the backlog; a probe gets 2 s)"
  keep "$WORK/proxy-sqlite/log"
  echo "lag: seconds from the last batch's answer until the replica's count equals the primary's, until the proxy owes the replica nothing, and until ids, documents and 200 sampled embeddings match"
fi

if section bigget; then
  echo
  # The collection of the bulk section when it ran, else one made here through the proxy.
  BIG=bulk-replica-1
  section bulk || { $BULK "$PROXY" "$BIG" "$BULK_RECORDS" 384 500 > /dev/null; }
  echo "Big get: the whole $BULK_RECORDS x 384-d collection with embeddings (about $(( BULK_RECORDS * 4 / 1000 )) MB of JSON), official client, $RUNS pairs; proxy with the SQLite WAL, reading from the primary:"
  GET="$VENV/bin/python scripts/bench/bigget.py"
  : > "$WORK/bigget"
  before=$(rss_mb "$PROXY_PID")
  reset_hwm "$PROXY_PID"
  for _ in $(seq 1 "$RUNS"); do
    echo "$($GET "$DIRECT" "$BIG" "$BULK_RECORDS") $($GET "$PROXY" "$BIG" "$BULK_RECORDS")" >> "$WORK/bigget"
  done
  peak=$(hwm_mb "$PROXY_PID")
  after=$(rss_mb "$PROXY_PID")
  echo
  echo "| test                         | direct s | proxy s | ratio | proxy RSS before | peak (VmHWM) | after   |"
  echo "|------------------------------|----------|---------|-------|------------------|--------------|---------|"
  awk -v d="$(cut -d' ' -f1 "$WORK/bigget" | median)" -v p="$(cut -d' ' -f2 "$WORK/bigget" | median)" \
    -v r="$(awk '{ print $2 / $1 }' "$WORK/bigget" | median)" -v b="$before" -v k="$peak" -v a="$after" -v n="$BULK_RECORDS" \
    'BEGIN { printf "| %-28s | %8.2f | %7.2f | %5.2f | %13.1f MB | %9.1f MB | %4.1f MB |\n", "get " n / 1000 "k x 384-d, embeddings", d, p, r, b, k, a }'
  echo
  echo "seconds: the client's whole call (parsing included), median of the runs; ratio = proxy time / direct time, median over pairs"
fi

if section suite; then
  echo
  # Chroma's tests reset their server: they get servers of their own, a direct one and a
  # primary with a replica behind a proxy (SQLite WAL, default settings).
  scripts/setup-venv.sh --suite > /dev/null
  start_chroma suite-direct 0; SUITE_DIRECT=$PORT
  start_chroma suite-primary 0; SUITE_PRIMARY=$PORT
  start_chroma suite-replica; SUITE_REPLICA=$PORT
  SAVED=("$PROXY" "$PROXY_PID")
  start_proxy proxy-suite PRIMARY_URL="http://127.0.0.1:$SUITE_PRIMARY" REPLICA_URL="http://127.0.0.1:$SUITE_REPLICA"
  SUITE_PROXY=$PROXY SUITE_PROXY_PID=$PROXY_PID PROXY=${SAVED[0]} PROXY_PID=${SAVED[1]}
  suite_before=$(rss_mb "$SUITE_PROXY_PID")
  reset_hwm "$SUITE_PROXY_PID"
  TESTS="$VENV/lib/python3.11/site-packages/chromadb/test"
  # run_suite PORT NAME: Chroma's tests against that server, results in $WORK/NAME.xml.
  run_suite() {
    (cd "$TESTS" && CHROMA_SERVER_HOST=127.0.0.1 CHROMA_SERVER_HTTP_PORT=$1 CHROMA_INTEGRATION_TEST_ONLY=1 ANONYMIZED_TELEMETRY=False \
      PYTHONPATH="$OLDPWD/scripts/bench" SUITE_MAX_EXAMPLES="${BENCH_SUITE_EXAMPLES:-10}" \
      "$VENV/bin/python" -m pytest $SUITE_TESTS -k "$SUITE_SELECT" -q -p no:cacheprovider -p suite_budget \
      --junitxml="$WORK/$2.xml" > "$WORK/$2.log" 2>&1) || true
    keep "$WORK/$2.log" "$WORK/$2.xml"
  }
  started=$(date +%s)
  run_suite "$SUITE_DIRECT" suite-direct
  direct_s=$(( $(date +%s) - started ))
  started=$(date +%s)
  run_suite "${SUITE_PROXY##*:}" suite-proxy
  proxy_s=$(( $(date +%s) - started ))
  echo "Chroma's own tests ($SUITE_TESTS, -k \"$SUITE_SELECT\"; Hypothesis at most ${BENCH_SUITE_EXAMPLES:-10} examples a property), direct and through a proxy with a replica (SQLite WAL):"
  echo
  echo "| run                          | tests | passed | failed | errors | skipped | seconds | proxy RSS before / peak / after |"
  echo "|------------------------------|-------|--------|--------|--------|---------|---------|---------------------------------|"
  python3 scripts/bench/junit.py "$WORK/suite-direct.xml" "suite, direct" "$direct_s" "-"
  python3 scripts/bench/junit.py "$WORK/suite-proxy.xml" "suite, through the proxy" "$proxy_s" \
    "$suite_before / $(hwm_mb "$SUITE_PROXY_PID") / $(rss_mb "$SUITE_PROXY_PID") MB"
  python3 scripts/bench/junit.py --diff "$WORK/suite-direct.xml" "$WORK/suite-proxy.xml"
  keep "$WORK/proxy-suite/log"
fi

# replica_lag: the replica's replication lag in /status, as "entries seconds".
replica_lag() {
  curl -sf "$PROXY/status" | python3 -c '
import json, sys
lag = next(i for i in json.load(sys.stdin)["instances"] if i["name"] == "replica")["replication_lag"]
print(lag["entries"], lag["seconds"] or 0)'
}

if section catchup; then
  echo
  echo "Replication (proxy with SQLite WAL, adds of 1 record at c=8):"
  : > "$WORK/lag"
  (RUN="lag$RANDOM" WRITE_SHARE=1 wrk -t2 -c8 -d"${DURATION}s" -s scripts/bench/load.lua "$PROXY$COLL/$ADDS/add" > /dev/null) &
  load=$!
  while kill -0 "$load" 2>/dev/null; do replica_lag >> "$WORK/lag"; sleep 0.25; done
  echo "steady-state replica lag under load: median $(cut -d' ' -f1 "$WORK/lag" | median) entries / $(cut -d' ' -f2 "$WORK/lag" | median) s, max $(cut -d' ' -f1 "$WORK/lag" | sort -g | tail -1) entries ($(wc -l < "$WORK/lag") samples)"

  kill -9 "${pids[1]}"  # the replica of the SQLite proxy
  writes() { curl -sf "$PROXY/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["writes"])'; }
  target=$(( $(writes) + CATCHUP_WRITES ))
  started=$(date +%s.%N)
  (RUN="backlog$RANDOM" WRITE_SHARE=1 exec wrk -t2 -c8 -d3600s -s scripts/bench/load.lua "$PROXY$COLL/$ADDS/add" > /dev/null) &
  load=$!
  while [ "$(writes)" -lt "$target" ]; do sleep 0.5; done
  kill "$load"; wait "$load" 2>/dev/null || true
  ended=$(date +%s.%N)
  echo "backlog: $(replica_lag | cut -d' ' -f1) entries written with the replica down, at $(python3 -c "print(round($CATCHUP_WRITES / ($ended - $started), 1))") adds/s through the proxy"
  ANONYMIZED_TELEMETRY=False "${PIN1[@]}" "$VENV/bin/chroma" run "$WORK/replica/config.yaml" >> "$WORK/replica/log" 2>&1 &
  pids+=($!)
  wait_http "$REPLICA/api/v2/heartbeat"
  up=$(date +%s.%N)
  until [ "$(replica_lag | cut -d' ' -f1)" = 0 ]; do sleep 0.05; done
  caught=$(date +%s.%N)
  replica_id=$(curl -sf "$REPLICA$COLL/adds" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  echo "catch-up: replica answered its heartbeat, then applied the backlog in $(python3 -c "print(round($caught - $up, 2))") s; records in the collection: primary $(curl -sf "$DIRECT$COLL/$ADDS/count"), replica $(curl -sf "$REPLICA$COLL/$replica_id/count")"
fi

if section failover; then
  echo
  echo "Failover (proxy with SQLite WAL, c=8, half queries, half adds, 12 s; primary kill -9 at 4 s):"
  (RUN="failover$RANDOM" WRITE_SHARE=0.5 QUERY_FILE="$WORK/query.json" QUERY_PATH="$COLL/$ID/query" \
    ADD_PATH="$COLL/$ADDS/add" exec wrk -t2 -c8 -d12s --latency -s scripts/bench/load.lua "$PROXY" \
    > "$WORK/failover.wrk") &
  load=$!
  sleep 2
  under_load=$(rss_mb "$PROXY_PID")
  sleep 2
  kill -9 "${pids[0]}"  # the primary
  wait "$load"
  awk -v rss="$under_load" '
    /requests in/ { requests = $1 }
    $1 == "Latency" && NF == 5 { max = $4 }
    /Non-2xx/ { bad = $NF }
    /Socket errors/ { errors = $0 }
    END { printf "requests: %d, failed (non-2xx): %d, socket errors: %s, longest request: %s; proxy RSS under load: %s MB\n", requests, bad, errors ? errors : "none", max, rss }' "$WORK/failover.wrk"
fi
