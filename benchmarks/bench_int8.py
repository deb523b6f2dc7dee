"""int8 (onnxruntime static QDQ) against fp32, decoded original vs each raw layout: two README tables.

    python benchmarks/bench_int8.py            # print both tables
    python benchmarks/bench_int8.py --write    # replace them in the README (int8 section)
    python benchmarks/bench_int8.py --only trained|random

Every model is quantized by :func:`onnx_headcut.quantize.quantize` (``quantize_static``, QDQ, S8S8,
per-channel weights), calibrated on generated scenes (:func:`onnx_headcut.synth.scenes.save_scenes`,
seed 15 + 2 000 000) and run on other scenes (seed 15 + 3 000 000); raw layouts are the original
stripped (and verified) by ``headcut strip``.

1. Trained samples (``samples/trained``, one a head kind): detection agreement with the fp32
   original at conf 0.25 (:func:`onnx_headcut.check.int8.verify_int8`, what ``headcut verify --int8``
   runs): recall / precision of matched detections (same class, IoU >= 0.5), mean score error and
   mean IoU of the matches, for the decoded original and each raw layout (``+dfl``: ``--keep-dfl``,
   where the head has DFL), MinMax and percentile calibration.
2. Bundled samples (``samples/*.onnx``, random weights, so scores are noise and detections mean
   nothing): the largest int8 error over every anchor of the decoded rows (boxes cx, cy, w, h in input
   pixels; scores obj × cls) against the fp32 original, for the decoded original and each raw layout
   decoded by numpy, MinMax calibration.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, table  # noqa: E402

from onnx_headcut.check.int8 import layout_name, verify_int8  # noqa: E402
from onnx_headcut.heads import Geometry, Layout  # noqa: E402
from onnx_headcut.synth.scenes import save_scenes  # noqa: E402

CALIB_SEED, EVAL_SEED = 15 + 2_000_000, 15 + 3_000_000
N_CALIB, N_EVAL = 64, 64  # trained samples
N_CALIB_RANDOM, N_EVAL_RANDOM = 16, 8  # random-weight samples (errors over every anchor of each input)
#: trained sample -> what it stands for (scripts/train_sample.py --head v8 / yolox / v5)
TRAINED = {"shapes-yolov8-320.onnx": "YOLOv8 (DFL)", "shapes-yolox-320.onnx": "YOLOX (objectness)",
           "shapes-yolov5-320.onnx": "YOLOv5 (anchors)"}
METHODS = ("minmax", "percentile")
KINDS = ("flat", "split", "flat-split")
START, END = "<!-- int8-tables:start -->", "<!-- int8-tables:end -->"


def layouts(dfl: bool) -> tuple[Layout, ...]:
    """flat, split, flat-split, each also with the DFL kept when the head has DFL."""
    return tuple(Layout(k, d) for k in KINDS for d in ((False, True) if dfl else (False,)))


def _f(v: float, digits: int = 3) -> str:
    return "—" if v != v else f"{v:.{digits}f}"


def _rows(label: str, rep) -> list[list]:
    best = rep.best
    return [[label, r.name + (" **(use)**" if best is not None and r is best else ""), rep.method, r.reference,
             _f(r.recall), _f(r.precision), _f(r.score_error, 4), _f(r.mean_iou)] for r in rep.rows]


HEADER = ["trained sample", "layout", "calibration", "fp32 detections", "int8 recall", "int8 precision",
          "mean score error", "mean IoU"]
RANDOM_HEADER = ["bundled sample (random weights)", "decoded original: boxes / scores", *KINDS]


def trained_table(calib: Path, held: Path) -> tuple[str, str]:
    rows, version = [], ""
    for name, label in TRAINED.items():
        path = ROOT / "samples" / "trained" / name
        from onnx_headcut.pipeline import decoded_head

        dfl = decoded_head(path).dfl
        for method in METHODS:
            rep = verify_int8(path, calib=calib, eval_dir=held, method=method, layouts=layouts(dfl), conf=0.25)
            rows += _rows(f"{Path(name).stem}, {label}", rep)
            version = rep.ort_version
    return table(HEADER, rows), version


def _errors(rows: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float, float]:
    """Largest |int8 - fp32| of boxes (cx, cy, w, h) and scores (column 4 × classes) over all inputs, on
    the anchors whose fp32 box is finite (random YOLOX weights on 0-255 input overflow ``exp`` to inf);
    an int8 value that is not finite there (nan, inf) makes the error inf."""
    def worst(a: np.ndarray, b: np.ndarray) -> float:
        d = np.abs(a - b)
        return float(np.where(np.isfinite(d), d, np.inf).max()) if d.size else 0.0

    box = score = 0.0
    for r, f in zip(rows, ref):
        ok = np.isfinite(f[..., :4]).all(-1)
        box = max(box, worst(r[..., :4][ok], f[..., :4][ok]))
        score = max(score, worst((r[..., 4:5] * r[..., 5:])[ok], (f[..., 4:5] * f[..., 5:])[ok]))
    return box, score


def random_errors(sample: Path, cal_x, eval_x, work: Path) -> dict[str, tuple[float, float]]:
    """``{"original": (box, score), layout name: ...}`` max int8 errors of one decoded sample."""
    from onnx_headcut.check.int8 import _session
    from onnx_headcut.decode import canonical, decode
    from onnx_headcut.metadata import head_for
    from onnx_headcut.pipeline import decoded_head
    from onnx_headcut.quantize import quantize
    from onnx_headcut.strip import strip

    head = decoded_head(sample)
    fp32 = _session(sample)
    ref = [canonical(fp32.run([head.final_output], {head.input_name: x})[0], head) for x in eval_x]
    q = _session(quantize(sample, work / "original.int8.onnx", head.input_name, cal_x, "minmax"))
    out = {"original": _errors([canonical(q.run([head.final_output], {head.input_name: x})[0], head)
                                for x in eval_x], ref)}
    for k, lay in enumerate(layouts(head.dfl)):
        raw = work / f"raw{k}.onnx"
        strip(sample, raw, layout=lay)
        meta = head_for(raw)
        assert meta is not None
        g, names = Geometry.of(meta), [o["name"] for o in meta["raw_outputs"]]
        qs = _session(quantize(raw, work / f"raw{k}.int8.onnx", meta["input"]["name"], cal_x, "minmax"))
        out[layout_name(lay)] = _errors([decode(qs.run(names, {meta["input"]["name"]: x}), g) for x in eval_x], ref)
    return out


def _cell(errs: dict[str, tuple[float, float]], key: str) -> str:
    if key not in errs:
        return "—"
    return " / ".join("overflow" if v == np.inf else f"{v:.3g}{unit}" for v, unit in zip(errs[key], (" px", "")))


def random_table(calib: Path, held: Path) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from engine_table import HEADS

    from onnx_headcut.pipeline import decoded_head
    from onnx_headcut.quantize import image_files, model_inputs

    rows = []
    for name, label in HEADS.items():
        sample = ROOT / "samples" / name
        head = decoded_head(sample)
        size = (int(head.input_shape[-2]), int(head.input_shape[-1]))
        cal_x = model_inputs(image_files(calib), size, head.preprocess)
        eval_x = model_inputs(image_files(held)[:N_EVAL_RANDOM], size, head.preprocess)
        with tempfile.TemporaryDirectory(prefix="headcut-bench-int8-") as tmp:
            errs = random_errors(sample, cal_x[:N_CALIB_RANDOM], eval_x, Path(tmp))
        rows.append([f"{label} (`{name}`)", _cell(errs, "original"),
                     *(" · ".join(c for c in (_cell(errs, k), _cell(errs, k + " +dfl")) if c != "—") for k in KINDS)])
    return table(RANDOM_HEADER, rows)


def main(only: str | None = None) -> str:
    parts = []
    with tempfile.TemporaryDirectory(prefix="headcut-bench-int8-") as tmp:
        calib, held = Path(tmp) / "calib", Path(tmp) / "eval"
        save_scenes(calib, CALIB_SEED, N_CALIB)
        save_scenes(held, EVAL_SEED, N_EVAL)
        import onnxruntime

        version = onnxruntime.__version__
        if only in (None, "trained"):
            text, version = trained_table(calib, held)
            parts.append(f"Trained samples: onnxruntime {version} `quantize_static`, QDQ, S8S8, per-channel "
                         f"weights; {N_CALIB} calibration scenes, {N_EVAL} held-out scenes, conf 0.25; "
                         f"**(use)** marks the layout the report recommends.\n\n{text}")
        if only in (None, "random"):
            parts.append(f"Bundled samples (random weights): onnxruntime {version}, MinMax calibration on "
                         f"{N_CALIB_RANDOM} scenes, max |int8 − fp32| over every anchor of {N_EVAL_RANDOM} "
                         "held-out scenes (anchors whose fp32 box is finite), boxes (cx, cy, w, h, input pixels) / "
                         "scores (obj × cls), *overflow*: the int8 value is nan or inf there; a raw "
                         "layout's cell is the numpy decode of its int8 outputs (`+dfl` second where the "
                         f"head has DFL).\n\n{random_table(calib, held)}")
    return "\n\n".join(parts)


def write(text: str, only: str | None) -> None:
    """Replace the README's int8 tables (with ``only``, that table's paragraph) between the markers."""
    readme = ROOT / "README.md"
    s = readme.read_text()
    head, rest = s.split(START, 1)
    old, tail = rest.split(END, 1)
    if only is not None:
        keep = [p for p in old.strip().split("\n\n") if p]
        blocks = {("trained" if b.startswith("Trained") else "random"): b for b in _paragraphs(keep)}
        blocks[only] = text
        text = "\n\n".join(blocks[k] for k in ("trained", "random") if k in blocks)
    readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def _paragraphs(chunks: list[str]) -> list[str]:
    """Note + table pairs: each note paragraph starts a block, the table after it joins it."""
    out: list[str] = []
    for c in chunks:
        if c.startswith("|") and out:
            out[-1] += "\n\n" + c
        else:
            out.append(c)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the tables in README.md")
    ap.add_argument("--only", choices=("trained", "random"))
    args = ap.parse_args()
    out = main(args.only)
    print(f"Machine: {machine()}\n")
    print(out)
    if args.write:
        write(out, args.only)
