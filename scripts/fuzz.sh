#!/usr/bin/env bash
# Runs the cargo-fuzz targets named (default: all) for SECONDS (default 600) each and prints
# libFuzzer's execution count: scripts/fuzz.sh [SECONDS [TARGET...]]. Needs the nightly toolchain; installs cargo-fuzz when missing. Crashes are written to
# fuzz/artifacts/TARGET/ and make the script fail.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH="${1:-600}"
shift || true
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    2> "/tmp/chroma-ha-fuzz-$target.log" || { tail -40 "/tmp/chroma-ha-fuzz-$target.log"; exit 1; }
  echo "$target: $(grep -a -E '^Done [0-9]+ runs' "/tmp/chroma-ha-fuzz-$target.log")"
done
