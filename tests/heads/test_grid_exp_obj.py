"""Head kind ``grid_exp_obj`` (YOLOv6 0.1.0, YOLOX): locating it, geometry, metadata, raw layout, decode numbers.

Fixtures: the project's generator (``onnx_headcut/synth``) in every 0.1.0 variant (``conftest.VARIANTS``)
and YOLOX decoded or not; torch reproductions of the heads (``torch_fixtures.py`` for YOLOv6 0.1.0,
``torch_families.py`` for YOLOX) exported by torch's legacy exporter and by its dynamo exporter.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
import torch_families
from _helpers import (
    STRIDES,
    check_dynamo_export,
    check_generated,
    check_inspect_names,
    check_torch_export,
    needs_torch,
)
from conftest import VARIANTS, build
from onnx import numpy_helper
from torch_fixtures import export_yolov6_v1

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.decode import decode
from onnx_headcut.errors import NoHeadError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.locate import locate
from onnx_headcut.region import decode_region
from onnx_headcut.strip import inspect, read_metadata, strip
from onnx_headcut.synth import yolov6_v1, yolox

# --- YOLOv6 0.1.0, generated ----------------------------------------------------------------------------


def _expected_rows(h, w):
    return sum((h // s) * (w // s) for s in (8, 16, 32))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_strip_structure_and_numbers(variant, write, tmp_path):
    src = write(variant)
    kw = VARIANTS[variant]
    h, w = kw.get("size", (320, 320))
    nc = kw.get("nc", 80)
    res = strip(src, tmp_path / "raw.onnx")

    # head found by structure
    assert res.head.family == "YOLOv6" and res.head.version == "0.1.0"
    assert [lv.stride for lv in res.head.levels] == [8, 16, 32]
    assert [lv.grid for lv in res.head.levels] == [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    assert [lv.first_row for lv in res.head.levels] == [0, h * w // 64, h * w // 64 + h * w // 256]
    assert res.head.num_classes == nc

    raw = onnx.load(str(tmp_path / "raw.onnx"))
    # one output (1, N, 5+nc), input name kept
    assert [i.name for i in raw.graph.input] == ["image_arrays"]
    (out,) = raw.graph.output
    assert out.name == "outputs"
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, _expected_rows(h, w), 5 + nc]
    # between the convs and the output: only Concat/Reshape/Transpose, no decode op left anywhere
    ops = Counter(n.op_type for n in raw.graph.node)
    assert not {"Exp", "ScatterND", "Slice", "Add", "Expand", "Shape"} & set(ops)
    tail = [n for n in raw.graph.node if n.name.startswith("headcut/")]
    assert Counter(n.op_type for n in tail) == {"Concat": 4, "Reshape": 3, "Transpose": 3}
    shapes = infer_shapes(raw)
    assert max_rank(shapes) <= 4
    assert res.max_rank_after <= 4 < res.inspection.max_rank
    # numbers: the decode of the raw output reproduces the original (fp16 models: dtype kept, fp16 ulps)
    half = kw.get("half", False)
    assert out.type.tensor_type.elem_type == (onnx.TensorProto.FLOAT16 if half else onnx.TensorProto.FLOAT)
    x = deterministic_input((1, 3, h, w), np.float16 if half else np.float32, seed=123)
    y = session(str(src)).run(None, {"image_arrays": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"image_arrays": x})[0]
    assert r.shape == (1, _expected_rows(h, w), 5 + nc) and r.dtype == y.dtype
    top = float(np.abs(y[..., :4]).max())
    assert 8 <= top <= 640 * 4  # boxes of a sane scale, so the tolerance is meaningful
    tol = 4 * float(np.spacing(np.float16(top))) if half else 1e-3
    assert np.abs(decode(r, res.head).astype(np.float64) - y).max() <= tol
    assert res.verification.ok and res.verification.max_abs_err <= tol


def test_raw_rows_are_the_prediction_convs_in_documented_order(write, tmp_path):
    """Row r of level L is cell (r // w, r % w); columns are [box 4, obj 1, cls nc] before any sigmoid."""
    src = write("384x640")
    res = strip(src, tmp_path / "raw.onnx")
    m = onnx.load(str(src))
    wanted = [b.tensor for lv in res.head.levels for b in lv.branches]
    for t in wanted:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    x = deterministic_input((1, 3, 384, 640), seed=7)
    outs = dict(zip([o.name for o in m.graph.output], session(m.SerializeToString()).run(None, {"image_arrays": x})))
    raw = session(str(tmp_path / "raw.onnx")).run(None, {"image_arrays": x})[0][0]
    for lv in res.head.levels:
        h, w = lv.grid
        box, obj, cls = (outs[b.tensor][0] for b in lv.branches)
        for gy, gx in [(0, 0), (h - 1, w - 1), (h // 2, w // 3)]:
            row = raw[lv.first_row + gy * w + gx]
            np.testing.assert_array_equal(row[:4], box[:, gy, gx])
            np.testing.assert_array_equal(row[4], obj[0, gy, gx])
            np.testing.assert_array_equal(row[5:], cls[:, gy, gx])


def test_metadata_and_sidecar(write, tmp_path):
    src = write("legacy")
    res = strip(src, tmp_path / "raw.onnx")
    meta = read_metadata(tmp_path / "raw.onnx")
    side = json.loads((tmp_path / "raw.head.json").read_text())
    assert meta == side == res.metadata
    assert meta["family"] == "YOLOv6" and meta["version"] == "0.1.0"
    assert meta["input"] == {"name": "image_arrays", "shape": [1, 3, 320, 320]}
    assert [(lv["stride"], lv["grid"], lv["first_row"], lv["rows"]) for lv in meta["levels"]] == [
        (8, [40, 40], 0, 1600), (16, [20, 20], 1600, 400), (32, [10, 10], 2000, 100)]
    assert meta["channels"] == [{"name": "box", "size": 4, "sigmoid": False, "columns": "dx, dy, dw, dh"},
                                {"name": "obj", "size": 1, "sigmoid": False, "columns": "objectness logit"},
                                {"name": "cls", "size": 80, "sigmoid": False, "columns": "class logits"}]
    assert meta["layout"] == "flat" and meta["reg_max"] == 0
    assert meta["num_classes"] == 80 and "exp(dw) * s" in meta["formula"]
    assert meta["removed"]["ops"]["Exp"] == 3 and meta["removed"]["nodes"] > 0
    # the decode runs from the recorded JSON alone
    x = deterministic_input((1, 3, 320, 320))
    r = session(str(tmp_path / "raw.onnx")).run(None, {"image_arrays": x})[0]
    y = session(str(src)).run(None, {"image_arrays": x})[0]
    assert np.abs(decode(r, side) - y).max() <= 1e-3


def test_inspect_names_the_generation_and_why(tmp_path):
    onnx.save(yolov6_v1(width=8), str(tmp_path / "v1.onnx"))
    insp = inspect(tmp_path / "v1.onnx")
    assert insp.head.version == "0.1.0"
    assert any("objectness" in r for r in insp.head.reasons), insp.head.reasons


# --- YOLOv6 0.1.0: the locator ----------------------------------------------------------------------------

PLAIN_OPS = {"Add": 3, "Concat": 7, "Exp": 3, "Mul": 6, "Reshape": 6, "Sigmoid": 6, "Slice": 9, "Transpose": 3}
INPLACE_OPS = {"Add": 3, "Concat": 10, "Exp": 3, "Expand": 6, "Mul": 6, "Reshape": 12, "ScatterND": 6,
               "Shape": 12, "Sigmoid": 6, "Slice": 18, "Transpose": 3}


@pytest.mark.parametrize("variant,ops", [("legacy", PLAIN_OPS), ("legacy-inplace", INPLACE_OPS)])
def test_decode_region_matches_genuine_export_histograms(variant, ops):
    """These histograms are those of genuine YOLOv6 0.1.0 exports (shared/reference/README.md)."""
    m = build(variant)
    assert dict(decode_region(GraphIndex(m), "outputs").ops) == ops


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_locate_reads_geometry_from_structure(variant):
    kw = VARIANTS[variant]
    h, w = kw.get("size", (320, 320))
    head = locate(build(variant))
    assert head.decode == "grid_exp_obj"
    assert head.strides == (8, 16, 32)
    assert [(b.role, b.size, b.sigmoid) for b in head.blocks()] == [("box", 4, False), ("obj", 1, False),
                                                                    ("cls", kw.get("nc", 80), False)]
    assert head.rows == sum((h // s) * (w // s) for s in (8, 16, 32))
    producer = {o: n for n in build(variant).graph.node for o in n.output}
    assert all(producer[b.tensor].op_type == "Conv" for lv in head.levels for b in lv.branches)


def _const_nodes(m, pred):
    for n in m.graph.node:
        if n.op_type == "Constant":
            v = numpy_helper.to_array(n.attribute[0].t)
            if pred(v):
                yield n, v


def test_refuses_grid_constant_that_does_not_match_the_feature_map():
    m = build("legacy")
    n, v = next(_const_nodes(m, lambda v: v.ndim == 5 and v.shape[-1] == 2))
    n.attribute[0].t.CopyFrom(numpy_helper.from_array(v + 0.5))
    with pytest.raises(NoHeadError, match="grid constant"):
        locate(m)


def test_refuses_a_stride_that_is_not_a_level_stride():
    m = build("legacy")
    n, v = next(_const_nodes(m, lambda v: v.ndim == 0 and v.dtype == np.float32 and v == 16.0))
    n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(12.0, np.float32)))
    with pytest.raises(NoHeadError, match=r"not a level stride"):
        locate(m)


def test_refuses_a_level_missing_its_objectness_conv():
    """Feed level 2's Concat from the box conv twice instead of the obj conv: 2 convs, not 3."""
    m = build("legacy")
    ix = GraphIndex(m)
    concats = [n for n in m.graph.node if n.op_type == "Concat" and len(n.input) == 3
               and any(ix.producer.get(i) is not None and ix.producer[i].op_type == "Conv" for i in n.input)]
    last = concats[-1]
    sig = ix.producer[last.input[1]]
    sig.input[0] = last.input[0]
    with pytest.raises(NoHeadError, match="10x10 level"):
        locate(m)


# --- YOLOv6 0.1.0: torch module exported by torch's legacy exporter (``torch_fixtures.py``) ------------------
# These exports come from torch's own legacy TorchScript exporter (and optionally onnxsim), so the
# decode region is exactly what real users' files contain, not the project's imitation of it.

TORCH_CASES = {
    "legacy": dict(),
    "legacy-inplace": dict(inplace=True),
    "onnxsim": dict(simplify=True),
    "onnxsim-inplace": dict(inplace=True, simplify=True),
    "384x640": dict(size=(384, 640)),
    "640": dict(size=(640, 640)),
}

#: decode-region op histograms of genuine YOLOv6 0.1.0 exports (torch legacy exporter, opset 12).
GENUINE_DECODE_OPS = {
    "legacy": {"Add": 3, "Concat": 7, "Exp": 3, "Mul": 6, "Reshape": 6, "Sigmoid": 6, "Slice": 9, "Transpose": 3},
    "legacy-inplace": {"Add": 3, "Concat": 10, "Exp": 3, "Expand": 6, "Mul": 6, "Reshape": 12, "ScatterND": 6,
                       "Shape": 12, "Sigmoid": 6, "Slice": 18, "Transpose": 3},
}


def _rows(h: int, w: int) -> int:
    return sum((h // s) * (w // s) for s in STRIDES)


def _check_raw(res, dst, h, w, nc=80):
    assert res.verification.ok
    assert res.verification.max_abs_err <= 1e-3
    assert res.head.family == "YOLOv6" and res.head.version == "0.1.0"
    assert [lv.stride for lv in res.head.levels] == list(STRIDES)
    assert [lv.grid for lv in res.head.levels] == [(h // s, w // s) for s in STRIDES]
    assert res.head.num_classes == nc

    raw = onnx.load(str(dst))
    assert [i.name for i in raw.graph.input] == ["image_arrays"]
    (out,) = raw.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, _rows(h, w), 5 + nc]
    ops = Counter(n.op_type for n in raw.graph.node)
    assert "Exp" not in ops and "ScatterND" not in ops
    tail = [n for n in raw.graph.node if n.name.startswith("headcut/")]
    assert tail and {n.op_type for n in tail} <= {"Concat", "Reshape", "Transpose"}
    # nothing but layout between the prediction convs and the output
    region = decode_region(GraphIndex(raw), out.name)
    assert len(region.frontier) == 3 * len(STRIDES)
    assert set(region.ops) <= {"Concat", "Reshape", "Transpose"}
    assert max_rank(infer_shapes(raw)) <= 4
    return raw


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_strip_genuine_export(case, tmp_path):
    needs_torch()
    kw = TORCH_CASES[case]
    h, w = kw.get("size", (320, 320))
    src = export_yolov6_v1(tmp_path / "yolov6.onnx", **kw)
    res = strip(src, tmp_path / "raw.onnx")  # verifies; raises VerificationError on a mismatch
    _check_raw(res, tmp_path / "raw.onnx", h, w)
    assert res.max_rank_after <= 4 < res.inspection.max_rank  # the 5-D decode is gone


@pytest.mark.parametrize("case", list(GENUINE_DECODE_OPS))
def test_export_decode_region_matches_genuine_yolov6(case, tmp_path):
    """The fixture reproduces the node pattern of a real YOLOv6 0.1.0 export, op for op."""
    needs_torch()
    src = export_yolov6_v1(tmp_path / "yolov6.onnx", **TORCH_CASES[case])
    model = onnx.load(str(src))
    assert model.opset_import[0].version == 12
    assert [i.name for i in model.graph.input] == ["image_arrays"]
    assert [o.name for o in model.graph.output] == ["outputs"]
    ops = decode_region(GraphIndex(model), model.graph.output[0].name).ops
    assert dict(ops) == GENUINE_DECODE_OPS[case]


def test_raw_rows_are_the_prediction_convs(tmp_path):
    """Each raw row is [box 4, obj 1, cls nc] of one cell, straight from the convs (non-square input)."""
    needs_torch()
    src = export_yolov6_v1(tmp_path / "yolov6.onnx", size=(384, 640))
    res = strip(src, tmp_path / "raw.onnx")
    m = onnx.load(str(src))
    for lv in res.head.levels:
        for b in lv.branches:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(b.tensor))
    x = deterministic_input((1, 3, 384, 640), seed=11)
    names = [o.name for o in m.graph.output]
    outs = dict(zip(names, session(m.SerializeToString()).run(None, {"image_arrays": x})))
    raw = session(str(tmp_path / "raw.onnx")).run(None, {"image_arrays": x})[0][0]
    for lv in res.head.levels:
        gh, gw = lv.grid
        box, obj, cls = (outs[b.tensor][0] for b in lv.branches)
        assert (box.shape[0], obj.shape[0], cls.shape[0]) == (4, 1, 80)
        block = raw[lv.first_row:lv.first_row + lv.rows]  # (h*w, 85), row-major over (y, x)
        expect = np.concatenate([box, obj, cls], 0).reshape(85, -1).T
        np.testing.assert_allclose(block, expect, rtol=0, atol=1e-6)


@pytest.mark.parametrize("inplace", [False, True], ids=["plain", "inplace"])
def test_dynamo_export(inplace, tmp_path):
    """torch's new (torch.export) exporter: opset 18, weights in a .onnx.data side file."""
    needs_torch()
    try:
        src = export_yolov6_v1(tmp_path / "yolov6.onnx", inplace=inplace, dynamo=True)
    except ImportError as e:  # onnxscript missing
        pytest.skip(f"the dynamo exporter is unavailable: {e}")
    res = strip(src, tmp_path / "raw.onnx")  # must strip and verify: any HeadcutError fails the test
    _check_raw(res, tmp_path / "raw.onnx", 320, 320)


# --- YOLOX, generated -------------------------------------------------------------------------------------

GENERATED = {  # name: (model builder, family, version, raw columns, rows per cell)
    "yolox": (lambda: yolox(width=8), "YOLOX", "0.x", 85, 1),
    "yolox-undecoded": (lambda: yolox(width=8, decode=False), "YOLOX", "undecoded", 85, 1),
}


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_families(name, tmp_path):
    res = check_generated(GENERATED, name, tmp_path)
    family, version = GENERATED[name][1:3]
    meta = res.metadata
    if version == "undecoded":
        assert meta["original_output"]["decoded"] is False
        assert any("already raw apart from the sigmoids" in n for n in res.head.notes)


def test_inspect_names_each_family(tmp_path):
    check_inspect_names(GENERATED, tmp_path)


# --- YOLOX: torch module exported by torch's legacy exporter (``torch_families.py``) --------------------------

torch_cases = {
    "yolox": ("export_yolox", {}, "YOLOX", "0.x", 85, 1),
    "yolox-no-onnxsim": ("export_yolox", {"simplify": False}, "YOLOX", "0.x", 85, 1),
    "yolox-undecoded": ("export_yolox", {"decode": False}, "YOLOX", "undecoded", 85, 1),
}


@pytest.mark.parametrize("name", list(torch_cases))
def test_torch_exports(name, tmp_path):
    check_torch_export(torch_cases, name, tmp_path)


# --- both: torch's dynamo exporter (see ``_helpers.py``) ---------------------------------------------------


DYNAMO_CASES = {  # name: (exporter, keywords, family, raw columns, rows per cell)
    "yolov6-0.1.0": (export_yolov6_v1, {}, "YOLOv6", 85, 1),
    "yolov6-0.1.0-inplace": (export_yolov6_v1, {"inplace": True}, "YOLOv6", 85, 1),
    "yolox": (torch_families.export_yolox, {"decode": True}, "YOLOX", 85, 1),
}


@pytest.mark.parametrize("name", list(DYNAMO_CASES))
def test_strip_dynamo_export(name, tmp_path):
    check_dynamo_export(DYNAMO_CASES[name], tmp_path)
