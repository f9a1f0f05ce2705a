"""Writes 10 s of 16 kHz mono 16-bit speech (espeak-ng, resampled, with
pauses) to the WAV file named by its argument: the VAD benchmark's input.

Usage: python speech.py OUT.wav
"""
import subprocess
import sys
import tempfile
import wave

import numpy as np

RATE = 16000
out = sys.argv[1]
parts = []
for words in ["Verifiable inference for everyone.", "Receipts can be replayed anywhere.",
              "Trust comes from checking, not from the host."]:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", f.name, words], check=True)
        with wave.open(f.name) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)
    t = np.arange(int(len(pcm) * RATE / rate)) * rate / RATE
    parts += [np.interp(t, np.arange(len(pcm)), pcm), np.zeros(RATE)]
audio = np.concatenate(parts)[: 10 * RATE]
audio = np.pad(audio, (0, 10 * RATE - len(audio)))
with wave.open(out, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(RATE)
    w.writeframes(np.clip(audio, -32768, 32767).astype("<i2").tobytes())
