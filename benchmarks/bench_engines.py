"""Inference time of the raw model against the original on onnxruntime, MNN and ncnn.

    python benchmarks/bench_engines.py

Generated decoded YOLOv6 (0.3-style, DFL) models of the yolov6n and yolov6s sizes at 640x640;
the raw model is what ``headcut strip`` writes (its decode then runs in numpy, timed separately by
bench_decode.py). Median of 30 runs after 3 warm-up runs, default threads of each engine. MNN and
ncnn run in a worker process (the model loaded once); the conversion time is not counted.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine, model, table  # noqa: E402

REPEAT = 30


def ort_ms(path: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    for _ in range(3):
        s.run(None, feed)
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def engine_ms(engine: str, path: Path, x: np.ndarray, in_name: str, out_names: list) -> float:
    from onnx_headcut.engines import worker

    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d, "in.npz"), x)
        Path(d, "spec.json").write_text(json.dumps({"model": str(path), "input": in_name, "outputs": out_names,
                                                    "repeat": REPEAT}))
        return json.loads(worker([engine, "bench", d]))["ms"]


def main() -> str:
    from onnx_headcut.convert import convert
    from onnx_headcut.strip import strip

    rows = []
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    for name in ("yolov6n-size", "yolov6s-size"):
        with tempfile.TemporaryDirectory() as d:
            orig = Path(d, "original.onnx")
            orig.write_bytes(model(name).read_bytes())
            strip(orig, Path(d, "raw.onnx"))
            times = {}
            for which in ("original", "raw"):
                src = Path(d, f"{which}.onnx")
                times["ort", which] = ort_ms(src, x)
                for engine in ("mnn", "ncnn"):
                    try:
                        c = convert(src, engine, force=True)
                        times[engine, which] = engine_ms(engine, c.model, x, c.inputs[0], list(c.outputs))
                    except Exception as e:  # a failed conversion is a result, not a crash
                        times[engine, which] = f"fails ({str(e)[:60]})"
            for engine in ("ort", "mnn", "ncnn"):
                o, r = times[engine, "original"], times[engine, "raw"]
                ratio = f"{r / o:.2f}x" if isinstance(o, float) and isinstance(r, float) else "—"
                fmt = (lambda v: f"{v:.2f}" if isinstance(v, float) else v)
                rows.append([name, engine, fmt(o), fmt(r), ratio])
    return table(["model", "engine", "original (ms)", "raw (ms)", "raw / original"], rows)


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
