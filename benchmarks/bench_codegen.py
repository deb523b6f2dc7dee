"""The generated C++ decode + class-aware NMS (``headcut codegen``) against the numpy reference.

    python benchmarks/bench_codegen.py

The same trained-looking raw tensors as ``bench_decode.py`` (scores mostly far below the threshold,
20 objects of 6 anchors each) at 640x640, 8400 anchors, 80 classes; per-level layouts are the same
rows laid out as one (1, C, h, w) buffer per level. The header is generated from each geometry,
compiled with ``g++ -std=c++17 -O2`` and timed in its harness (``decode_main --repeat``: decode +
NMS only, the raw buffers already in memory, one core; median and fastest of 2000 calls); numpy is
``onnx_headcut.decode.detect``, median of 300 calls. Both must give the same detections. Needs g++.
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
from onnx_headcut.decode import detect  # noqa: E402
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


def cases() -> dict[str, tuple[Geometry, list[np.ndarray]]]:
    v6 = geometry("grid_exp_obj", 640, 3, 80)
    af = geometry("dist_anchor", 640, 3, 80)
    v8 = geometry("dist_anchor", 640, 3, 80, reg_max=15)  # Ultralytics: 16 bins, 64 + 80 columns
    lv6, g6 = levels_of(raw_like(v6), v6)
    laf, gaf = levels_of(raw_like(af), af)
    return {
        "(1, 8400, 85) YOLOv6 0.1.0 / YOLOX, flat": (v6, [raw_like(v6)]),
        "3 x (1, 85, h, w) YOLOv6 0.1.0 / YOLOX, levels": (g6, lv6),
        "(1, 8400, 84) anchor-free, no DFL, flat": (af, [raw_like(af)]),
        "(1, 8400, 144) YOLOv8 DFL, flat": (v8, [raw_like(v8)]),
        "3 x (1, 84, h, w) anchor-free, levels": (gaf, laf),
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
    rows = []
    for label, (g, outs) in cases().items():
        raw = outs if g.layout == "levels" else outs[0]
        ref = detect(raw, g, CONF, IOU)
        t_cpp, got = cpp_ms(build(g, folder), outs, folder)
        assert len(got) == len(ref) and np.allclose(got, ref, atol=1e-3), f"{label}: C++ and numpy disagree"
        t_np = median_ms(lambda raw=raw, g=g: detect(raw, g, CONF, IOU))
        rows.append([label, len(ref), f"{t_cpp[0]:.3f}", f"{t_cpp[1]:.3f}", f"{t_np:.3f}", f"{t_np / t_cpp[0]:.0f}x"])
    return table(["raw output(s)", "detections", "C++ decode + NMS, median (ms)", "fastest (ms)", "numpy detect (ms)",
                  "speed-up"], rows)


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
