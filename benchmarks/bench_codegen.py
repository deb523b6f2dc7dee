"""The generated C++ decode + class-aware NMS (``headcut codegen``) against the numpy reference.

    python benchmarks/bench_codegen.py

The same trained-looking raw tensors as ``bench_decode.py`` (scores mostly far below the threshold,
20 objects of 6 anchors each) at 640x640, 8400 anchors, 80 classes; per-level layouts are the same
rows laid out as one (1, C, h, w) buffer per level, the split layout as a box, a score and a
score-sum output per level, the top-k head (YOLO26 end-to-end) selects 300 without NMS. The header
is generated from each geometry, compiled with ``g++ -std=c++17 -O2`` and timed in its harness
(``decode_main --repeat``: decode + NMS only, the raw buffers already in memory, one core; median
and fastest of 2000 calls); numpy is ``onnx_headcut.decode.detect`` (the top-k head:
``selected(original_output)``), median of 300 calls. Both must give the same detections. Needs g++.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import CACHE, machine, table  # noqa: E402
from bench_decode import geometry, median_ms, raw_like  # noqa: E402

from onnx_headcut.codegen import generate  # noqa: E402
from onnx_headcut.decode import detect, original_output, selected  # noqa: E402
from onnx_headcut.heads import Geometry  # noqa: E402
from onnx_headcut.numeric import sigmoid  # noqa: E402

CONF, IOU, REPEAT = 0.25, 0.45, 2000


def levels_of(raw: np.ndarray, g: Geometry) -> tuple[list[np.ndarray], Geometry]:
    """The flat rows ``raw`` of ``g`` as the levels layout: one (1, C, h, w) per level. The anchor-free
    heads' levels layout is ``[sigmoid(cls) * nc, l, t, r, b]`` (what YOLOv6's demo reads)."""
    cols = g.columns()
    if g.decode == "dist_anchor":
        raw = np.concatenate([sigmoid(raw[..., cols["cls"]]), raw[..., cols["reg"]]], -1)
        g = replace(g, channels=(("cls", g.num_classes, True), ("reg", 4, False)))
    out, at = [], 0
    for h, w in g.grids:
        out.append(np.ascontiguousarray(raw[:, at:at + h * w].transpose(0, 2, 1).reshape(1, -1, h, w)))
        at += h * w
    return out, replace(g, layout="levels")


def split_of(raw: np.ndarray, g: Geometry) -> tuple[list[np.ndarray], Geometry]:
    """The flat rows ``raw`` of ``g`` as the split layout with the score sum: per level a (1, box, h, w), a
    (1, nc, h, w) and a (1, 1, h, w) output, the sum as rknn_model_zoo computes it (clip(sum sigmoid, 0, 1))."""
    cols, out, at = g.columns(), [], 0
    box = next(r for r in ("box", "reg", "dfl") if r in cols)
    for h, w in g.grids:
        rows = raw[0, at:at + h * w]
        at += h * w
        cls = rows[:, cols["cls"]]
        total = np.clip(sigmoid(cls).sum(1, keepdims=True), 0, 1)
        out += [np.ascontiguousarray(p.T.reshape(1, -1, h, w)) for p in (rows[:, cols[box]], cls, total)]
    return out, replace(g, layout="split", score_sum=True)


def reference(outs: list[np.ndarray], g: Geometry) -> np.ndarray:
    """What headcut detect reports (input pixels): NMS, or a top-k head's selection."""
    return selected(original_output(outs, g), CONF) if g.topk else detect(outs, g, CONF, IOU)


def cases() -> dict[str, tuple[Geometry, list[np.ndarray]]]:
    v6 = geometry("grid_exp_obj", 640, 3, 80)
    af = geometry("dist_anchor", 640, 3, 80)
    v8 = geometry("dist_anchor", 640, 3, 80, reg_max=15)  # Ultralytics: 16 bins, 64 + 80 columns
    lv6, g6 = levels_of(raw_like(v6), v6)
    laf, gaf = levels_of(raw_like(af), af)
    saf, gsaf = split_of(raw_like(af), af)
    e2e = replace(af, topk=300, xyxy=True)
    return {
        "(1, 8400, 85) YOLOv6 0.1.0 / YOLOX, flat": (v6, [raw_like(v6)]),
        "3 x (1, 85, h, w) YOLOv6 0.1.0 / YOLOX, levels": (g6, lv6),
        "(1, 8400, 84) anchor-free, no DFL, flat": (af, [raw_like(af)]),
        "(1, 8400, 144) YOLOv8 DFL, flat": (v8, [raw_like(v8)]),
        "3 x (1, 84, h, w) anchor-free, levels": (gaf, laf),
        "3 x [(1, 4, h, w), (1, 80, h, w), (1, 1, h, w)] anchor-free, split + score sum": (gsaf, saf),
        "(1, 8400, 84) YOLO26 end-to-end, flat, top-k 300": (e2e, [raw_like(af)]),
    }


def build(g: Geometry, folder: Path) -> Path:
    """decode_main generated for ``g`` and compiled with -O2 (cached by the generated sources)."""
    src = folder / "src"
    hpp, main = generate(g, src, force=True, name="bench")
    key = hashlib.sha256(hpp.read_bytes() + main.read_bytes()).hexdigest()[:16]
    exe = folder / f"decode_main-{key}"
    if not exe.exists():
        gxx = shutil.which("g++")
        if gxx is None:
            raise RuntimeError("bench_codegen needs g++")
        subprocess.run([gxx, "-std=c++17", "-O2", str(main), "-o", str(exe)], check=True)
    return exe


def cpp_ms(exe: Path, outs: list[np.ndarray], folder: Path) -> tuple[float, np.ndarray]:
    files = []
    for k, y in enumerate(outs):
        files.append(folder / f"out{k}.bin")
        y.astype("<f4").tofile(files[-1])
    p = subprocess.run([str(exe), *map(str, files), "--conf", str(CONF), "--iou", str(IOU), "--repeat", str(REPEAT)],
                       capture_output=True, text=True, check=True)
    dets = np.array([[*d["box"], d["score"], d["class"]] for d in map(json.loads, p.stdout.splitlines())])
    t = json.loads(p.stderr.strip().splitlines()[-1])
    return (t["ms_per_decode"], t["ms_fastest"]), dets.reshape(-1, 6)


def main() -> str:
    folder = CACHE / "codegen"
    folder.mkdir(parents=True, exist_ok=True)
    rows, load = [], [os.getloadavg()[0]]
    for label, (g, outs) in cases().items():
        ref = reference(outs, g)
        t_cpp, got = cpp_ms(build(g, folder), outs, folder)
        assert len(got) == len(ref) and np.allclose(got, ref, atol=1e-3), f"{label}: C++ and numpy disagree"
        t_np = median_ms(lambda outs=outs, g=g: reference(outs, g))
        rows.append([label, len(ref), f"{t_cpp[0]:.3f}", f"{t_cpp[1]:.3f}", f"{t_np:.3f}", f"{t_np / t_cpp[0]:.0f}x"])
        load.append(os.getloadavg()[0])
    note = (f"\n\nLoad while measuring (1-minute load average, {os.cpu_count()} cores): "
            f"{min(load):.1f} to {max(load):.1f}; g++ {gxx_version()} -O2.")
    return table(["raw output(s)", "detections", "C++ decode + NMS, median (ms)", "fastest (ms)", "numpy detect (ms)",
                  "speed-up"], rows) + note


def gxx_version() -> str:
    gxx = shutil.which("g++")
    out = subprocess.run([gxx, "-dumpfullversion"], capture_output=True, text=True).stdout.strip() if gxx else ""
    return out or "?"


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
