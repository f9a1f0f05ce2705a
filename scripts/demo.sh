#!/usr/bin/env bash
# The main job, end to end on a fresh machine: build, then pack → publish →
# run → verify the image-stats package on a sample image.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
echo "== building tally and the guests"
cargo build --locked -p tally-cli
(cd guests && env -u CARGO_TARGET_DIR cargo build --locked --release --target wasm32-wasip1)  # in guests/ so its .cargo/config.toml applies
tally="$target_dir/debug/tally"
guests=guests/target/wasm32-wasip1/release

work="$target_dir/demo"
rm -rf "$work"
mkdir -p "$work/image-stats"
export TALLY_HOME="$work/home"
cp "$guests/preprocess.wasm" "$guests/tensor-stats.wasm" "$work/image-stats/"

echo "== keygen (publisher)"
publisher=$("$tally" keygen --out "$work/publisher.key")
digest() { "$tally" hash "$1" | cut -d' ' -f1; }
sed -e "s/@PUBLISHER@/$publisher/" \
    -e "s/@PREPROCESS@/$(digest "$work/image-stats/preprocess.wasm")/" \
    -e "s/@TENSOR_STATS@/$(digest "$work/image-stats/tensor-stats.wasm")/" \
    manifests/image-stats/tally.toml.in > "$work/image-stats/tally.toml"

echo "== pack"
"$tally" pack "$work/image-stats/tally.toml" --key "$work/publisher.key" --out "$work/image-stats.tally"
echo "== publish"
id=$("$tally" publish "$work/image-stats.tally")
echo "== inspect"
"$tally" inspect "$work/image-stats.tally"
echo "== run $id on manifests/image-stats/sample.png"
"$tally" run "$id" --input manifests/image-stats/sample.png --output "$work/out.jsonl" --receipt "$work/receipt.json"
echo "== output"
cat "$work/out.jsonl"
echo "== verify (native replay, then on the Pulley interpreter)"
"$tally" verify "$work/receipt.json" --input manifests/image-stats/sample.png
"$tally" verify "$work/receipt.json" --input manifests/image-stats/sample.png --target pulley
echo "== done: receipt at $work/receipt.json"
