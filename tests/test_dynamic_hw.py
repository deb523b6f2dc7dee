"""Exports with a symbolic image height and width (YOLOv5 ``--dynamic``, Ultralytics ``dynamic=True``, YOLOv6
anchor-free with the image axes named), by torch's legacy exporter (``dynamic_axes``) and the dynamo exporter
(``dynamic_shapes``): kept symbolic in the raw model, verified at two sizes, run at a third; ``--input-size``
pins them; a decode whose constants hold at one size only is pinned, said so.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from torch_families import export_yolov5, export_yolov6_af, export_yolov8

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.decode import decode, original_output
from onnx_headcut.errors import InputError
from onnx_headcut.graph import infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.metadata import check_metadata
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af

pytest.importorskip("torch")

EXPORTS = {"yolov5": export_yolov5, "yolov8": export_yolov8, "yolov6_af": export_yolov6_af}
FAMILY = {"yolov5": "YOLOv5", "yolov8": "Ultralytics Detect head", "yolov6_af": "YOLOv6"}  # plain torch backbone
#: the sizes verified: the probe (the export's imgsz, else 640) and half its height, 3/4 of its width
SIZES = {"yolov5": [[640, 640], [320, 480]], "yolov8": [[320, 320], [160, 224]], "yolov6_af": [[640, 640], [320, 480]]}
#: what a raw graph of these fixtures may hold (backbone convs and SiLU, the head's layout ops)
RAW_OPS = {"Conv", "Sigmoid", "Mul", "Reshape", "Transpose", "Concat", "Identity"}
THIRD = (224, 288)  # neither verified size


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(family, exporter):
        if (family, exporter) not in cache:
            d = tmp_path_factory.mktemp(f"{family}_{exporter}")
            cache[family, exporter] = EXPORTS[family](d / "dyn.onnx", nc=3, dynamic_hw=True,
                                                      dynamo=exporter == "dynamo")
        return cache[family, exporter]
    return get


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _run(path, x):
    s = session(str(path))
    return s.run(None, {s.get_inputs()[0].name: x})


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("family", ["yolov5", "yolov8", "yolov6_af"])
def test_symbolic_height_and_width_are_kept(family, exporter, exported, tmp_path):
    src = exported(family, exporter)
    m = onnx.load(str(src))
    assert all(isinstance(d, str) for d in _dims(m.graph.input[0])[2:])  # the export is really symbolic
    assert {"Shape", "Range"} <= {n.op_type for n in m.graph.node}  # grids computed at run time
    res = strip(src, tmp_path / "raw.onnx")
    assert res.head.family == FAMILY[family] and res.head.dynamic_hw is not None
    checks = res.verification.checks
    assert [c.input for c in checks] == [f"random(seed=0) at {h}x{w}" for h, w in SIZES[family]]
    for c in checks:
        assert c.ok and c.layout.max_abs_err == 0.0 and c.layout.exact_values == c.layout.values  # layer 1 exact
        assert c.decode.max_abs_err_boxes <= 1e-3 and c.decode.max_abs_err_scores <= 1e-5
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    in_dims, out_dims = _dims(raw.graph.input[0]), _dims(raw.graph.output[0])
    assert in_dims[:2] == [1, 3] and in_dims[2:] == list(res.head.dynamic_hw.axes)
    assert all(isinstance(d, str) for d in in_dims[2:]) and out_dims[0] == 1 and out_dims[1] == "rows"
    assert {n.op_type for n in raw.graph.node} <= RAW_OPS and max_rank(infer_shapes(raw)) <= 4
    meta = res.metadata
    assert meta["dynamic_hw"]["verified_at"] == SIZES[family] and meta["dynamic_hw"]["multiple_of"] == 32
    assert meta["input"]["shape"] == [1, 3, *SIZES[family][0]]

    x = deterministic_input((1, 3, *THIRD), seed=3)  # a third size: the raw model decodes to the original
    y = _run(src, x)[0]
    r = _run(tmp_path / "raw.onnx", x)[0]
    assert r.shape[1] == sum((THIRD[0] // s) * (THIRD[1] // s) for s in (8, 16, 32)) * (3 if family == "yolov5" else 1)
    got = original_output(r, meta, input_size=THIRD)
    assert got.shape == y.shape and np.abs(got - y).max() <= 1e-3
    with pytest.raises(ValueError, match="input_size"):  # the flat rows alone do not say the size
        decode(r, meta)


def test_levels_layout_decodes_at_any_size_from_its_shapes(exported, tmp_path):
    src = exported("yolov8", "legacy")
    res = strip(src, tmp_path / "raw.onnx", layout=Layout("levels", keep_dfl=True))
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [_dims(o) for o in raw.graph.output] == [[1, 7, f"height/{s}", f"width/{s}"] for s in (8, 16, 32)]
    assert all(c.layout.max_abs_err <= 1e-5 for c in res.verification.checks)  # the DFL expectation is computed
    x = deterministic_input((1, 3, *THIRD), seed=4)
    got = original_output(_run(tmp_path / "raw.onnx", x), res.metadata)  # grids from the level outputs
    assert np.abs(got - _run(src, x)[0]).max() <= 1e-3


def test_dynamic_batch_and_size_kept_together(exported, tmp_path):
    src = exported("yolov8", "legacy")
    res = strip(src, tmp_path / "raw.onnx", keep_dynamic_batch=True, layout=Layout(keep_dfl=True))
    assert [c.input for c in res.verification.checks] == [
        "random(seed=0) at 320x320", "random(seed=0), batch 2 at 320x320", "random(seed=0) at 160x224"]
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert _dims(raw.graph.input[0]) == ["batch", 3, "height", "width"]
    x = deterministic_input((3, 3, *THIRD), seed=5)
    got = original_output(_run(tmp_path / "raw.onnx", x)[0], res.metadata, input_size=THIRD)
    assert got.shape[0] == 3 and np.abs(got - _run(src, x)[0]).max() <= 1e-3


def test_input_size_pins_a_static_raw_model(exported, tmp_path):
    src = exported("yolov5", "legacy")
    res = strip(src, tmp_path / "raw.onnx", input_size="256x320")
    assert res.head.dynamic_hw is None and "dynamic_hw" not in res.metadata
    assert any("pinned to 256x320 (--input-size)" in n for n in res.metadata["notes"])
    assert [c.input for c in res.verification.checks] == ["random(seed=0)"] and res.verification.ok
    assert res.verification.checks[0].layout.max_abs_err == 0.0
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert _dims(raw.graph.input[0]) == [1, 3, 256, 320]
    assert _dims(raw.graph.output[0]) == [1, 3 * (32 * 40 + 16 * 20 + 8 * 10), 8]
    assert not {"Shape", "Range", "Gather"} & {n.op_type for n in raw.graph.node}


def _cli(*args):
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", *map(str, args)], capture_output=True, text=True)
    return p.returncode, p.stderr.strip()


@pytest.mark.parametrize("size, message", [
    ("330x320", "not a multiple of the largest stride 32"),
    ("0x320", "each side must be in [1, 16384]"),
    ("320", "must be HxW"),
    ("320x-32", "must be HxW"),
])
def test_bad_input_size_exits_2(size, message, exported, tmp_path):
    code, err = _cli("strip", exported("yolov8", "legacy"), "-o", tmp_path / "raw.onnx", "--input-size", size)
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "raw.onnx").exists()


def test_input_size_refused_where_it_does_not_apply(exported, tmp_path):
    static = tmp_path / "static.onnx"
    onnx.save(yolov6_af(width=8), str(static))
    code, err = _cli("strip", static, "-o", tmp_path / "a.onnx", "--input-size", "320x320")
    assert code == 2 and "--input-size does not apply" in err and "static size 320x320" in err
    code, err = _cli("strip", exported("yolov8", "legacy"), "-o", tmp_path / "b.onnx", "--input-size", "320x320",
                     "--keep-dynamic-batch")
    assert code == 2 and "does not go with --keep-dynamic-batch" in err


def _size_bound(tmp_path):
    """A decode whose reshape targets and grids are constants for 640x640 behind an input declared symbolic."""
    m = yolov6_af(size=(640, 640), width=8)
    for k, name in ((2, "height"), (3, "width")):
        m.graph.input[0].type.tensor_type.shape.dim[k].dim_param = name
    p = tmp_path / "bound.onnx"
    onnx.save(m, str(p))
    return p


def test_a_decode_of_one_size_is_pinned_and_says_why(tmp_path):
    res = strip(_size_bound(tmp_path), tmp_path / "raw.onnx")
    assert res.head.dynamic_hw is None and res.verification.ok
    note = next(n for n in res.metadata["notes"] if "symbolic height and width" in n)
    assert "pinned to 640x640" in note and "at 320x480" in note
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert _dims(raw.graph.input[0]) == [1, 3, 640, 640] and _dims(raw.graph.output[0]) == [1, 8400, 84]


def test_detect_and_verify_a_dynamic_raw_model(exported, tmp_path):
    from onnx_headcut.check.engine import verify_engine
    from onnx_headcut.detect import detect

    src = exported("yolov8", "legacy")
    strip(src, tmp_path / "raw.onnx")
    image = "samples/images/chelsea.jpg"
    a, b = detect(src, image, conf=0.01), detect(tmp_path / "raw.onnx", image, conf=0.01)
    assert [d.box for d in a.detections] == pytest.approx([d.box for d in b.detections], abs=1e-3)
    checks = verify_engine(src, tmp_path / "raw.onnx")
    assert [c.input for c in checks] == ["random(seed=0) at 320x320", "random(seed=0) at 160x224"]
    assert all(c.ok and c.layout.max_abs_err == 0.0 for c in checks)
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "inspect", tmp_path / "raw.onnx"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "[1, 3, 'height', 'width'] (levels at 320x320, multiples of 32)" in p.stdout
    p = subprocess.run([sys.executable, "-m", "onnx_headcut", "inspect", src], capture_output=True, text=True)
    assert p.returncode == 0 and "[1, 3, 'height', 'width'] (levels at 320x320)" in p.stdout


@pytest.mark.parametrize("engine", ["mnn", "ncnn"])
def test_a_dynamic_raw_model_converts_and_matches_at_both_sizes(engine, exported, tmp_path):
    pytest.importorskip({"mnn": "MNN", "ncnn": "ncnn"}[engine])
    from onnx_headcut.check.engine import verify_engine
    from onnx_headcut.convert import convert

    src = exported("yolov5", "legacy")
    strip(src, tmp_path / "raw.onnx")
    conv = convert(tmp_path / "raw.onnx", engine, tmp_path / engine)
    checks = verify_engine(src, conv.model, engine)
    assert [c.input for c in checks] == ["random(seed=0) at 640x640", "random(seed=0) at 320x480"]
    assert all(c.ok and c.engine == engine and c.layout.max_abs_err <= 1e-2 for c in checks)


def test_metadata_of_a_dynamic_record_is_checked(exported, tmp_path):
    meta = strip(exported("yolov8", "legacy"), tmp_path / "raw.onnx", verify=False).metadata
    assert check_metadata(json.loads(json.dumps(meta))) == meta

    def broken(edit):
        m = json.loads(json.dumps(meta))
        edit(m)
        with pytest.raises(InputError, match="malformed headcut metadata"):
            check_metadata(m)
    broken(lambda m: m["levels"][0].update(grid=[41, 40]))  # not input / stride
    broken(lambda m: m["dynamic_hw"].update(multiple_of=24))  # 32 does not divide it / 320 not a multiple
    broken(lambda m: m["dynamic_hw"].update(verified_at=[[320, 330]]))
    broken(lambda m: m["dynamic_hw"].pop("height"))
    broken(lambda m: m.update(input={"name": "images", "shape": [1, 3, "height", "width"]}))
    broken(lambda m: (m.pop("dynamic_hw"), m.update(input={"name": "images", "shape": [1, 3, "h", 320]})))


@pytest.mark.parametrize("reg_max", [0, 16])
def test_generated_dynamic_export_equals_the_static_one_and_is_kept(reg_max, tmp_path):
    """``yolov6_af(dynamic_hw=True)``: the Shape → Gather → Range anchors of the legacy exporter; at each size the
    same output as the static generator at that size, and strip keeps the size symbolic."""
    m = yolov6_af(width=8, nc=5, reg_max=reg_max, dynamic_hw=True)
    ops = {n.op_type for n in m.graph.node}
    assert {"Shape", "Gather", "Range", "ConstantOfShape"} <= ops
    src = tmp_path / "dyn.onnx"
    onnx.save(m, str(src))
    for hw in ((320, 320), THIRD):
        x = deterministic_input((1, 3, *hw), seed=6)
        static = yolov6_af(width=8, nc=5, reg_max=reg_max, size=hw)
        assert np.array_equal(_run(src, x)[0], session(static.SerializeToString()).run(None, {"images": x})[0])
    res = strip(src, tmp_path / "raw.onnx")
    assert res.head.dynamic_hw is not None and all(c.layout.max_abs_err == 0.0 for c in res.verification.checks)
    assert len(res.verification.checks) == 2
    x = deterministic_input((1, 3, *THIRD), seed=7)
    got = original_output(_run(tmp_path / "raw.onnx", x)[0], res.metadata, input_size=THIRD)
    assert np.abs(got - _run(src, x)[0]).max() <= 1e-3


def test_a_symbolic_height_with_a_fixed_width(tmp_path):
    m = yolov6_af(width=8, nc=5, dynamic_hw=True)
    m.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 320
    p = tmp_path / "half.onnx"
    onnx.save(m, str(p))
    code, err = _cli("strip", p, "-o", tmp_path / "raw.onnx")
    assert code == 2 and "a symbolic height but a fixed width (320)" in err and "--input-size" in err
    code, err = _cli("strip", p, "-o", tmp_path / "raw.onnx", "--input-size", "320x256")
    assert code == 2 and "the input's width is fixed at 320" in err
    res = strip(p, tmp_path / "raw.onnx", input_size=(256, 320))
    assert _dims(onnx.load(str(tmp_path / "raw.onnx")).graph.input[0]) == [1, 3, 256, 320] and res.verification.ok


def test_a_grid_read_from_the_wrong_axis_is_caught_by_the_second_size(tmp_path):
    """x cells built from the height: right on a square input (the probe), wrong elsewhere, so the head is not
    kept symbolic: pinned to the probe size, said why, and verified there."""
    m = yolov6_af(width=8, nc=5, dynamic_hw=True)
    ranges = [n for n in m.graph.node if n.op_type == "Range"]
    for x_range, y_range in zip(ranges[0::2], ranges[1::2]):  # per level: Range(0, w) then Range(0, h)
        x_range.input[1] = y_range.input[1]
    p = tmp_path / "wrong_axis.onnx"
    onnx.save(m, str(p))
    res = strip(p, tmp_path / "raw.onnx")
    assert res.head.dynamic_hw is None and "dynamic_hw" not in res.metadata and res.verification.ok
    note = next(n for n in res.metadata["notes"] if "symbolic height and width" in n)
    assert "pinned to 640x640" in note and "at 320x480" in note
    assert _dims(onnx.load(str(tmp_path / "raw.onnx")).graph.input[0]) == [1, 3, 640, 640]
