"""The reference OCR pipeline, as a host would run it without Tally:
rapidocr-onnxruntime 1.4.4 on the same PP-OCRv4 det/rec files, the detector
limited to a longer side of 960 (as Tally's OCR package), no angle
classifier, one ONNX Runtime thread. One image per process; prints one JSON
line per text line, as the OCR package does.

Usage: python peer_ocr.py IMAGE DET.onnx REC.onnx
"""
import json
import sys

from rapidocr_onnxruntime import RapidOCR

image, det, rec = sys.argv[1:4]
engine = RapidOCR(
    det_model_path=det,
    rec_model_path=rec,
    det_limit_type="max",
    det_limit_side_len=960,
    use_cls=False,
    intra_op_num_threads=1,
    inter_op_num_threads=1,
)
result, _ = engine(image, use_cls=False)
for box, text, score in result or []:
    print(json.dumps({"text": text, "confidence": float(score)}, ensure_ascii=False))
