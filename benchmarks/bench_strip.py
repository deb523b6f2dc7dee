"""strip --no-verify against a plain onnx.load + onnx.save round trip, and against peers doing the same cut.

    python benchmarks/bench_strip.py

Each row runs in fresh Python processes (time measured around the work, after imports; peak RSS is
the process's); baseline and strip are measured alternately, 3 x 5 runs each, median time. The
models are generated decoded YOLOv6 (0.3-style, DFL) exports of the yolov6n and yolov6l sizes
(benchmarks/.cache, made on first use). The peers are given the prediction-conv tensor names
headcut found and extract the subgraph up to them.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, fresh, machine, model, table  # noqa: E402

RUNS = 5

ROUND_TRIP = """
import onnx
t = time.perf_counter()
m = onnx.load(SRC)
onnx.save(m, DST)
RESULT = {'seconds': time.perf_counter() - t}
"""

STRIP = """
from onnx_headcut.strip import strip
t = time.perf_counter()
strip(SRC, DST, verify=False, force=True)
RESULT = {'seconds': time.perf_counter() - t}
"""

EXTRACT = """
import onnx, onnx.utils
t = time.perf_counter()
onnx.utils.extract_model(SRC, DST, [INPUT], OUTPUTS)
RESULT = {'seconds': time.perf_counter() - t}
"""

GRAPHSURGEON = """
import onnx, onnx_graphsurgeon as gs
t = time.perf_counter()
g = gs.import_onnx(onnx.load(SRC))
tensors = g.tensors()
g.outputs = [tensors[n].to_variable(dtype=__import__('numpy').float32) for n in OUTPUTS]
g.cleanup()
onnx.save(gs.export_onnx(g), DST)
RESULT = {'seconds': time.perf_counter() - t}
"""

SNE4ONNX = """
from sne4onnx import extraction
t = time.perf_counter()
extraction(input_op_names=[INPUT], output_op_names=OUTPUTS, input_onnx_file_path=SRC, output_onnx_file_path=DST,
           non_verbose=True)
RESULT = {'seconds': time.perf_counter() - t}
"""


def measure(code: str, src: Path, dst: Path, names: dict) -> tuple[float, float]:
    """Median time and max peak RSS over RUNS fresh processes, each writing a new file (no overwrite cost)."""
    runs = []
    for k in range(RUNS):
        out = dst.with_name(f"{dst.stem}-{k}.onnx")
        prefix = f"SRC, DST = {str(src)!r}, {str(out)!r}\nINPUT = {names['input']!r}\nOUTPUTS = {names['outputs']!r}\n"
        runs.append(fresh(prefix + code))
        for f in out.parent.glob(out.stem + "*"):
            f.unlink()
    return statistics.median(r["seconds"] for r in runs), max(r["peak_rss_mb"] for r in runs)


def main() -> str:
    sys.path.insert(0, str(ROOT))
    from onnx_headcut.strip import inspect

    rows = []
    for name in ("yolov6n-size", "yolov6l-size"):
        src = model(name)
        head = inspect(src).head
        names = {"input": head.input_name, "outputs": [b.tensor for lv in head.levels for b in lv.branches]}
        size = src.stat().st_size / 1e6
        with tempfile.TemporaryDirectory() as d:
            # the baseline and strip alternate, so that drift in disk speed hits both alike
            pairs = [(measure(ROUND_TRIP, src, Path(d, "rt.onnx"), names),
                      measure(STRIP, src, Path(d, "s.onnx"), names))
                     for _ in range(3)]
            base_t = statistics.median(p[0][0] for p in pairs)
            base_m = max(p[0][1] for p in pairs)
            strip_t = statistics.median(p[1][0] for p in pairs)
            strip_m = max(p[1][1] for p in pairs)
            tools = [("onnx.load + onnx.save (baseline)", ROUND_TRIP), ("headcut strip --no-verify", STRIP),
                     ("onnx.utils.extract_model", EXTRACT), ("onnx-graphsurgeon cut", GRAPHSURGEON)]
            try:
                __import__("sne4onnx")
                tools.append(("sne4onnx", SNE4ONNX))
            except ImportError:
                rows.append([name, f"{size:.0f}", "sne4onnx", "not installed", "", "", ""])
            for label, code in tools:
                if code is ROUND_TRIP:
                    t, m = base_t, base_m
                elif code is STRIP:
                    t, m = strip_t, strip_m
                else:
                    t, m = measure(code, src, Path(d, "out.onnx"), names)
                rows.append([name, f"{size:.0f}", label, f"{t:.3f}", f"{t / base_t:.2f}x",
                             f"{m:.0f}", f"{m / base_m:.2f}x"])
    text = table(["model", "MB", "tool", "time (s)", "vs round trip", "peak RSS (MB)", "vs round trip"], rows)
    return text


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
    if "--json" in sys.argv:
        print(json.dumps({"table": out}))
