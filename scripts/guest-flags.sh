#!/usr/bin/env bash
# Prints CARGO_ENCODED_RUSTFLAGS for building guests of the checkout at $1:
# the flags of runtime/guest-build (rustflags), for the scripts that build
# guests themselves. SIMD, and source paths of the checkout and the cargo
# home remapped, so that modules do not depend on where they were built.
set -euo pipefail
printf '%s\x1f%s\x1f%s' -Ctarget-feature=+simd128 \
    "--remap-path-prefix=$1=/tally" "--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
