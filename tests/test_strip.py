"""strip end to end on generated 0.1.0 exports: structure of the raw graph and numbers against onnxruntime."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest

from onnx_headcut.decode import decode
from onnx_headcut.graph import infer_shapes, max_rank
from onnx_headcut.strip import inspect, read_metadata, strip
from onnx_headcut.check import deterministic_input, session

from conftest import VARIANTS


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


def test_no_lower_and_simplify_flags(write, tmp_path):
    src = write("legacy-inplace")
    res = strip(src, tmp_path / "a.onnx", lower=False, verify=False)
    assert res.rewrite is None and res.verification is None
    res = strip(src, tmp_path / "b.onnx", simplify=True)
    assert res.simplified and res.verification.max_abs_err <= 1e-3


def test_verify_on_an_image(write, tmp_path):
    from PIL import Image

    img = (np.random.default_rng(0).random((200, 300, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    res = strip(write("legacy"), tmp_path / "raw.onnx", images=(tmp_path / "img.png",))
    assert [c.input.endswith("img.png") for c in res.verification.checks] == [False, True]
    assert all(c.max_abs_err <= 1e-3 for c in res.verification.checks)


def test_inspect_writes_nothing(write, tmp_path):
    src = write("legacy-inplace")
    before = sorted(p.name for p in tmp_path.iterdir())
    insp = inspect(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert insp.decode_ops == {"Add": 3, "Concat": 10, "Exp": 3, "Expand": 6, "Mul": 6, "Reshape": 12,
                               "ScatterND": 6, "Shape": 12, "Sigmoid": 6, "Slice": 18, "Transpose": 3}
    assert insp.max_rank == 6
    j = insp.to_json()
    assert j["head"]["num_classes"] == 80 and j["would_remove"]["ops"]["ScatterND"] == 6
