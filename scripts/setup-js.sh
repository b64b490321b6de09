#!/usr/bin/env bash
# Installs (once) the official JS client (npm `chromadb@3`) the tests use, with Node.js when the
# machine lacks it, and prints the node_modules directory. Safe to run from several processes.
set -euo pipefail
CHROMADB_JS_VERSION=3.5.0
DIR="${CHROMA_HA_JS:-$HOME/.cache/chroma-ha/js-chromadb-$CHROMADB_JS_VERSION}"
mkdir -p "$DIR"
exec 9>"$DIR.lock"
flock 9
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup-js: installing Node.js and npm" >&2
  # One apt at a time across the install scripts (tests run two at once).
  flock "$HOME/.cache/chroma-ha/apt.lock" sh -c \
    'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null'
fi
if ! [ -f "$DIR/node_modules/chromadb/package.json" ] ||
  ! grep -q "\"version\": \"$CHROMADB_JS_VERSION\"" "$DIR/node_modules/chromadb/package.json"; then
  echo "setup-js: installing chromadb@$CHROMADB_JS_VERSION (npm) into $DIR" >&2
  npm install --silent --no-audit --no-fund --prefix "$DIR" "chromadb@$CHROMADB_JS_VERSION" >&2
fi
echo "$DIR/node_modules"
