#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the wasm target, builds
# the guests (through runtime/test-artifacts) and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null
cargo test --locked --workspace
