"""int8 (onnxruntime static QDQ) detection agreement with the fp32 original, per raw layout.

    python benchmarks/bench_int8.py

``onnx_headcut.check.int8.verify_int8`` (what ``headcut verify --int8`` runs): each model quantized
with ``quantize_static`` (QDQ, S8S8, per-channel weights), calibrated on generated scenes
(:func:`onnx_headcut.synth.scenes.save_scenes`, seed 15 + 2 000 000), measured on other scenes
(seed 15 + 3 000 000) against the fp32 original's detections: recall / precision of matched
detections (same class, IoU >= 0.5), mean score error and mean IoU of the matches.

The trained sample (``samples/trained``, conf 0.25) for every layout, DFL kept in the graph
(``+dfl``, ``--keep-dfl``) or not, with MinMax, Percentile and Entropy calibration. The bundled
samples of the other head kinds are not measured: their weights are random, so at the README's conf
0.011 they give thousands of near-tied noise detections per 32 scenes (YOLOX: 7208) and agreement
between two runs of noise measures nothing (measured once: YOLOX split recall 0.049, decoded 0.000).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, table  # noqa: E402

from onnx_headcut.check.int8 import parse_layouts, verify_int8  # noqa: E402
from onnx_headcut.synth.scenes import save_scenes  # noqa: E402

CALIB_SEED, EVAL_SEED = 15 + 2_000_000, 15 + 3_000_000
N_CALIB, N_EVAL = 64, 64
TRAINED = ROOT / "samples" / "trained" / "shapes-yolov8-320.onnx"
TRAINED_LAYOUTS = "flat,flat+dfl,split,split+dfl,flat-split,flat-split+dfl"
METHODS = ("minmax", "percentile", "entropy")
def _f(v: float) -> str:
    return "—" if v != v else f"{v:.3f}"


def _rows(label: str, rep) -> list[list]:
    best = rep.best
    return [[label, r.name + (" **(use)**" if best is not None and r is best else ""), rep.method, r.reference,
             _f(r.recall), _f(r.precision), "—" if r.score_error != r.score_error else f"{r.score_error:.4f}",
             _f(r.mean_iou)] for r in rep.rows]


HEADER = ["model", "layout", "calibration", "fp32 detections", "int8 recall", "int8 precision",
          "mean score error", "mean IoU"]


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="headcut-bench-int8-") as tmp:
        calib, held = Path(tmp) / "calib", Path(tmp) / "eval"
        save_scenes(calib, CALIB_SEED, N_CALIB)
        save_scenes(held, EVAL_SEED, N_EVAL)
        trained = []
        for method in METHODS:
            rep = verify_int8(TRAINED, calib=calib, eval_dir=held, method=method,
                              layouts=parse_layouts(TRAINED_LAYOUTS), conf=0.25)
            trained += _rows("trained shapes-yolov8-320", rep)
        version = rep.ort_version
    note = (f"onnxruntime {version} `quantize_static`, QDQ, S8S8, per-channel weights; {N_CALIB} calibration "
            f"scenes, {N_EVAL} held-out scenes; **(use)** marks the layout the report recommends.")
    return "\n\n".join([note, table(HEADER, trained)])


if __name__ == "__main__":
    out = main()
    print(f"Machine: {machine()}\n")
    print(out)
