"""The reference VAD loop, as a host would run it without Tally: silero VAD
(the same `silero_vad_openvino_16k.onnx`) in ONNX Runtime, one thread, over
a 16 kHz mono 16-bit WAV in 512-sample steps with 64 samples of context and
the recurrent state carried, as Tally's `vad-probs` stage does. Prints the
speech segments (probability above 0.5) as JSON lines.

Usage: python peer_vad.py AUDIO.wav VAD.onnx
"""
import json
import sys
import wave

import numpy as np
import onnxruntime as ort

audio, model = sys.argv[1:3]
with wave.open(audio) as w:
    assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
    pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
samples = pcm.astype(np.float32) / 32768.0

opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
names = [i.name for i in session.get_inputs()]

state = np.zeros((2, 1, 128), dtype=np.float32)
window = np.zeros((1, 576), dtype=np.float32)
probs = []
for start in range(0, len(samples), 512):
    chunk = samples[start : start + 512]
    window[0, :64] = window[0, 512:]
    window[0, 64:] = 0.0
    window[0, 64 : 64 + len(chunk)] = chunk
    prob, state = session.run(None, {names[0]: window, names[1]: state})
    probs.append(float(prob.reshape(-1)[0]))

speech, begin = False, 0
for i, p in enumerate(probs + [0.0]):
    if p > 0.5 and not speech:
        speech, begin = True, i
    elif p <= 0.5 and speech:
        speech = False
        print(json.dumps({"start_ms": begin * 32, "end_ms": i * 32}))
