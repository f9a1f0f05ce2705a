#!/usr/bin/env bash
# The main job, end to end on a fresh machine: build, fetch the models, then
# pack → publish → run → verify the PP-OCRv4 OCR package on a sample image,
# on the portable backend (tract compiled to wasm: the same bits everywhere).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null
./scripts/fetch-assets.sh
assets=${TALLY_ASSETS:-$PWD/.assets}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
echo "== building tally and the guests"
./scripts/build.sh
tally="$target_dir/debug/tally"
guests=guests/target/wasm32-wasip1/release

work="$target_dir/demo"
rm -rf "$work"
mkdir -p "$work/keys"
export TALLY_HOME="$work/home"
# The recogniser's character list travels inside its ONNX metadata.
"$tally" graph-meta "$assets/ch_PP-OCRv4_rec_infer.onnx" character > "$work/keys/ppocr_keys.txt"

echo "== keygen (publisher)"
"$tally" keygen --out "$work/publisher.key"

echo "== pack manifests/ocr/tally.toml (digests and publisher filled in by pack)"
"$tally" pack manifests/ocr/tally.toml --key "$work/publisher.key" --out "$work/ocr.tally" \
    --search "$guests" --search "$assets" --search "$work/keys"
echo "== publish"
id=$("$tally" publish "$work/ocr.tally")
echo "== inspect"
"$tally" inspect "$work/ocr.tally"
echo "== run $id on manifests/ocr/sample.png (backend: portable)"
"$tally" run "$id" --input manifests/ocr/sample.png --output "$work/out.jsonl" --receipt "$work/receipt.json"
echo "== recognised text"
sed -e 's/.*"text":"\(.*\)"}$/\1/' "$work/out.jsonl"
echo "== output ($work/out.jsonl)"
cat "$work/out.jsonl"
echo "== verify (replay on the portable backend: bit-exact)"
"$tally" verify "$work/receipt.json" --input manifests/ocr/sample.png
echo "== verify on another backend (native tract: each inference within the manifest's tolerance, the guests bit-exact)"
"$tally" verify "$work/receipt.json" --input manifests/ocr/sample.png --backend tract
echo "== done: receipt at $work/receipt.json"
