#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests against real Chroma servers and a real
# PostgreSQL. Installs what a fresh machine lacks first: the Python venv with chromadb,
# PostgreSQL and libpq (Debian packages), cargo-nextest. The tests install the rest on first
# use, each with its own script: the JS client (scripts/setup-js.sh), headless Chromium
# (scripts/setup-chromium.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh >/dev/null
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
  || ! command -v pg_config >/dev/null; then
  echo "test.sh: installing PostgreSQL and libpq-dev" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql libpq-dev >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace "$@"
