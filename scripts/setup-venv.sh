#!/usr/bin/env bash
# Creates (once) the Python venv with the Chroma server and client the tests and the local stack
# use, and prints its path. Safe to run from several processes at once.
set -euo pipefail
CHROMADB_VERSION=1.5.9
VENV="${CHROMA_HA_VENV:-$HOME/.cache/chroma-ha/venv-$CHROMADB_VERSION}"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
ready() {
  [ -x "$VENV/bin/chroma" ] &&
    "$VENV/bin/python" -c "import sys, chromadb; sys.exit(chromadb.__version__ != '$CHROMADB_VERSION')" 2>/dev/null
}
if ! ready; then
  echo "setup-venv: installing chromadb==$CHROMADB_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "chromadb==$CHROMADB_VERSION" >&2
  ready
fi
echo "$VENV"
