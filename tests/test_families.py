"""YOLOX, YOLOv5, YOLOv7 and YOLOv8/YOLO11: strip, verify, metadata, layouts; torch exports and generated ones."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnx_headcut.decode import decode, original_output
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank
from onnx_headcut.region import decode_region
from onnx_headcut.heads import Layout
from onnx_headcut.strip import inspect, strip
from onnx_headcut.synth import yolov5, yolov8, yolox
from onnx_headcut.check import deterministic_input, session

V5_ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]
V7_ANCHORS = [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]], [[142, 110], [192, 243], [459, 401]]]

GENERATED = {  # name: (model builder, family, version, raw columns, rows per cell)
    "yolox": (lambda: yolox(width=8), "YOLOX", "0.x", 85, 1),
    "yolox-undecoded": (lambda: yolox(width=8, decode=False), "YOLOX", "undecoded", 85, 1),
    "yolov5": (lambda: yolov5(width=8), "YOLOv5", "anchor-based", 85, 3),
    "yolov5-opset13-256x384": (lambda: yolov5(width=8, opset=13, size=(256, 384)), "YOLOv5", "anchor-based", 85, 3),
    "yolov7": (lambda: yolov5(width=8, v7=True), "YOLOv7", "anchor-based", 85, 3),
    "yolov8": (lambda: yolov8(width=8), "YOLOv8", "Ultralytics", 144, 1),
    "yolo11": (lambda: yolov8(width=8, yolo11=True), "YOLO11", "Ultralytics", 144, 1),
    "yolov8-nc3": (lambda: yolov8(width=8, nc=3), "YOLOv8", "Ultralytics", 67, 1),
}


def _check(src, dst, family, version, cols, na):
    res = strip(src, dst)
    assert (res.head.family, res.head.version) == (family, version)
    m = onnx.load(str(src))
    h, w = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][2:]
    rows = na * sum((h // s) * (w // s) for s in (8, 16, 32))
    raw = onnx.load(str(dst))
    (out,) = raw.graph.output
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, rows, cols]
    tail = decode_region(GraphIndex(raw), out.name)  # everything between the convs and the output
    assert set(tail.ops) <= {"Concat", "Reshape", "Transpose"} and max_rank(infer_shapes(raw)) <= 4
    assert all(n.name.startswith("headcut/") for n in tail.nodes if n.op_type != "Constant")
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    x = deterministic_input((1, 3, h, w), seed=9)
    y = session(str(src)).run(None, {m.graph.input[0].name: x})[0]
    r = session(str(dst)).run(None, {m.graph.input[0].name: x})[0]
    assert np.abs(original_output(r, res.metadata) - y).max() <= 1e-3
    return res


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_families(name, tmp_path):
    make, family, version, cols, na = GENERATED[name]
    onnx.save(make(), str(tmp_path / "in.onnx"))
    res = _check(tmp_path / "in.onnx", tmp_path / "raw.onnx", family, version, cols, na)
    meta = res.metadata
    if family == "YOLOv5":
        assert [lv["anchors"] for lv in meta["levels"]] == V5_ANCHORS
    if family == "YOLOv7":
        assert [lv["anchors"] for lv in meta["levels"]] == V7_ANCHORS
    if family in ("YOLOv5", "YOLOv7"):
        assert [c["name"] for c in meta["channels"]] == ["box", "obj", "cls"] and meta["decode"] == "anchor_grid"
    if version == "Ultralytics":
        assert meta["original_output"]["layout"] == "channels" and meta["ones_column"] is False
        assert meta["channels"][0] == {"name": "dfl", "size": 64, "sigmoid": False,
                                       "columns": "DFL bin logits grouped l, t, r, b"} and meta["dfl_bins"] == 16
    if version == "undecoded":
        assert meta["original_output"]["decoded"] is False
        assert any("already raw apart from the sigmoids" in n for n in res.head.notes)


def test_inspect_names_each_family(tmp_path):
    for name, (make, family, version, _, _) in GENERATED.items():
        onnx.save(make(), str(tmp_path / f"{name}.onnx"))
        insp = inspect(tmp_path / f"{name}.onnx")
        assert (insp.head.family, insp.head.version) == (family, version), name
        assert insp.head.reasons


def test_anchor_decode_by_hand():
    meta = {"decode": "anchor_grid", "num_classes": 1, "input": {"name": "x", "shape": [1, 3, 32, 32]},
            "channels": [{"name": "box", "size": 4}, {"name": "obj", "size": 1}, {"name": "cls", "size": 1}],
            "levels": [{"stride": 16, "grid": [2, 2], "anchors": [[10, 20], [30, 40]]}]}
    raw = np.zeros((1, 8, 6), np.float32)  # rows: anchor 0 cells 0..3, anchor 1 cells 0..3
    raw[0, 7] = [0, 0, 0, np.log(3), 0, 0]  # anchor 1, cell (gx 1, gy 1): p = 0.5, 0.5, 0.5, 0.75
    out = decode(raw, meta)[0, 7]
    np.testing.assert_allclose(out, [(2 * 0.5 - 0.5 + 1) * 16, (2 * 0.5 - 0.5 + 1) * 16, 1.0 * 30, 1.5 ** 2 * 40, 0.5, 0.5],
                               rtol=1e-6)


@pytest.mark.parametrize("layout", [Layout("flat", keep_sigmoid=True), Layout("levels")])
def test_anchor_head_layouts(layout, tmp_path):
    onnx.save(yolov5(width=8), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx", layout=layout)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    if layout.kind == "levels":
        assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in raw.graph.output] == [
            [1, 255, 40, 40], [1, 255, 20, 20], [1, 255, 10, 10]]
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3


def test_yolov8_keep_dfl_and_levels(tmp_path):
    onnx.save(yolov8(width=8), str(tmp_path / "in.onnx"))
    for i, layout in enumerate([Layout("flat", keep_dfl=True), Layout("levels")]):
        res = strip(tmp_path / "in.onnx", tmp_path / f"raw{i}.onnx", layout=layout)
        assert res.verification.ok
        widths = [o["shape"][-1] if layout.kind == "flat" else o["shape"][1] for o in res.metadata["raw_outputs"]]
        assert widths == ([84] if layout.kind == "flat" else [84, 84, 84])


# --- genuine exporter patterns: torch modules exported by torch's legacy exporter -----------------------

torch_cases = {
    "yolov5": ("export_yolov5", {}, "YOLOv5", "anchor-based", 85, 3),
    "yolov5-onnxsim": ("export_yolov5", {"simplify": True}, "YOLOv5", "anchor-based", 85, 3),
    "yolov5-dynamic": ("export_yolov5", {"dynamic": True}, "YOLOv5", "anchor-based", 85, 3),
    "yolov5-384x640": ("export_yolov5", {"size": (384, 640)}, "YOLOv5", "anchor-based", 85, 3),
    "yolov7": ("export_yolov7", {}, "YOLOv7", "anchor-based", 85, 3),
    "yolov8-onnxslim": ("export_yolov8", {}, "YOLOv8", "Ultralytics", 144, 1),
    "yolov8-unslimmed": ("export_yolov8", {"slim": False}, "YOLOv8", "Ultralytics", 144, 1),
    "yolov8-dynamic": ("export_yolov8", {"dynamic": True}, "YOLOv8", "Ultralytics", 144, 1),
    "yolox": ("export_yolox", {}, "YOLOX", "0.x", 85, 1),
    "yolox-no-onnxsim": ("export_yolox", {"simplify": False}, "YOLOX", "0.x", 85, 1),
    "yolox-undecoded": ("export_yolox", {"decode": False}, "YOLOX", "undecoded", 85, 1),
}


@pytest.mark.parametrize("name", list(torch_cases))
def test_torch_exports(name, tmp_path):
    pytest.importorskip("torch")
    import torch_families

    fn, kw, family, version, cols, na = torch_cases[name]
    src = getattr(torch_families, fn)(tmp_path / "in.onnx", **kw)
    res = _check(src, tmp_path / "raw.onnx", family, version, cols, na)
    if family == "YOLOv5":
        assert [lv["anchors"] for lv in res.metadata["levels"]] == V5_ANCHORS
    if family == "YOLOv7":
        assert [lv["anchors"] for lv in res.metadata["levels"]] == V7_ANCHORS
    assert res.inspection.folded == ("dynamic" in name)


def test_generated_v5_matches_the_torch_export_decode(tmp_path):
    """The generator writes YOLOv5's and YOLOv7's decode as the legacy exporter does (same signature)."""
    pytest.importorskip("torch")
    import torch_families
    from test_reference import signature

    for fn, kw in (("export_yolov5", {}), ("export_yolov7", {"v7": True})):
        genuine = onnx.load(str(getattr(torch_families, fn)(tmp_path / f"{fn}.onnx")))
        assert signature(yolov5(width=8, **kw)) == signature(genuine), fn
