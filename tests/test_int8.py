"""``verify --int8`` on the trained sample: onnxruntime QDQ int8 against the fp32 original's detections.

Calibration and held-out images are generated scenes (:func:`onnx_headcut.synth.scenes.save_scenes`)
with seeds of their own, apart from the training (15) and mAP (15 + 1 000 000) seeds.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnx_headcut.check.int8 import agreement, parse_layouts, verify_int8
from onnx_headcut.errors import UsageError
from onnx_headcut.heads import Layout
from onnx_headcut.report import int8_text
from onnx_headcut.synth.scenes import save_scenes

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "samples" / "trained" / "shapes-yolov8-320.onnx"
CALIB_SEED, EVAL_SEED = 15 + 2_000_000, 15 + 3_000_000


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    save_scenes(root / "calib", CALIB_SEED, 32)
    save_scenes(root / "eval", EVAL_SEED, 32)
    return root


@pytest.fixture(scope="module")
def report(images):
    return verify_int8(TRAINED, calib=images / "calib", eval_dir=images / "eval", method="minmax",
                       layouts=parse_layouts("split,flat"))


def test_split_survives_int8(report):
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["original (decoded)", "split", "flat"]
    assert report.calib_images == 32 and report.eval_images == 32 and report.method == "minmax"
    split = rows["split"]
    assert split.reference > 50  # the fp32 sample detects most shapes of 32 scenes at conf 0.25
    assert split.recall >= 0.9 and split.precision >= 0.9
    assert split.mean_iou >= 0.9 and split.score_error <= 0.05
    decoded = rows["original (decoded)"]  # measured, whatever it is (0 here: scores drown beside pixels)
    assert decoded.reference == split.reference and 0 <= decoded.recall <= 1
    assert report.best is not None and report.best.name in ("split", "flat")
    text = int8_text(report)
    assert re.search(r"split\s+0\.9\d\d\s+[01]\.\d{3}", text) and "use       " in text
    assert "original (decoded)" in text and "onnxruntime " in text
    # a detection head: no task figures, nan in every row and no column for them
    assert report.task == "detect" and "mask IoU" not in text and "angle err" not in text and "kpt err" not in text
    assert all(math.isnan(v) for r in report.rows for v in (r.mask_iou, r.min_mask_iou, r.angle_error,
                                                            r.keypoint_error))


def test_agreement_counts_pairs_one_to_one():
    ref = [np.array([[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 2]], np.float32)]
    det = [np.array([[0, 0, 10, 11, 0.85, 1], [0, 0, 10, 10, 0.7, 1], [20, 20, 30, 30, 0.8, 0]], np.float32)]
    a = agreement("x", det, ref)  # the second box duplicates a matched one; the third has the wrong class
    assert (a.reference, a.detections, a.matched) == (2, 3, 1)
    assert a.recall == 0.5 and a.precision == pytest.approx(1 / 3)
    assert a.score_error == pytest.approx(0.05) and a.mean_iou == pytest.approx(100 / 110)
    empty = agreement("y", [np.zeros((0, 6), np.float32)], ref)
    assert empty.recall == 0 and np.isnan(empty.precision)


def test_best_prefers_agreement_then_score_error_and_skips_empty_rows():
    from onnx_headcut.check.int8 import Agreement, Int8Report

    rows = (Agreement("original (decoded)", 10, 0, 0, float("nan"), float("nan")),
            Agreement("flat", 10, 10, 9, 0.02, 0.9), Agreement("split", 10, 10, 9, 0.01, 0.9),
            Agreement("levels", 10, 0, 0, float("nan"), float("nan")),
            Agreement("flat-split", 10, 4, 0, float("nan"), float("nan")))
    assert Int8Report("m.onnx", "minmax", "1", 1, 1, 0.25, rows).best is rows[2]
    assert Int8Report("m.onnx", "minmax", "1", 1, 1, 0.25, rows[:1] + rows[3:]).best is rows[4]
    assert Int8Report("m.onnx", "minmax", "1", 1, 1, 0.25, rows[:1] + rows[3:4]).best is None


def test_parse_layouts():
    assert parse_layouts("flat, split+dfl,flat-split+sum") == (Layout("flat"), Layout("split", keep_dfl=True),
                                                               Layout("flat-split", score_sum=True))
    with pytest.raises(UsageError, match=r"\+bins"):
        parse_layouts("split+bins")
    with pytest.raises(UsageError, match="--layout must be one of"):
        parse_layouts("columns")


def test_cli_with_a_raw_model_and_min_recall(images, tmp_path):
    raw = tmp_path / "flat.onnx"
    p = _cli("strip", TRAINED, "-o", raw)
    assert p.returncode == 0, p.stderr
    p = _cli("verify", TRAINED, raw, "--int8", "--calib", images / "calib", "--eval", images / "eval",
             "--min-recall", "1.0")
    m = re.search(r"^  flat\s+(\d\.\d{3})", p.stdout, re.M)
    assert m, p.stdout + p.stderr
    recall = float(m.group(1))
    assert p.returncode == (0 if recall >= 1.0 else 3), p.stderr
    if p.returncode == 3:
        assert "below --min-recall 1.0" in p.stderr and p.stderr.count("\n") == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["flat.head.json", "flat.onnx"]  # nothing written beside


@pytest.mark.parametrize("args, message", [
    (["--calib", "{missing}", "--layouts", "split"], "no such calibration folder"),
    (["--calib", "{empty}", "--layouts", "split"], "calibration folder has no images"),
    (["--calib", "{calib}", "--calib-method", "kl", "--layouts", "split"], "--calib-method must be one of"),
    (["--calib", "{calib}"], "needs a RAW model or --layouts"),
    (["--layouts", "split"], "--int8 needs --calib DIR"),
    (["--calib", "{calib}", "--layouts", "split+bins"], "unknown option +bins"),
    (["--calib", "{calib}", "--layouts", "split", "--min-recall", "2"], "--min-recall must be in [0, 1]"),
    (["--calib", "{calib}", "--layouts", "split", "--engine", "mnn"], "--engine and --image do not apply"),
    (["--calib", "{calib}", "--layouts", "split", "--conf", "1.5"], "--conf must be in [0, 1]"),
])
def test_cli_bad_input_exits_2(images, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "calib": images / "calib"}
    p = _cli("verify", TRAINED, "--int8", *(a.format(**paths) for a in args))
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and p.stderr.count("\n") == 1 and p.stdout == ""


def test_calib_options_belong_to_int8(images):
    p = _cli("verify", TRAINED, TRAINED, "--calib", images / "calib")
    assert p.returncode == 2 and "--calib belongs to verify --int8" in p.stderr


def test_quantize_writes_only_its_destination_and_prints_nothing(images, tmp_path, capfd):
    from onnx_headcut.pipeline import decoded_head
    from onnx_headcut.quantize import image_files, model_inputs, quantize

    head = decoded_head(TRAINED)
    xs = model_inputs(image_files(images / "calib")[:2], (320, 320), head.preprocess)
    assert xs[0].shape == (1, 3, 320, 320) and xs[0].dtype == np.float32
    out = quantize(TRAINED, tmp_path / "q.onnx", head.input_name, xs, "percentile")
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert sorted(f.name for f in tmp_path.iterdir()) == ["q.onnx", "q.pre.onnx"]
    assert capfd.readouterr().out == ""  # the percentile calibrator's progress lines are swallowed


def test_quantize_an_opset_12_export(images, tmp_path):
    """YOLOv6 0.1.0 exports are opset 12: per-channel QDQ needs DequantizeLinear's axis (opset 13), so
    the model is converted first (before, onnxruntime refused the quantized model: 'Unrecognized attribute: axis')."""
    import onnx
    import onnxruntime as ort

    from onnx_headcut.pipeline import decoded_head
    from onnx_headcut.quantize import image_files, model_inputs, quantize

    src = ROOT / "samples" / "yolov6-v0.1.0-320.onnx"
    assert onnx.load(str(src)).opset_import[0].version == 12
    head = decoded_head(src)
    xs = model_inputs(image_files(images / "calib")[:2], (320, 320), head.preprocess)
    out = quantize(src, tmp_path / "q.onnx", head.input_name, xs, "minmax")
    q = onnx.load(str(out))
    assert next(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert any(n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute) for n in q.graph.node)
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {head.input_name: xs[0]})[0]
    assert y.shape == tuple(head.output_shape) and np.isfinite(y).all()


def test_int8_max_errors_skip_rows_the_original_overflows():
    """A random-weight YOLOX original's fp32 ``exp`` overflows to inf on generated scenes; inf - inf made the
    README's reported box error nan for every target. Rows whose reference is not finite are left out; a nan
    the int8 side makes where the reference is finite is an infinite error, never hidden."""
    from onnx_headcut.check.engine_int8 import _max_errors

    ref = np.array([[10, 10, 20, 20, 0.5], [-np.inf, 0, np.inf, 9, 0.9], [0, 0, 4, 4, 0.1]], np.float32)
    got = np.array([[11, 10, 20, 22, 0.25], [-np.inf, 0, np.inf, 9, 0.1], [0, 0, 4, 4, 0.1]], np.float32)
    assert _max_errors(got, ref) == (2.0, 0.25)
    got[2, 1] = np.nan
    assert _max_errors(got, ref)[0] == np.inf
    assert all(np.isnan(_max_errors(got[1:2], ref[1:2])))  # no finite row: nothing measured
    assert all(np.isnan(_max_errors(got[:2], ref)))  # shapes differ
