#!/usr/bin/env bash
# Builds the `tally` CLI (dev profile, into $CARGO_TARGET_DIR or target/)
# and the guests (wasm32-wasip1, release, into guests/target/) with the
# flags of every guest build (runtime/guest-build: modules that do not
# depend on where this checkout or the cargo home is). For the scripts that
# pack the manifests (demo.sh, bench.sh); extra arguments go to both cargo
# builds (e.g. -q).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked "$@" -p tally-cli
flags=$(./scripts/guest-flags.sh "$(pwd -P)")
(cd guests && env -u CARGO_TARGET_DIR CARGO_ENCODED_RUSTFLAGS="$flags" cargo build --locked "$@" --release --target wasm32-wasip1)
