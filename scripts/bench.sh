#!/usr/bin/env bash
# The performance table of issue #12 in one run on this machine, every
# ratio taken pair by pair in the same run:
#
#   1. in-process (cargo bench --bench inference): each backend's sandboxed
#      pipeline against the same pipeline calling the same engine natively,
#      and the backends against native tract;
#   2. whole process (scripts/bench/whole.py): `tally run` and `tally
#      verify` per backend against the Python pipelines a host would
#      otherwise run — rapidocr-onnxruntime 1.4.4 and silero VAD in ONNX
#      Runtime, one thread each, same ONNX files, same inputs.
#
# The peers live in an ignored virtualenv ($TALLY_ASSETS/venv-peers, pinned
# versions). Usage: scripts/bench.sh [N] (N whole-process runs per cell,
# default 5; TALLY_BENCH_ITERS sets the in-process iterations, default 7).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}

rustup target add wasm32-wasip1 >/dev/null
./scripts/fetch-assets.sh
assets=${TALLY_ASSETS:-$PWD/.assets}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}

venv="$assets/venv-peers"
if ! "$venv/bin/python" -c 'import rapidocr_onnxruntime, onnxruntime' 2>/dev/null; then
    echo "== installing the Python peers into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet rapidocr-onnxruntime==1.4.4 onnxruntime==1.31.1
fi

echo "== building tally and the guests" >&2
./scripts/build.sh -q
tally="$target_dir/debug/tally"
guests=guests/target/wasm32-wasip1/release

work="$target_dir/bench"
rm -rf "$work"
mkdir -p "$work/keys"
export TALLY_HOME="$work/home"
"$tally" graph-meta "$assets/ch_PP-OCRv4_rec_infer.onnx" character > "$work/keys/ppocr_keys.txt"
"$tally" keygen --out "$work/publisher.key" >/dev/null
for pkg in ocr vad; do
    "$tally" pack "manifests/$pkg/tally.toml" --key "$work/publisher.key" --out "$work/$pkg.tally" \
        --search "$guests" --search "$assets" --search "$work/keys" >/dev/null
done
ocr=$("$tally" publish "$work/ocr.tally")
vad=$("$tally" publish "$work/vad.tally")
"$venv/bin/python" scripts/bench/speech.py "$work/speech.wav"

echo "== in process (cargo bench --bench inference)"
cargo bench --locked -q --workspace --bench inference --profile dev 2>/dev/null
echo
echo "== whole process"
"$venv/bin/python" scripts/bench/whole.py "$tally" "$TALLY_HOME" "$ocr" "$vad" \
    manifests/ocr/sample.png "$work/speech.wav" "$assets" "$n"
