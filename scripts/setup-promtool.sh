#!/usr/bin/env bash
# Provides (once) promtool, Prometheus's rule checker, for the deploy kit's test, and prints its
# path. promtool comes from Debian's `prometheus` package; installing that package would also
# add and start a Prometheus server, so when the machine has no promtool the package is
# downloaded with apt and promtool alone is unpacked under ~/.cache/chroma-ha. Safe to run from
# several processes at once.
set -euo pipefail
if command -v promtool >/dev/null; then
  command -v promtool
  exit 0
fi
DIR="${CHROMA_HA_PROMTOOL:-$HOME/.cache/chroma-ha/promtool}"
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9
if ! [ -x "$DIR/promtool" ]; then
  echo "setup-promtool: unpacking promtool from Debian's prometheus package into $DIR" >&2
  download=$(mktemp -d)
  trap 'rm -rf "$download"' EXIT
  chown _apt "$download" 2>/dev/null || true # apt downloads as its sandbox user where it has one
  # One apt at a time across the install scripts (tests run two at once).
  mkdir -p "$HOME/.cache/chroma-ha"
  flock "$HOME/.cache/chroma-ha/apt.lock" sh -c \
    'apt-get update -qq && cd "$1" && apt-get download -qq prometheus >/dev/null' sh "$download"
  mkdir -p "$DIR"
  dpkg-deb --fsys-tarfile "$download"/prometheus_*.deb | tar -xO ./usr/bin/promtool >"$DIR/promtool.new"
  chmod 755 "$DIR/promtool.new"
  mv "$DIR/promtool.new" "$DIR/promtool"
fi
"$DIR/promtool" --version >/dev/null
echo "$DIR/promtool"
