"""headcut convert + verify + detect on OpenVINO and TFLite, each in the worker, possibly in its own venv.

A target runs when its interpreter is configured (``HEADCUT_PYTHON_OPENVINO``, ``HEADCUT_PYTHON_TFLITE``,
e.g. ``/path/to/venv/bin/python``) or, unset, when this interpreter has its packages; otherwise its tests
skip saying so. The failure modes a user can cause (target not installed, bad interpreter, unsupported
platform, bad calibration folder) need no engine and always run.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import engine_venvs
import numpy as np
import onnx
import pytest
from conftest import model_conf
from engine_venvs import has, headcut
from engine_venvs import one_line_exit_2 as _one_line_exit_2

from onnx_headcut.check.engine import verify_engine
from onnx_headcut.convert import convert, match_outputs
from onnx_headcut.engines import MODULES, WORKER, EngineError
from onnx_headcut.errors import InputError, UsageError, VerificationError
from onnx_headcut.heads import Layout
from onnx_headcut.metadata import converted_record, head_for, read_metadata
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af, yolov6_v1, yolov8

#: raw models of every decode kind the targets are tested on: grid + exp (YOLOv6 0.1.0), anchor-free DFL
HEADS = {
    "v0.1.0": (yolov6_v1, dict(width=8)),
    "yolov8-dfl": (yolov8, dict(width=8)),
}  # (YOLOv6's DFL head: test_*_levels_layout_*)
#: the package each target's tests need in its interpreter (the one that runs, and for TFLite converts)
NEEDS = {"openvino": ("openvino",), "tflite": ("onnx2tf", "ai_edge_litert"), "openvino-int8": ("openvino", "nncf")}


def needs(target: str):
    """Skip unless ``target`` (``openvino``, ``tflite``, ``openvino-int8``: with NNCF) runs here."""
    return engine_venvs.needs(target.split("-")[0], NEEDS[target])


@pytest.fixture(scope="module")
def raw_models(tmp_path_factory):
    out = {}
    for name, (make, kw) in HEADS.items():
        d = tmp_path_factory.mktemp(name)
        onnx.save(make(**kw), str(d / "original.onnx"))
        strip(d / "original.onnx", d / "raw.onnx")
        out[name] = d
    return out


def _assert_exact(checks, engine_label: str):
    (check,) = checks
    assert check.engine == engine_label
    assert check.layout is not None and check.layout.ok and check.layout.max_abs_err <= 1e-4
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-4
    det = check.detections
    assert det.n_ref == det.n_got == det.matched >= 5 and det.min_iou >= 0.999
    assert check.ok


@needs("openvino")
@pytest.mark.parametrize("head", list(HEADS))
def test_openvino_convert_and_verify_raw(head, raw_models):
    d = raw_models[head]
    res = convert(d / "raw.onnx", "openvino", force=True)
    assert {p.name for p in res.files} == {"raw.xml", "raw.bin"}  # strip's raw.head.json is left as it is
    assert res.io is None and res.inputs == (read_metadata(d / "raw.onnx")["input"]["name"],)
    assert res.outputs == tuple(o.name for o in onnx.load(str(d / "raw.onnx")).graph.output)
    # the CPU plugin may default to bf16 (2 px here); verify asks for f32 and says it ran in f32
    _assert_exact(verify_engine(d / "original.onnx", res.model, conf=model_conf(d / "original.onnx")),
                  "openvino (CPU f32)")


@needs("tflite")
@pytest.mark.parametrize("head", list(HEADS))
def test_tflite_convert_and_verify_raw(head, raw_models):
    d = raw_models[head]
    res = convert(d / "raw.onnx", "tflite", force=True)
    assert {p.name for p in res.files} == {"raw.tflite", "raw.tflite.head.json"}
    meta = json.loads((d / "raw.tflite.head.json").read_text())
    assert meta["converted"]["engine"] == "tflite"
    assert meta["converted"]["input"]["layout"] == "NHWC"  # onnx2tf feeds 1xHxWx3
    assert [o["onnx"] for o in meta["converted"]["outputs"]] == [o["name"] for o in meta["raw_outputs"]]
    assert head_for(res.model) == meta and head_for(d / "raw.onnx") == read_metadata(d / "raw.onnx")
    _assert_exact(verify_engine(d / "original.onnx", res.model, conf=model_conf(d / "original.onnx")), "tflite")


@pytest.mark.parametrize("target", [pytest.param("openvino", marks=needs("openvino")),
                                    pytest.param("tflite", marks=needs("tflite"))])
def test_levels_layout_yolov6_dfl(target, tmp_path):
    """Per-level outputs (YOLOv6 DFL): onnx2tf returns them NHWC and shuffled; the recorded match puts them
    back in the raw outputs' order, NCHW."""
    onnx.save(yolov6_af(width=8, reg_max=16), str(tmp_path / "original.onnx"))
    strip(tmp_path / "original.onnx", tmp_path / "raw.onnx", layout=Layout("levels"))
    res = convert(tmp_path / "raw.onnx", target)
    names = [o.name for o in onnx.load(str(tmp_path / "raw.onnx")).graph.output]
    assert len(names) == 3
    if target == "tflite":
        assert res.io is not None and all(o["layout"] == "NHWC" for o in res.io["outputs"])
        assert [o["onnx"] for o in res.io["outputs"]] == names
    else:
        assert res.io is None and list(res.outputs) == names
    checks = verify_engine(tmp_path / "original.onnx", res.model, conf=model_conf(tmp_path / "original.onnx"))
    assert all(c.ok and c.layout is not None and c.layout.max_abs_err <= 1e-4 for c in checks)
    assert checks[0].detections.matched >= 5


@pytest.mark.parametrize("target", [pytest.param("openvino", marks=needs("openvino")),
                                    pytest.param("tflite", marks=needs("tflite"))])
def test_cli_convert_verify_detect(target, raw_models, tmp_path):
    from PIL import Image

    d = raw_models["v0.1.0"]
    out = tmp_path / "out"
    p = headcut("convert", d / "raw.onnx", "--to", target, "-o", out)
    assert p.returncode == 0, p.stderr
    assert f"engine    {target}" in p.stdout
    model = out / ("raw.xml" if target == "openvino" else "raw.tflite")
    assert model.is_file() and (out / ("raw.head.json" if target == "openvino" else "raw.tflite.head.json")).is_file()
    p = headcut("verify", d / "original.onnx", model, "--conf", model_conf(d / "original.onnx"))
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr
    if target == "openvino":
        assert "on openvino (CPU f32)" in p.stdout
    img = tmp_path / "img.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(img)
    conf = model_conf(d / "original.onnx")
    p = headcut("detect", model, img, "--json", "--conf", conf)
    q = headcut("detect", d / "raw.onnx", img, "--json", "--conf", conf)
    assert p.returncode == 0 == q.returncode, p.stderr + q.stderr
    got, ref = json.loads(p.stdout), json.loads(q.stdout)
    assert got["engine"] == target and len(got["detections"]) == len(ref["detections"]) >= 1
    for a, b in zip(got["detections"], ref["detections"]):
        assert a["class"] == b["class"] and np.allclose(a["box"], b["box"], atol=0.05)


# --- failure modes a user can cause: one line, exit 2, nothing written (no engine needed) ---------------------

@pytest.fixture(scope="module")
def one_raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    onnx.save(yolov6_v1(width=8), str(d / "original.onnx"))
    strip(d / "original.onnx", d / "raw.onnx")
    return d


def test_target_interpreter_missing_or_without_the_engine(one_raw):
    before = sorted(p.name for p in one_raw.iterdir())
    p = headcut("convert", one_raw / "raw.onnx", "--to", "tflite",
                env={"HEADCUT_PYTHON_TFLITE": str(one_raw / "no-such-python")})
    _one_line_exit_2(p, "HEADCUT_PYTHON_TFLITE=", "no such interpreter")
    if has(sys.executable, ("onnx2tf",)):
        pytest.skip("this Python has onnx2tf: the missing-package case needs one without it")
    p = headcut("convert", one_raw / "raw.onnx", "--to", "tflite", env={"HEADCUT_PYTHON_TFLITE": sys.executable})
    _one_line_exit_2(p, "the tflite engine needs the 'onnx2tf' package", "python3 -m venv VENV",
                     "HEADCUT_PYTHON_TFLITE=VENV/bin/python")
    assert sorted(p.name for p in one_raw.iterdir()) == before


@pytest.mark.skipif(importlib.util.find_spec("openvino") is not None, reason="openvino is installed here")
def test_openvino_not_installed_hint(one_raw, monkeypatch):
    monkeypatch.delenv("HEADCUT_PYTHON_OPENVINO", raising=False)
    p = headcut("convert", one_raw / "raw.onnx", "--to", "openvino", env={"HEADCUT_PYTHON_OPENVINO": ""})
    _one_line_exit_2(p, "needs the 'openvino' package", 'pip install "onnx_headcut[openvino]"')


@pytest.mark.parametrize("args, words", [
    (["--to", "openvino", "--target-platform", "rk3588"], ["--target-platform rk3588", "openvino converts for cpu"]),
    (["--to", "tflite", "--target-platform", "k230"], ["--target-platform k230", "tflite converts for cpu"]),
    (["--to", "mnn", "--int8", "--calib", "CALIB"], ["--int8: headcut does not quantize for mnn yet"]),
    (["--to", "ncnn", "--int8", "--calib", "CALIB"], ["--int8: headcut does not quantize for ncnn yet"]),
    (["--to", "openvino", "--int8", "--calib", "MISSING"], ["--calib", "not a folder"]),
    (["--to", "openvino", "--int8", "--calib", "EMPTY"], ["--calib", "no images in it"]),
    (["--to", "openvino", "--int8", "--calib", "CALIB", "--target-platform", "k230"], ["openvino converts for cpu"]),
    (["--to", "tflite", "--calib", "CALIB"], ["--calib", "--int8"]),
    (["--to", "tflite", "--int8"], ["--int8 needs --calib DIR"]),
    (["--to", "tflite", "--int8", "--calib", "MISSING"], ["not a folder"]),
    (["--to", "tflite", "--int8", "--calib", "EMPTY"], ["no images in it"]),
])
def test_bad_platform_and_calibration_exit_2(args, words, one_raw, tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "a.png").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    subst = {"CALIB": tmp_path / "calib", "MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty"}
    before = sorted(p.name for p in one_raw.iterdir())
    p = headcut("convert", one_raw / "raw.onnx", *[subst.get(a, a) for a in args])
    _one_line_exit_2(p, *words)
    assert sorted(p.name for p in one_raw.iterdir()) == before


@needs("tflite")
def test_tflite_decoded_original_is_recorded_and_verified(one_raw, tmp_path):
    """A decoded original has no head to record; onnx2tf still renames its outputs, so ``convert`` writes the
    tensor match as ``original.tflite.converted.json`` and ``verify`` runs the TFLite model through it (layers
    2 and 3 against the original). Before: refused with exit 2 ("has no head record")."""
    res = convert(one_raw / "original.onnx", "tflite", tmp_path)
    assert sorted(p.name for p in res.files) == ["original.tflite", "original.tflite.converted.json"]
    rec = json.loads((tmp_path / "original.tflite.converted.json").read_text())
    assert rec["engine"] == "tflite" and rec["precision"] == "fp32" and rec["input"]["layout"] == "NHWC"
    model = onnx.load(str(one_raw / "original.onnx"))
    assert [o["onnx"] for o in rec["outputs"]] == [o.name for o in model.graph.output]
    assert head_for(res.model) is None and converted_record(res.model) == rec
    (check,) = verify_engine(one_raw / "original.onnx", res.model, conf=model_conf(one_raw / "original.onnx"))
    assert check.ok and check.layout is None and check.engine == "tflite"
    assert check.max_abs_err_boxes <= 1e-3 and check.max_abs_err_scores <= 1e-4
    p = headcut("verify", one_raw / "original.onnx", res.model)
    assert p.returncode == 0 and "on tflite" in p.stdout, p.stdout + p.stderr


@needs("tflite")
@pytest.mark.parametrize("sample", ["yolov6n-v0.3-320.onnx", "yolov6-v0.1.0-320-inplace.onnx"])
def test_tflite_decoded_originals_with_constant_expands(sample, tmp_path):
    """YOLOv6 0.3's decoded export Expands its anchor points from constants, and onnx2tf 1.29 fails on that
    ("Output tensors of a Functional model must be the output of a TensorFlow Layer"); the ``--inplace`` export
    Expands its grids to a ``Shape``, and onnx2tf hangs there (10 min timeout). onnx2tf gets a copy with the
    constant subgraphs and static Shapes folded (``engine_rewrites.fold_constants``); verify compares with the
    unchanged file."""
    src = Path(__file__).resolve().parents[1] / "samples" / sample
    assert any(n.op_type == "Expand" for n in onnx.load(str(src)).graph.node)
    res = convert(src, "tflite", tmp_path)
    (check,) = verify_engine(src, res.model, conf=model_conf(src))
    assert check.ok and check.layout is None and check.max_abs_err_boxes <= 1e-3


@needs("tflite")
def test_tflite_runs_a_split_sized_by_a_constant_node(tmp_path):
    """The bundled onnxslim YOLOv8 sample sizes its C2f Split with a Constant node, which onnx2tf 1.29 turns into
    FlexSplitV (LiteRT: "Select TensorFlow op(s) ... not supported"); headcut hands onnx2tf a copy with the
    constants as initializers (``engine_rewrites.constants_to_initializers``), and the check compares with the
    unchanged file."""
    src = Path(__file__).resolve().parents[1] / "samples" / "yolov8-320.onnx"
    strip(src, tmp_path / "raw.onnx")
    m = onnx.load(str(tmp_path / "raw.onnx"))
    consts = {n.output[0] for n in m.graph.node if n.op_type == "Constant"}
    assert any(n.op_type == "Split" and n.input[1] in consts for n in m.graph.node)  # the case this is about
    res = convert(tmp_path / "raw.onnx", "tflite", tmp_path / "tfl")
    _assert_exact(verify_engine(src, res.model, conf=model_conf(src)), "tflite")


def test_unknown_target_and_model_type():
    from onnx_headcut.convert import check_options
    from onnx_headcut.engines import engine_for

    with pytest.raises(UsageError, match="unknown target 'tnn' .*openvino, tflite, rknn, nncase"):
        check_options("tnn")
    assert [engine_for(f"m{s}") for s in (".onnx", ".mnn", ".param", ".xml", ".tflite")] == \
        ["ort", "mnn", "ncnn", "openvino", "tflite"]
    with pytest.raises(EngineError, match=r"unknown model type \(expected one of .*\.tflite"):
        engine_for("m.pb")


# --- the worker runs in an engine venv that has nothing of headcut's but numpy ---------------------------------

def test_worker_and_targets_import_only_stdlib_numpy_and_their_engine():
    stdlib = set(sys.stdlib_module_names)
    for path in [WORKER, *(Path(m.__file__) for m in MODULES.values())]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: relative import (the worker loads it by path)"
                roots = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            else:
                continue
            module = MODULES.get(path.stem)
            engine_packages = set(getattr(module, "PACKAGES", ())) if module else set()
            for root in roots:
                assert root in stdlib or root in {"numpy", "__future__"} or root in engine_packages, \
                    f"{path.name} imports {root}"
                if root not in stdlib and root not in {"numpy", "__future__"}:  # engines: inside functions only
                    assert node.col_offset > 0, f"{path.name} imports {root} at the top"


def test_worker_needs_numpy_only_and_reports_a_missing_engine(tmp_path):
    """The worker started as a plain script in an interpreter where only numpy (and no headcut) is
    importable: unknown engine packages are reported as missing, not as a crash."""
    numpy_root = Path(np.__file__).resolve().parents[1]
    shim = tmp_path / "site"
    shim.mkdir()
    (shim / "numpy").symlink_to(numpy_root / "numpy")
    for extra in numpy_root.glob("numpy.libs"):
        (shim / extra.name).symlink_to(extra)
    env = {"PYTHONPATH": str(shim), "PATH": os.environ.get("PATH", "")}
    p = subprocess.run([sys.executable, "-S", "-s", str(WORKER), "openvino", "convert", "x.onnx",
                        str(tmp_path), "x", "{}"], capture_output=True, text=True, env=env, cwd=tmp_path)
    if "HEADCUT_MISSING" not in p.stdout:
        pytest.fail(p.stdout + p.stderr)
    assert p.returncode == 2 and json.loads(p.stdout.split("HEADCUT_MISSING ", 1)[1])["package"] == "openvino"


def test_worker_failure_is_said_by_its_first_line(tmp_path, monkeypatch):
    """onnx2tf's Expand failure ends its message with a printed array, and the traceback's last line was all the
    user saw ("tflite convert failed (exit 1): [39.5 39.5]]]"). The worker says ``Type: first line`` itself."""
    import shutil

    import onnx_headcut.engines as engines

    fake = tmp_path / "engines"
    fake.mkdir()
    shutil.copy(WORKER, fake / "_worker.py")
    (fake / "mnn.py").write_text("def convert(*a):\n    raise ValueError('Output tensors must be layers. Found: "
                                 "[[0.5]\\n [39.5 39.5]]]')\n")
    monkeypatch.setattr(engines, "WORKER", fake / "_worker.py")
    with pytest.raises(EngineError) as e:
        engines.worker(["mnn", "convert", "x.onnx", str(tmp_path), "x", "{}"])
    assert str(e.value) == "mnn convert failed (exit 1): ValueError: Output tensors must be layers. Found: [[0.5]"


# --- the tensor match onnx2tf's renaming and NHWC outputs need ------------------------------------------------

def _onnx_with_outputs(shapes):
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    outs = [helper.make_tensor_value_info(f"o{k}", TensorProto.FLOAT, s) for k, s in enumerate(shapes)]
    nodes = [helper.make_node("Identity", ["images"], [f"o{k}"]) for k in range(len(shapes))]
    return helper.make_model(helper.make_graph(nodes, "g", [inp], outs))


def test_match_outputs_by_shape_nhwc_and_shuffled():
    m = _onnx_with_outputs([[1, 85, 8, 8], [1, 85, 4, 4], [1, 85, 2, 2]])
    res = {"inputs": [{"name": "serving_default_images:0", "shape": [1, 64, 64, 3]}],
           "outputs": [{"name": "PartitionedCall:0", "shape": [1, 2, 2, 85]},
                       {"name": "PartitionedCall:1", "shape": [1, 8, 8, 85]},
                       {"name": "PartitionedCall:2", "shape": [1, 4, 4, 85]}]}
    io = match_outputs(m, res)
    assert io["input"] == {"name": "serving_default_images:0", "layout": "NHWC", "shape": [1, 64, 64, 3]}
    assert [(o["name"], o["layout"], o["onnx"]) for o in io["outputs"]] == [
        ("PartitionedCall:1", "NHWC", "o0"), ("PartitionedCall:2", "NHWC", "o1"), ("PartitionedCall:0", "NHWC", "o2")]
    flat = _onnx_with_outputs([[1, 84, 85]])
    io = match_outputs(flat, {"inputs": res["inputs"], "outputs": [{"name": "Identity", "shape": [1, 84, 85]}]})
    assert io["outputs"][0]["layout"] == "same"
    io = match_outputs(flat, {"inputs": res["inputs"], "outputs": [{"name": "Identity", "shape": [1, 85, 84]}]})
    assert io["outputs"][0]["layout"] == "NWC"  # a decoded (1, 84, N) output comes back (1, N, 84)
    with pytest.raises(VerificationError, match=r"matches 0 of the converted model's tensors"):
        match_outputs(flat, {"inputs": res["inputs"], "outputs": [{"name": "Identity", "shape": [1, 85, 83]}]})


def test_converted_record_is_checked(one_raw, tmp_path):
    meta = read_metadata(one_raw / "raw.onnx")
    side = tmp_path / "raw.tflite.head.json"
    (tmp_path / "raw.tflite").write_bytes(b"")
    side.write_text(json.dumps({**meta, "converted": {"engine": "tflite", "input": {"name": "x", "layout": "NHWC"},
                                                      "outputs": [{"name": "y", "layout": "CHWN"}]}}))
    with pytest.raises(InputError, match=r"converted.outputs\[0\].layout must be 'same', 'NHWC' or 'NWC'"):
        head_for(tmp_path / "raw.tflite")
    side.write_text(json.dumps({**meta, "converted": {"engine": "tflite", "input": {"name": "x", "layout": "NHWC"},
                                                      "outputs": [{"name": "y", "layout": "same"}] * 2}}))
    with pytest.raises(InputError, match="converted.outputs has 2 entries for 1 raw outputs"):
        head_for(tmp_path / "raw.tflite")


def test_decoded_converted_record_is_checked(tmp_path):
    """A decoded original's ``<name>.converted.json`` is input: malformed, it is one line naming the field."""
    (tmp_path / "m.tflite").write_bytes(b"")
    side = tmp_path / "m.tflite.converted.json"
    assert converted_record(tmp_path / "m.tflite") is None
    side.write_text("{not json")
    with pytest.raises(InputError, match="m.tflite.converted.json: malformed converted record: not JSON"):
        converted_record(tmp_path / "m.tflite")
    side.write_text(json.dumps({"engine": "tflite", "input": {"name": "x", "layout": "NHWC"},
                                "outputs": [{"name": "y", "layout": "same"}], "precision": "int4"}))
    with pytest.raises(InputError, match="converted.precision must be one of fp32, fp16, int8"):
        converted_record(tmp_path / "m.tflite")
    rec = {"engine": "tflite", "input": {"name": "x", "layout": "NHWC"}, "outputs": [{"name": "y", "layout": "NWC"}],
           "precision": "int8"}
    side.write_text(json.dumps(rec))
    assert converted_record(tmp_path / "m.tflite") == rec
    assert converted_record(tmp_path / "m.onnx") is None  # an ONNX model is never a converted one
