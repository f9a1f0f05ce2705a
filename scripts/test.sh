#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the wasm target and
# espeak-ng (speech for the VAD tests), fetches the real models and the ONNX
# Runtime library (digest-checked, cached in .assets/ or $TALLY_ASSETS),
# builds the guests (through runtime/test-artifacts) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null
if ! command -v espeak-ng >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y -q espeak-ng >/dev/null || {
        $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q espeak-ng >/dev/null
    }
fi
./scripts/fetch-assets.sh
cargo test --locked --workspace
