#!/usr/bin/env bash
# Creates (once) the Python venv with the Chroma server and client the tests and the local stack
# use, and prints its path. Safe to run from several processes at once. With --suite it also
# installs what Chroma's own test suite (in the chromadb package) needs to run, pinned: the
# bench's `suite` section runs it through the proxy.
set -euo pipefail
CHROMADB_VERSION=1.5.9
SUITE_PACKAGES=(pytest==8.4.2 hypothesis==6.131.18 psutil==7.1.3 fastapi==0.115.14 opentelemetry-instrumentation-fastapi==0.66b2)
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
if [ "${1:-}" = --suite ]; then
  suite_ready() {
    local p
    for p in "${SUITE_PACKAGES[@]}"; do
      [ "$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('${p%%==*}'))" 2>/dev/null)" = "${p#*==}" ] || return 1
    done
  }
  if ! suite_ready; then
    echo "setup-venv: installing ${SUITE_PACKAGES[*]} into $VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${SUITE_PACKAGES[@]}" >&2
    suite_ready
  fi
fi
echo "$VENV"
