#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each (default 60)
# with cargo fuzz on the nightly toolchain, seeded from the repository's own
# manifests, and prints one line per target: executions and crashes.
#
#   scripts/fuzz.sh 10             # the smoke pass scripts/test.sh runs
#   scripts/fuzz.sh 3600 bundle    # an hour on the bundle reader
#
# Crashes are kept in fuzz/artifacts/TARGET/; reproduce one with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "cargo fuzz needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 2
fi
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked -q
fi
# Outside the clone, so that CI keeps the instrumented build between runs.
export CARGO_TARGET_DIR="${TALLY_FUZZ_TARGET_DIR:-$HOME/.cache/tally-fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
# Seeds: the repository's manifests for the manifest parser.
mkdir -p fuzz/corpus/manifest
for m in manifests/*/tally.toml; do
    cp "$m" "fuzz/corpus/manifest/seed-$(basename "$(dirname "$m")").toml"
done
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    log="$CARGO_TARGET_DIR/fuzz-$t.log"
    if (cd fuzz && cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1) >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    printf '%-10s %-6s execs=%-10s crashes=%s\n' "$t" "$result" "$execs" "$crashes"
    [ "$result" = ok ] || tail -30 "$log"
done
exit $status
