#!/usr/bin/env bash
# The long fault-schedule run: N seeded schedules (default 100) from FIRST_SEED (default 1) of
# kill -9, SIGSTOP and pg_ctl stop against primary, replica, both proxies and PostgreSQL under
# concurrent writers, each checked against the writers' oracle. Prints one line per schedule on
# stderr and the summary line on stdout:
#   schedules: N, acknowledged writes: N, uncertain: N, lost: 0, divergent: 0, resurrected: 0, ...
# Repeat one failing seed exactly: scripts/fault-schedules.sh 1 SEED
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh >/dev/null
FAULT_SCHEDULES="${1:-100}" FAULT_FIRST_SEED="${2:-1}" \
  exec cargo test --test fault_schedules many_schedules -- --ignored --nocapture --quiet
