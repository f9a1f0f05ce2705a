#!/usr/bin/env bash
# Builds the guests of this commit in two checkouts at different paths, the
# way every guest is built (runtime/guest-build: SIMD, source paths of the
# checkout and the cargo home remapped), and compares every module byte for
# byte. A publisher's module digests can then be checked by anyone who
# rebuilds from the same commit with the same toolchain.
#
#   scripts/check-reproducible.sh          # ~2 guest builds
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags_of=$PWD/scripts/guest-flags.sh
build() { # checkout → release directory
    local root=$1 flags
    flags=$("$flags_of" "$root")
    (cd "$root/guests" && env -u CARGO_TARGET_DIR -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS \
        CARGO_ENCODED_RUSTFLAGS="$flags" cargo build -q --release --locked \
        --target wasm32-wasip1 --target-dir "$root/guests-target")
    echo "$root/guests-target/wasm32-wasip1/release"
}
for side in a b/deeper/path; do
    mkdir -p "$work/$side"
    git clone -q . "$work/$side/tally"
done
first=$(build "$work/a/tally")
second=$(build "$work/b/deeper/path/tally")
status=0
count=0
for f in "$first"/*.wasm; do
    count=$((count + 1))
    if ! cmp -s "$f" "$second/$(basename "$f")"; then
        echo "differs: $(basename "$f")"
        status=1
    fi
done
[ "$status" = 0 ] && echo "reproducible: $count modules identical across two checkouts"
exit "$status"
