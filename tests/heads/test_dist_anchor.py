"""Head kind ``dist_anchor``: YOLOv6 >= 0.2 anchor-free (DFL or not, 3 or 4 levels — P6, Lite), Ultralytics
YOLOv8/YOLO11. Locating it, geometry, metadata, layouts, raw rows, decode numbers.

Fixtures: the project's generator (``yolov6_af``: opset 12/13, onnxsim/onnxslim, dynamic batch, fp16;
``yolov8``), and the torch reproductions in ``torch_families.py`` exported by torch's legacy and dynamo exporters.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch_families
from _helpers import (
    check_dynamo_export,
    check_generated,
    check_inspect_names,
    check_torch_export,
    needs_torch,
)

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.decode import decode, dfl_expectation
from onnx_headcut.errors import HeadcutError
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.heads import Layout
from onnx_headcut.region import decode_region
from onnx_headcut.strip import inspect, strip
from onnx_headcut.synth import yolov6_af, yolov8

# --- YOLOv6 0.2.0 … main anchor-free, generated ---------------------------------------------------------

VARIANTS = {
    "n": dict(),
    "n-onnxsim": dict(simplify=True),
    "n-onnxslim": dict(slim=True),
    "m-dfl-opset12-onnxslim": dict(reg_max=16, opset=12, slim=True),
    "m-dfl": dict(reg_max=16),
    "m-dfl-opset12": dict(reg_max=16, opset=12),
    "m-dfl-onnxsim": dict(reg_max=16, simplify=True),
    "n-dynamic-batch": dict(dynamic_batch=True),
    "m-dfl-dynamic-batch": dict(reg_max=16, dynamic_batch=True),
    "n6-p6": dict(levels=4, size=(640, 640)),
    "lite-192x320": dict(levels=4, size=(192, 320), shuffle=True, simplify=True, width=4),
    "fp16-dfl": dict(reg_max=16, half=True),
}


def _model(tmp_path, kw):
    p = tmp_path / "in.onnx"
    onnx.save(yolov6_af(**{"width": 8, **kw}), str(p))
    return p


def _rows(size, levels):
    return sum((size[0] // s) * (size[1] // s) for s in [8 * 2 ** i for i in range(levels)])


def _check_numbers(src, raw_path, meta, size, half, tol=1e-3):
    dt = np.float16 if half else np.float32
    x = deterministic_input((1, 3, *size), dt, seed=5)
    y = session(str(src)).run(None, {"images": x})[0]
    r = session(str(raw_path)).run(None, {"images": x})
    d = decode(r if meta["layout"] == "levels" else r[0], meta)
    top = float(np.abs(y[..., :4]).max())
    assert 8 <= top <= 2560
    limit = 4 * float(np.spacing(np.float16(top))) if half else tol
    assert np.abs(d.astype(np.float64) - y).max() <= limit
    return r


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_strip_anchor_free(variant, tmp_path):
    kw = VARIANTS[variant]
    size, levels, reg_max = kw.get("size", (320, 320)), kw.get("levels", 3), kw.get("reg_max", 0)
    src = _model(tmp_path, kw)
    res = strip(src, tmp_path / "raw.onnx")
    h = res.head
    assert (h.family, h.decode, h.reg_max, h.num_classes) == ("YOLOv6", "dist_anchor", reg_max, 80)
    assert h.strides == tuple(8 * 2 ** i for i in range(levels))
    assert res.inspection.folded == kw.get("dynamic_batch", False)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    (out,) = raw.graph.output
    width = 4 * (reg_max + 1) + 80
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, _rows(size, levels), width]
    assert [d.dim_value for d in raw.graph.input[0].type.tensor_type.shape.dim] == [1, 3, *size]
    tail = Counter(n.op_type for n in raw.graph.node if n.name.startswith("headcut/"))
    assert tail == {"Concat": levels + 1, "Reshape": levels, "Transpose": levels}
    assert not ({"Softmax", "Split", "Sub", "Div", "Shape", "Gather", "ConstantOfShape"}
                & {n.op_type for n in raw.graph.node})
    assert max_rank(infer_shapes(raw)) <= 4
    assert res.metadata["channels"][0]["name"] == ("dfl" if reg_max else "reg")
    assert res.metadata["reg_max"] == reg_max
    _check_numbers(src, tmp_path / "raw.onnx", res.metadata, size, kw.get("half", False))


def test_raw_rows_are_the_convs(tmp_path):
    src = _model(tmp_path, dict(reg_max=16, size=(256, 384)))
    res = strip(src, tmp_path / "raw.onnx")
    m = onnx.load(str(src))
    for lv in res.head.levels:
        for b in lv.branches:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(b.tensor))
    x = deterministic_input((1, 3, 256, 384), seed=1)
    outs = dict(zip([o.name for o in m.graph.output], session(m.SerializeToString()).run(None, {"images": x})))
    raw = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})[0][0]
    for lv in res.head.levels:
        h, w = lv.grid
        reg, cls = (outs[b.tensor][0] for b in lv.branches)
        block = raw[lv.first_row:lv.first_row + h * w]
        np.testing.assert_array_equal(block[:, :68], reg.reshape(68, -1).T)  # bins grouped l, t, r, b
        np.testing.assert_array_equal(block[:, 68:], cls.reshape(80, -1).T)  # logits, no sigmoid


@pytest.mark.parametrize("keep_dfl,keep_sigmoid", [(True, False), (False, True), (True, True)])
def test_keep_options(keep_dfl, keep_sigmoid, tmp_path):
    src = _model(tmp_path, dict(reg_max=16, opset=12))
    res = strip(src, tmp_path / "raw.onnx", layout=Layout("flat", keep_dfl, keep_sigmoid))
    meta = res.metadata
    assert meta["channels"][0] == {"name": "reg" if keep_dfl else "dfl", "size": 4 if keep_dfl else 68,
                                   "sigmoid": False, "columns": meta["channels"][0]["columns"]}
    assert meta["channels"][1]["sigmoid"] is keep_sigmoid and meta["dfl_in_graph"] is keep_dfl
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    ops = Counter(n.op_type for n in raw.graph.node if n.name.startswith("headcut/"))
    assert ops.get("Softmax", 0) == (3 if keep_dfl else 0) and ops.get("Sigmoid", 0) == (3 if keep_sigmoid else 0)
    assert max_rank(infer_shapes(raw)) <= 4
    r = _check_numbers(src, tmp_path / "raw.onnx", meta, (320, 320), False)
    if keep_sigmoid:
        assert 0 <= r[0][..., -80:].min() and r[0][..., -80:].max() <= 1


def test_levels_layout_is_the_lite_ncnn_demo_layout(tmp_path):
    """Per level (1, nc + 4, h, w) = [sigmoid(cls) * nc, l, t, r, b]: YOLOv6's ncnn Lite demo reads this."""
    src = _model(tmp_path, dict(levels=4, size=(192, 320), shuffle=True, width=4, reg_max=16))
    res = strip(src, tmp_path / "raw.onnx", layout=Layout("levels"))
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in raw.graph.output] == [
        (f"outputs_s{s}", [1, 84, 192 // s, 320 // s]) for s in (8, 16, 32, 64)]
    assert [c["name"] for c in res.metadata["channels"]] == ["cls", "reg"] and res.metadata["layout"] == "levels"
    outs = _check_numbers(src, tmp_path / "raw.onnx", res.metadata, (192, 320), False)
    # the demo's decode, written out: x0 = (gx + 0.5 - l) * s
    s, o = 16, outs[1][0]
    gy, gx = 3, 7
    left, top = o[80, gy, gx], o[81, gy, gx]
    x = deterministic_input((1, 3, 192, 320), seed=5)
    y = session(str(src)).run(None, {"images": x})[0][0]
    row = 24 * 40 + gy * 20 + gx  # after the 24x40 stride-8 level
    assert abs((gx + 0.5 - left) * s - (y[row, 0] - y[row, 2] / 2)) < 1e-3
    assert abs((gy + 0.5 - top) * s - (y[row, 1] - y[row, 3] / 2)) < 1e-3


def test_lite_channel_shuffles_are_lowered(tmp_path):
    src = _model(tmp_path, VARIANTS["lite-192x320"])
    res = strip(src, tmp_path / "raw.onnx")
    assert res.inspection.max_rank == 5 and res.max_rank_after == 4
    assert len(res.rewrite.lowered) >= 3 and not res.rewrite.unlowered
    assert all(lo.shape_after[1] == 2 and len(lo.shape_after) == 4 for lo in res.rewrite.lowered)


def test_dfl_expectation():
    bins = np.full((1, 68), -50.0, np.float32)
    for side, k in enumerate([3, 0, 16, 7]):
        bins[0, side * 17 + k] = 50.0
    np.testing.assert_allclose(dfl_expectation(bins, 16), [[3, 0, 16, 7]], atol=1e-5)


def test_anchor_point_mismatch_is_refused(tmp_path):
    from onnx_headcut.errors import NoHeadError
    from onnx_headcut.locate import locate

    m = yolov6_af(width=8, simplify=True)
    tensors = list(m.graph.initializer) + [a.t for n in m.graph.node if n.op_type == "Constant" for a in n.attribute]
    hit = 0
    for t in tensors:
        a = onnx.numpy_helper.to_array(t)
        if a.shape == (2100, 2):
            t.CopyFrom(onnx.numpy_helper.from_array(a - 0.5, t.name))
            hit += 1
    assert hit == 1
    with pytest.raises(NoHeadError, match="anchor-point constant"):
        locate(m)


def test_inspect_names_the_generation_and_why(tmp_path):
    cases = {
        "af.onnx": (yolov6_af(width=8), "0.2+ anchor-free", "no DFL"),
        "dfl.onnx": (yolov6_af(width=8, reg_max=16, opset=12), "0.2+ anchor-free, DFL", "reg_max 16"),
        "p6.onnx": (yolov6_af(width=8, levels=4, size=(640, 640)), "0.2+ anchor-free", "P6 or YOLOv6-Lite"),
    }
    for name, (m, version, why) in cases.items():
        onnx.save(m, str(tmp_path / name))
        insp = inspect(tmp_path / name)
        assert insp.head.version == version
        assert any(why in r for r in insp.head.reasons), insp.head.reasons


# --- YOLOv6 0.3.0 anchor-free: torch module exported by torch's legacy exporter ------------------------------


@pytest.mark.parametrize("reg_max", [0, 16])
def test_yolov6_af_legacy_export(reg_max, tmp_path):
    """The YOLOv6 0.3.0 anchor-free fixture, legacy exporter (opset 13): found, verified, and its decode
    region op for op the one the project's generator writes."""
    needs_torch()
    src = torch_families.export_yolov6_af(tmp_path / "in.onnx", reg_max=reg_max)
    m = onnx.load(str(src))
    assert m.opset_import[0].version == 13
    assert [i.name for i in m.graph.input] == ["images"] and [o.name for o in m.graph.output] == ["outputs"]
    ops = decode_region(GraphIndex(m), "outputs").ops
    synth = yolov6_af(width=8, reg_max=reg_max)
    assert ops == decode_region(GraphIndex(synth), synth.graph.output[0].name).ops
    res = strip(src, tmp_path / "raw.onnx")
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    assert (res.head.family, res.head.reg_max, res.head.num_classes) == ("YOLOv6", reg_max, 80)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [d.dim_value for d in raw.graph.output[0].type.tensor_type.shape.dim] == [1, 2100, 4 * (reg_max + 1) + 80]
    assert max_rank(infer_shapes(raw)) <= 4


# --- Ultralytics YOLOv8 / YOLO11, generated ---------------------------------------------------------------

GENERATED = {  # name: (model builder, family, version, raw columns, rows per cell)
    "yolov8": (lambda: yolov8(width=8), "YOLOv8", "Ultralytics", 144, 1),
    "yolo11": (lambda: yolov8(width=8, yolo11=True), "YOLO11", "Ultralytics", 144, 1),
    "yolov8-nc3": (lambda: yolov8(width=8, nc=3), "YOLOv8", "Ultralytics", 67, 1),
}


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_families(name, tmp_path):
    res = check_generated(GENERATED, name, tmp_path)
    family, version = GENERATED[name][1:3]
    meta = res.metadata
    if version == "Ultralytics":
        assert meta["original_output"]["layout"] == "channels" and meta["ones_column"] is False
        assert meta["channels"][0] == {"name": "dfl", "size": 64, "sigmoid": False,
                                       "columns": "DFL bin logits grouped l, t, r, b"} and meta["dfl_bins"] == 16


def test_inspect_names_each_family(tmp_path):
    check_inspect_names(GENERATED, tmp_path)


def test_yolov8_keep_dfl_and_levels(tmp_path):
    onnx.save(yolov8(width=8), str(tmp_path / "in.onnx"))
    for i, layout in enumerate([Layout("flat", keep_dfl=True), Layout("levels")]):
        res = strip(tmp_path / "in.onnx", tmp_path / f"raw{i}.onnx", layout=layout)
        assert res.verification.ok
        widths = [o["shape"][-1] if layout.kind == "flat" else o["shape"][1] for o in res.metadata["raw_outputs"]]
        assert widths == ([84] if layout.kind == "flat" else [84, 84, 84])


# --- Ultralytics YOLOv8: torch module exported by torch's legacy exporter (``torch_families.py``) -------------

# its backbone is plain stride-2 convs (no C2f, SPPF ...): the head is named, not a family (test_families.py)
torch_cases = {
    "yolov8-onnxslim": ("export_yolov8", {}, "Ultralytics Detect head", "Ultralytics", 144, 1),
    "yolov8-unslimmed": ("export_yolov8", {"slim": False}, "Ultralytics Detect head", "Ultralytics", 144, 1),
    "yolov8-dynamic": ("export_yolov8", {"dynamic": True}, "Ultralytics Detect head", "Ultralytics", 144, 1),
}


@pytest.mark.parametrize("name", list(torch_cases))
def test_torch_exports(name, tmp_path):
    check_torch_export(torch_cases, name, tmp_path)


# --- both: torch's dynamo exporter (see ``_helpers.py``) ---------------------------------------------------

DYNAMO_CASES = {  # name: (exporter, keywords, family, raw columns, rows per cell)
    "yolov6-af": (torch_families.export_yolov6_af, {"reg_max": 0}, "YOLOv6", 84, 1),
    "yolov6-af-dfl": (torch_families.export_yolov6_af, {"reg_max": 16}, "YOLOv6", 148, 1),
    "yolov8": (torch_families.export_yolov8, {}, "Ultralytics Detect head", 144, 1),
}


@pytest.mark.parametrize("name", list(DYNAMO_CASES))
def test_strip_dynamo_export(name, tmp_path):
    check_dynamo_export(DYNAMO_CASES[name], tmp_path)


def _drift_dfl_weights(model: onnx.ModelProto, delta: float) -> int:
    """Add ``delta`` to every other weight of the DFL 1x1 conv (0, 1, ..., 15), as EMA training leaves them."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    hit = 0
    for n in model.graph.node:
        t = inits.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
        if t is None:
            continue
        w = numpy_helper.to_array(t)
        if w.shape == (1, 16, 1, 1) and np.array_equal(w.reshape(-1), np.arange(16, dtype=w.dtype)):
            w = w.copy()
            w.reshape(-1)[1::2] += np.float32(delta)
            t.CopyFrom(numpy_helper.from_array(w, t.name))
            hit += 1
    return hit


def test_dfl_weights_drifted_by_ema_training_are_still_the_dfl(tmp_path):
    """A trained checkpoint's frozen DFL conv goes through Ultralytics' ModelEMA, which averages every float
    tensor: the weights 0..15 come back off by ~1e-6 and the head was taken for a learned conv ("4x2100
    feature map does not divide the input"). Within a few ulps they are the DFL; the decode uses the exact
    integers and layer 2 compares. A conv 1e-2 away is not the DFL projection."""
    m = yolov8(nc=5, size=(320, 320))
    assert _drift_dfl_weights(m, 1.5e-6) == 1
    onnx.save(m, str(tmp_path / "ema.onnx"))
    res = strip(tmp_path / "ema.onnx", tmp_path / "raw.onnx")
    assert res.head.dfl_bins == 16 and res.verification.ok
    assert res.verification.checks[0].layout.max_abs_err == 0
    far = yolov8(nc=5, size=(320, 320))
    _drift_dfl_weights(far, 1e-2)
    onnx.save(far, str(tmp_path / "far.onnx"))
    with pytest.raises(HeadcutError):
        strip(tmp_path / "far.onnx", tmp_path / "raw-far.onnx")
    assert not (tmp_path / "raw-far.onnx").exists()
