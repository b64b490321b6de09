#!/usr/bin/env bash
# Installs (once) headless Chromium (Debian's `chromium` package) for the dashboard test, and
# prints the browser's path. Safe to run from several processes at once.
set -euo pipefail
LOCK="${HOME}/.cache/chroma-ha/chromium.lock"
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9
browser() { command -v chromium || command -v chromium-browser || true; }
if [ -z "$(browser)" ]; then
  echo "setup-chromium: installing chromium" >&2
  # One apt at a time across the install scripts (tests run two at once).
  flock "$HOME/.cache/chroma-ha/apt.lock" sh -c \
    'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null'
fi
browser
