"""Print (or write into README.md) the engine table: does each head convert and match on each target?

For every bundled sample head (:data:`HEADS`) and the trained samples (:data:`TRAINED`): the original decoded
model and the raw model from ``headcut strip`` are converted with ``headcut convert`` for each target of the engine
registry (:data:`onnx_headcut.engines.TARGETS`) and checked with ``headcut verify``'s check. fp32: the
three layers (raw outputs against the original's prediction convs, decode against the original output,
detections); the cell gives the max box error in px. int8, for a target whose module quantizes
(``INT8``), calibrated on scenes of :mod:`onnx_headcut.synth.scenes`: the decoded outputs' max box (px)
and score errors for the random-weight samples, and for the trained samples the detection agreement with
the fp32 original (recall / precision, same class, IoU >= 0.5).

    python scripts/engine_table.py                          # every target this machine can run
    python scripts/engine_table.py --targets ncnn,openvino  # only these
    python scripts/engine_table.py --write                  # replace the table between the README markers
    python scripts/engine_table.py --targets tflite --precision int8 --cache cells.json   # a part, kept

With ``--cache FILE`` each measured cell is kept in FILE (JSON) and not measured again, so the slow columns
can be measured by separate runs (``--targets``, ``--precision``, ``--heads``) and one last run writes the
table from all of them.

A target runs in ``$HEADCUT_PYTHON_<TARGET>`` when set (e.g. TFLite's own virtualenv), else here.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx_headcut.check.engine import conf_reached_by, verify_engine  # noqa: E402
from onnx_headcut.convert import convert  # noqa: E402
from onnx_headcut.engines import MODULES, TARGETS, EngineError, interpreter  # noqa: E402
from onnx_headcut.errors import HeadcutError  # noqa: E402
from onnx_headcut.heads import Layout  # noqa: E402
from onnx_headcut.strip import strip  # noqa: E402
from onnx_headcut.synth.scenes import save_scenes  # noqa: E402

START, END = "<!-- engine-table:start -->", "<!-- engine-table:end -->"

HEADS = {  # sample file -> what it stands for
    "yolov6-v0.1.0-320.onnx": "YOLOv6 0.1.0",
    "yolov6-v0.1.0-320-inplace.onnx": "YOLOv6 0.1.0 `--inplace` (ScatterND)",
    "yolov6n-v0.3-320.onnx": "YOLOv6 0.3 anchor-free (n/s)",
    "yolov6m-v0.3-dfl-320.onnx": "YOLOv6 0.3 anchor-free + DFL (m/l)",
    "yolov6lite-192x320.onnx": "YOLOv6-Lite, 4 levels, 192x320",
    "yolox-320.onnx": "YOLOX (ScatterND decode)",
    "yolov5-320.onnx": "YOLOv5",
    "yolov7-320.onnx": "YOLOv7",
    "yolov8-320.onnx": "YOLOv8 (onnxslim, opset 18)",
}
#: the trained samples, one per decode kind (their int8 cells are detection agreement, the others' decoded-output
#: errors)
TRAINED = {"trained/shapes-yolov8-320.onnx": "trained YOLOv8 shapes sample",
           "trained/shapes-yolox-320.onnx": "trained YOLOX shapes sample",
           "trained/shapes-yolov5-320.onnx": "trained YOLOv5 shapes sample"}
#: rows stripped into another layout than strip's default: (sample file, row label, layout)
LAYOUTS = [("trained/shapes-yolov8-320.onnx", "trained YOLOv8 shapes sample, raw `--layout split`", "split")]
#: calibration scenes for the int8 cells (apart from the sample's training and test seeds)
CALIB_SEED, CALIB_COUNT = 15 + 5_000_000, 12


def _packages(target: str, int8: bool = False) -> list[str]:
    m = MODULES[target]
    need = [m.PACKAGES[0], getattr(m, "CONVERTER", m.PACKAGES[-1])]
    return need + ([m.QUANTIZER] if int8 and getattr(m, "QUANTIZER", None) else [])


def runs_here(target: str, int8: bool = False) -> bool:
    """The worker interpreter of ``target`` (``HEADCUT_PYTHON_<TARGET>`` honoured) imports its packages."""
    try:
        python = interpreter(target)
    except EngineError:
        return False
    code = "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))"
    mods = _packages(target, int8) + (["pnnx"] if target == "ncnn" else [])
    return subprocess.run([python, "-c", code, *mods], capture_output=True).returncode == 0


def _short(e: Exception) -> str:
    return str(e).split("): ", 1)[-1].replace("|", "/")[:70]


def tidy(cell: str) -> str:
    """A cell as the table shows it: scratch paths cut to the file name."""
    return re.sub(r"(/[^\s/]+)+/([^\s/]+\.(onnx|param|mnn|xml|tflite))", r"\2", cell)


def fp32_cell(model: Path, original: Path, target: str, conf: float) -> str:
    try:
        c = convert(model, target, model.parent / target, force=True)
        chk = verify_engine(original, c.model, conf=conf)[0]
    except HeadcutError as e:
        return f"fails: {_short(e)}"
    return f"{chk.max_abs_err_boxes:.1e} px" if chk.ok else f"differs ({(chk.failure() or '')[:60]})"


def int8_cell(model: Path, original: Path, target: str, calib: Path, conf: float, trained: bool) -> str:
    try:
        c = convert(model, target, model.parent / f"{target}-int8", force=True, int8=True, calib=calib)
        a = verify_engine(original, c.model, conf=conf, int8=True, min_recall=0.0)[0].agreement
    except HeadcutError as e:
        return f"fails: {_short(e)}"
    assert a is not None  # an int8 check
    errors = f"{a.max_abs_err_boxes:.2g} px / {a.max_abs_err_scores:.2g}"
    return f"R {a.recall:.2f} P {a.precision:.2f} ({errors})" if trained else errors


class Cache:
    """Cells already measured (``--cache FILE``), merged into FILE under a lock as each one is measured."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def _load(self) -> dict:
        return json.loads(self.path.read_text()) if self.path is not None and self.path.is_file() else {}

    def get(self, key: str) -> str | None:
        return self._load().get(key)

    def put(self, key: str, value: str) -> None:
        if self.path is None:
            return
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cells = self._load()
            cells[key] = value
            self.path.write_text(json.dumps(cells, indent=1, ensure_ascii=False))


def table(targets: list[str], int8: bool = True, fp32: bool = True, heads: list[str] | None = None,
          cache: Cache | None = None, cached_only: bool = False) -> str:
    """The markdown table for ``targets``: fp32 columns, then (``int8``) an int8 column per target that quantizes;
    ``heads``: only the samples whose file name contains one of these."""
    cache = cache or Cache(None)
    quantizes = [t for t in targets if int8 and getattr(MODULES[t], "INT8", False) and runs_here(t, int8=True)]
    cols = [(t, "fp32") for t in targets if fp32] + [(t, "int8") for t in quantizes]
    # the float column is each target's own default precision (RKNN builds fp16)
    rows = ["| head | " + " | ".join(f"{t} {getattr(MODULES[t], 'FLOAT', 'fp32') if p == 'fp32' else p}: original → raw"
                                     for t, p in cols) + " |",
            "|---" * (len(cols) + 1) + "|"]
    with tempfile.TemporaryDirectory() as d:
        calib = Path(d, "calib")
        save_scenes(calib, CALIB_SEED, CALIB_COUNT)
        for name, label, layout in [*((n, lb, None) for n, lb in [*HEADS.items(), *TRAINED.items()]), *LAYOUTS]:
            if heads and not any(h in name for h in heads):
                continue
            trained = name in TRAINED
            folder = Path(d, Path(name).stem + (f"-{layout}" if layout else ""))
            folder.mkdir()
            orig = folder / "original.onnx"
            shutil.copy(ROOT / "samples" / name, orig)
            strip(orig, folder / "raw.onnx", **({"layout": Layout(layout)} if layout else {}))
            conf = 0.25 if trained else conf_reached_by(orig, 20)
            cells = []
            for t, p in cols:
                got = []
                for w in ("original", "raw"):
                    key = f"{name}{f'#{layout}' if layout and w == 'raw' else ''}|{t}|{p}|{w}"
                    cell = cache.get(key)
                    if cell is None and cached_only:
                        cell = "not measured"
                    if cell is None:
                        cell = (fp32_cell(folder / f"{w}.onnx", orig, t, conf) if p == "fp32" else
                                int8_cell(folder / f"{w}.onnx", orig, t, calib, conf, trained))
                        cache.put(key, cell)
                    got.append(tidy(cell))
                cells.append(" → ".join(got))
                print(f"{label}: {t} {p}: {cells[-1]}", file=sys.stderr, flush=True)
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    rows.append("")
    rows.append(f"Generated by `python scripts/engine_table.py --write` ({', '.join(targets)}) on {platform.machine()} "
                f"Python {platform.python_version()}. fp32 cells: `headcut verify`'s three layers passed (raw "
                "outputs against the original's prediction convs within 1e-3, decode against the original output, "
                "detections after class-aware NMS: same anchors, classes, IoU ≥ 0.99; OpenVINO asked for f32, its "
                "CPU plugin's bf16 default is not used) and the max box error; random-weight samples at a threshold "
                "their 20 best scores reach (RKNN's float column is fp16, its default build, checked with fp16 "
                "tolerances). int8 cells (`headcut convert --int8`, calibrated on "
                f"{CALIB_COUNT} generated scenes): max abs error of the decoded boxes (px) / scores against the fp32 "
                "original over every row; for the trained samples also the detection agreement at conf 0.25 "
                "(R: share of the fp32 detections kept, P: share of the int8 detections that are the fp32 ones; "
                "same class, IoU ≥ 0.5) over verify's random input and 8 generated scenes; rows the fp32 "
                "original overflows in (a random-weight YOLOX's `exp` on scenes) are left out of the errors.")
    return "\n".join(rows)


def verdicts(text: str) -> dict[str, list[str]]:
    """Each column of a table (by header) with its numbers blanked: what a fresh run must reproduce (error
    magnitudes may move with the CPU's kernels)."""
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in text.strip().splitlines()
            if r.startswith("| ")]
    if not rows:
        return {}
    blank = lambda c: re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", c)
    return {h: [blank(r[k]) for r in rows[1:] if k < len(r)] for k, h in enumerate(rows[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="replace the table in README.md")
    ap.add_argument("--targets", help=f"comma-separated targets (default: those of {', '.join(TARGETS)} that run here)")
    ap.add_argument("--precision", choices=("fp32", "int8", "both"), default="both", help="which columns")
    ap.add_argument("--heads", help="comma-separated parts of sample file names: only those rows")
    ap.add_argument("--cache", metavar="FILE", help="keep measured cells in FILE and reuse them")
    ap.add_argument("--cached-only", action="store_true", help="with --cache: measure nothing, say 'not measured'")
    args = ap.parse_args()
    if args.targets:
        targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        bad = [t for t in targets if t not in TARGETS]
        if bad:
            raise SystemExit(f"unknown target {bad[0]!r} (choose from {', '.join(TARGETS)})")
        missing = [t for t in targets if not runs_here(t)]
        if missing:
            raise SystemExit(f"{missing[0]} does not run here: install it or set HEADCUT_PYTHON_{missing[0].upper()}")
    else:
        targets = [t for t in TARGETS if runs_here(t)]
    heads = [h.strip() for h in args.heads.split(",")] if args.heads else None
    t = table(targets, args.precision != "fp32", args.precision != "int8", heads, Cache(args.cache), args.cached_only)
    if not args.write:
        print(t)
        return
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{t}\n{END}{tail}")
    print(t)


if __name__ == "__main__":
    main()
