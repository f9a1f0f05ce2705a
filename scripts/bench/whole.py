"""Whole-process timings for scripts/bench.sh: `tally run` and `tally
verify` per backend against the Python peers a host would otherwise run
(rapidocr-onnxruntime for OCR, silero VAD in ONNX Runtime), on the same
models and inputs, each the median of N fresh processes, pair by pair in
one run. Prints a table of medians and ratios.

Usage: python whole.py TALLY HOME OCR_ID VAD_ID IMAGE WAV ASSETS N
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

tally, home, ocr_id, vad_id, image, wav, assets, n = sys.argv[1:9]
n = int(n)
here = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, TALLY_HOME=home, ORT_DYLIB_PATH=os.path.join(assets, "libonnxruntime.so.1.31.1"))
work = tempfile.mkdtemp(prefix="tally-bench-")


def median_s(argv):
    """Median wall time of `argv` over n runs, after one warm-up run (which
    also fills Tally's compiled-module cache and the page cache)."""
    times = []
    for i in range(n + 1):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def tally_run(pkg, inp, backend):
    out, rec = os.path.join(work, "out"), os.path.join(work, f"{backend}.json")
    return [tally, "run", pkg, "--input", inp, "--output", out, "--receipt", rec, "--backend", backend]


def tally_verify(inp, backend):
    return [tally, "verify", os.path.join(work, f"{backend}.json"), "--input", inp, "--backend", backend]


py = sys.executable
peers = {
    "OCR": [py, os.path.join(here, "peer_ocr.py"), image,
            os.path.join(assets, "ch_PP-OCRv4_det_infer.onnx"),
            os.path.join(assets, "ch_PP-OCRv4_rec_infer.onnx")],
    "VAD": [py, os.path.join(here, "peer_vad.py"), wav,
            os.path.join(assets, "silero_vad_openvino_16k.onnx")],
}
jobs = {"OCR": (ocr_id, image), "VAD": (vad_id, wav)}

print(f"whole process, median of {n} (after one warm-up run each)")
print(f"{'job':<5} {'backend':<12} {'tally run':>10} {'peer':>9} {'run/peer':>9} {'verify':>9} {'verify/run':>11}")
for job, (pkg, inp) in jobs.items():
    peer = median_s(peers[job])
    for backend in ["onnxruntime", "tract", "portable"]:
        run = median_s(tally_run(pkg, inp, backend))
        verify = median_s(tally_verify(inp, backend))
        print(f"{job:<5} {backend:<12} {run:>8.3f} s {peer:>7.3f} s {run / peer:>8.2f}x "
              f"{verify:>7.3f} s {verify / run:>10.2f}x", flush=True)


def serve_throughput(workers, pkg, inp, backend, runs, clients):
    """Runs/s of `tally serve --workers W`: `runs` OCR runs posted by
    `clients` concurrent clients on loopback, after one warm-up run."""
    import base64
    import json
    import socket
    import threading
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [tally, "serve", "--listen", f"127.0.0.1:{port}", "--workers", str(workers),
         "--backend", backend],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"package_id": pkg, "input": base64.b64encode(open(inp, "rb").read()).decode()}).encode()

        def post():
            req = urllib.request.Request(f"{url}/v1/runs", data=body,
                                         headers={"content-type": "application/json"})
            with urllib.request.urlopen(req, timeout=600) as r:
                assert json.load(r)["receipt"]

        post()
        left = iter(range(runs))
        lock = threading.Lock()

        def client():
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                post()

        t = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return runs / (time.perf_counter() - t)
    finally:
        server.terminate()
        server.wait()


print(f"\ntally serve, OCR on native tract: {4 * n} runs from 4 concurrent clients on loopback")
print(f"{'workers':<8} {'runs/s':>8} {'vs 1 worker':>12}")
base = None
for workers in [1, 2]:
    rate = serve_throughput(workers, ocr_id, image, "tract", 4 * n, 4)
    base = base or rate
    print(f"{workers:<8} {rate:>8.2f} {rate / base:>11.2f}x", flush=True)
