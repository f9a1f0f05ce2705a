#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the wasm target,
# espeak-ng (speech for the VAD tests) and DejaVu fonts (text for the OCR
# tests), fetches the real models and the ONNX
# Runtime library (digest-checked, cached in .assets/ or $TALLY_ASSETS),
# builds the guests (through runtime/test-artifacts) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null
if ! command -v espeak-ng >/dev/null || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get install -y -q espeak-ng fonts-dejavu-core >/dev/null || {
        $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q espeak-ng fonts-dejavu-core >/dev/null
    }
fi
./scripts/fetch-assets.sh
cargo test --locked --workspace
# The HTTP API against its own generated OpenAPI document (schemathesis).
./scripts/api-fuzz.sh 30
# The guests' own unit tests (their libraries, compiled natively).
(cd guests && env -u CARGO_TARGET_DIR cargo test --locked -q --lib -p tally-ocr -p tally-vad -p tally-guest)
# Guests are reproducible: built in two checkouts at different paths, every
# module is byte-identical (so anyone can check a package's module digests).
./scripts/check-reproducible.sh
# A short fuzz smoke pass over every parser of attacker-written bytes
# (scripts/fuzz.sh; cargo fuzz needs the nightly toolchain).
if cargo +nightly --version >/dev/null 2>&1; then
    ./scripts/fuzz.sh 10
else
    echo "warning: no nightly toolchain (rustup toolchain install nightly): fuzz smoke pass skipped" >&2
fi
