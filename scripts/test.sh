#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real Chroma servers.
# Installs what a fresh machine lacks first (Python venv with chromadb, cargo-nextest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh >/dev/null
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace "$@"
