"""``headcut convert --int8`` on OpenVINO (NNCF) and TFLite (onnx2tf full-integer), and ``verify`` of the result
by detection agreement with the fp32 original, on the trained sample (its raw split head and its decoded
original). The calibration scenes have a seed of their own (:mod:`onnx_headcut.synth.scenes`); verify adds
its random input and 8 scenes of another seed (:mod:`onnx_headcut.check.engine_int8`).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from engine_venvs import headcut
from engine_venvs import one_line_exit_2 as _one_line_exit_2
from test_targets import needs

from onnx_headcut.check import AgreementCheck, Check
from onnx_headcut.check.engine import verify_engine
from onnx_headcut.convert import calibration_npy, convert
from onnx_headcut.errors import InputError
from onnx_headcut.heads import Layout
from onnx_headcut.metadata import converted_record, head_for, read_metadata
from onnx_headcut.report import verify_text
from onnx_headcut.strip import strip
from onnx_headcut.synth.scenes import save_scenes

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "samples" / "trained" / "shapes-yolov8-320.onnx"
CALIB_SEED, CALIB_COUNT = 15 + 2_000_000, 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("trained-int8")
    shutil.copy(TRAINED, d / "original.onnx")
    strip(d / "original.onnx", d / "raw.onnx", layout=Layout("split"))
    save_scenes(d / "calib", CALIB_SEED, CALIB_COUNT)
    return d


def test_calibration_npy_is_the_models_own_preprocess(trained, tmp_path):
    """One float32 NCHW file, every image letterboxed and scaled as verify and detect feed the model."""
    from onnx_headcut.preprocess import Preprocess
    from onnx_headcut.quantize import image_files, model_inputs

    path = calibration_npy(trained / "raw.onnx", onnx.load(str(trained / "raw.onnx")), trained / "calib", tmp_path)
    x = np.load(path)
    assert x.dtype == np.float32 and x.shape == (CALIB_COUNT, 3, 320, 320)
    ref = model_inputs(image_files(trained / "calib"), (320, 320), Preprocess.of(read_metadata(trained / "raw.onnx")))
    assert np.array_equal(x, np.concatenate(ref)) and 0 <= x.min() and x.max() <= 1


def test_agreement_check_never_certifies_without_reference_detections():
    empty = AgreementCheck("NNCF", 9, 0.25, 0, 3, 0, math.nan, math.nan, 1.0, 0.1)
    assert not empty.ok and "detects nothing" in str(empty)
    c = Check("9 inputs", None, None, None, "openvino (CPU f32)", agreement=empty)
    assert not c.ok and c.not_checked() == () and "int8 detection agreement" in (c.failure() or "")
    good = AgreementCheck("NNCF", 9, 0.25, 32, 29, 28, 0.95, 0.03, 51.0, 0.26, min_recall=0.8)
    assert good.ok and good.recall == 28 / 32 and good.precision == 28 / 29
    assert not AgreementCheck("NNCF", 9, 0.25, 32, 29, 28, 0.95, 0.03, 51.0, 0.26, min_recall=0.9).ok
    text = verify_text([Check("9 inputs", None, None, None, "openvino (CPU f32)", agreement=good)])
    assert "int8 (NNCF): OK" in text and "28 of 32 fp32 detections kept" in text and "51 px" in text


def test_converted_precision_is_checked(trained, tmp_path):
    meta = read_metadata(trained / "raw.onnx")
    (tmp_path / "raw.xml").write_text("")
    io = {"input": {"name": "images", "layout": "same"},
          "outputs": [{"name": o["name"], "layout": "same"} for o in meta["raw_outputs"]]}
    side = tmp_path / "raw.xml.head.json"
    side.write_text(json.dumps({**meta, "converted": {"engine": "openvino", **io, "precision": "int4"}}))
    with pytest.raises(InputError, match="converted.precision must be one of fp32, fp16, int8"):
        head_for(tmp_path / "raw.xml")


def test_min_recall_needs_an_int8_candidate(trained):
    p = headcut("verify", trained / "original.onnx", trained / "raw.onnx", "--min-recall", "0.9")
    _one_line_exit_2(p, "--min-recall belongs to verify --int8, or to an int8 converted CANDIDATE")


@needs("openvino-int8")
def test_openvino_int8_raw_and_original_on_the_trained_sample(trained, tmp_path):
    out = tmp_path / "ov"
    p = headcut("convert", trained / "raw.onnx", "--to", "openvino", "--int8", "--calib", trained / "calib", "-o", out)
    assert p.returncode == 0, p.stderr
    assert "precision int8" in p.stdout
    assert sorted(f.name for f in out.iterdir()) == ["raw.bin", "raw.xml", "raw.xml.head.json"]
    rec = json.loads((out / "raw.xml.head.json").read_text())["converted"]
    assert rec["precision"] == "int8" and rec["quantizer"].startswith("NNCF ") and rec["calib_samples"] == CALIB_COUNT
    raw_outputs = read_metadata(trained / "raw.onnx")["raw_outputs"]
    assert [o["onnx"] for o in rec["outputs"]] == [o["name"] for o in raw_outputs]
    assert (out / "raw.xml").read_text().count('type="FakeQuantize"') >= 40  # every conv's inputs quantized
    p = headcut("verify", trained / "original.onnx", out / "raw.xml")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "on openvino (CPU f32), int8 (NNCF " in p.stdout and "exact   not checked" in p.stdout
    (check,) = verify_engine(trained / "original.onnx", out / "raw.xml")
    a = check.agreement
    assert check.layout is None and check.decode is None and a is not None and check.engine == "openvino (CPU f32)"
    # measured with NNCF 3.4 (mixed preset): 28 of 32 kept, 28-29 int8 detections, mean IoU 0.97
    assert a.inputs == 9 and a.reference >= 25 and a.recall >= 0.85 and a.precision >= 0.9 and a.mean_iou >= 0.9
    assert 0 < a.max_abs_err_boxes < 320 and 0 < a.max_abs_err_scores < 1  # reported, not gating
    p = headcut("verify", trained / "original.onnx", out / "raw.xml", "--min-recall", "1.0")
    assert p.returncode == 3 and "int8 detection agreement" in p.stderr and p.stderr.count("\n") == 1, p.stderr

    # the decoded original, measured beside it: NNCF leaves the decode's arithmetic in float (only conv inputs
    # are quantized), so it agrees as well as the raw head here (28 of 32 measured)
    c = convert(trained / "original.onnx", "openvino", tmp_path / "orig", int8=True, calib=trained / "calib")
    # no head to record: its precision is in original.xml.converted.json, which verify reads (before: it had to
    # be told int8=True, and the CLI could not be, so it ran the fp32 layers and failed)
    assert c.precision == "int8" and head_for(c.model) is None
    assert sorted(p.name for p in c.files) == ["original.bin", "original.xml", "original.xml.converted.json"]
    assert converted_record(c.model)["precision"] == "int8"
    (orig,) = verify_engine(trained / "original.onnx", c.model)
    b = orig.agreement
    assert b is not None and b.reference == a.reference and b.recall >= 0.8
    p = headcut("verify", trained / "original.onnx", c.model, "--min-recall", "0.5")
    assert p.returncode == 0 and "int8 (NNCF " in p.stdout, p.stdout + p.stderr

    # an fp32 conversion into the same folder replaces the int8 record (never a stale one read)
    p = headcut("convert", trained / "raw.onnx", "--to", "openvino", "-o", out)
    _one_line_exit_2(p, "already exists")
    p = headcut("convert", trained / "raw.onnx", "--to", "openvino", "-o", out, "--force")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "raw.xml.head.json").read_text())["converted"]["precision"] == "fp32"
    assert verify_engine(trained / "original.onnx", out / "raw.xml")[0].layout is not None  # three layers again


@needs("tflite")
def test_tflite_full_integer_int8_on_the_trained_sample(trained, tmp_path):
    c = convert(trained / "raw.onnx", "tflite", tmp_path, int8=True, calib=trained / "calib")
    assert c.precision == "int8" and c.io is not None
    rec = json.loads((tmp_path / "raw.tflite.head.json").read_text())["converted"]
    assert rec["precision"] == "int8" and rec["quantizer"].startswith("onnx2tf ")
    q = [o["quantization"] for o in rec["outputs"]]  # each output's own scale and zero point
    assert len(q) == 6 and all(t["dtype"] == "int8" and t["scale"] > 0 and -128 <= t["zero_point"] <= 127 for t in q)
    assert rec["input"]["quantization"]["dtype"] == "int8"
    (check,) = verify_engine(trained / "original.onnx", c.model)
    a = check.agreement
    assert a is not None and a.reference >= 25
    # measured with onnx2tf 1.29.24: 29 of 32 kept, 29 int8 detections, mean IoU 0.97, max errors 29 px / 0.095
    assert a.recall >= 0.85 and a.precision >= 0.9 and a.mean_iou >= 0.9
