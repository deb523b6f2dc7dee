"""Head kind ``anchor_grid`` (YOLOv5, YOLOv7): locating it, anchors, metadata, layouts, the decode by hand.

Fixtures: the project's generator (``yolov5``, ``v7=True``), and the torch reproductions in
``torch_families.py`` (v5's Shape-driven grids with a dynamic batch, v7's folded 6-D anchor grid)
exported by torch's legacy and dynamo exporters.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch_families
from _helpers import (
    assert_dynamo,
    check_dynamo_export,
    check_generated,
    check_inspect_names,
    check_torch_export,
    dynamo_export,
    needs_torch,
)

from onnx_headcut.decode import decode
from onnx_headcut.graph import GraphIndex
from onnx_headcut.heads import Layout
from onnx_headcut.region import decode_region
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov5

V5_ANCHORS = [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]]
V7_ANCHORS = [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]], [[142, 110], [192, 243], [459, 401]]]

# --- generated ----------------------------------------------------------------------------------------

GENERATED = {  # name: (model builder, family, version, raw columns, rows per cell)
    "yolov5": (lambda: yolov5(width=8), "YOLOv5", "anchor-based", 85, 3),
    "yolov5-opset13-256x384": (lambda: yolov5(width=8, opset=13, size=(256, 384)), "YOLOv5", "anchor-based", 85, 3),
    "yolov7": (lambda: yolov5(width=8, v7=True), "YOLOv7", "anchor-based", 85, 3),
}


@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_families(name, tmp_path):
    res = check_generated(GENERATED, name, tmp_path)
    family, version = GENERATED[name][1:3]
    meta = res.metadata
    if family == "YOLOv5":
        assert [lv["anchors"] for lv in meta["levels"]] == V5_ANCHORS
    if family == "YOLOv7":
        assert [lv["anchors"] for lv in meta["levels"]] == V7_ANCHORS
    if family in ("YOLOv5", "YOLOv7"):
        assert [c["name"] for c in meta["channels"]] == ["box", "obj", "cls"] and meta["decode"] == "anchor_grid"


def test_inspect_names_each_family(tmp_path):
    check_inspect_names(GENERATED, tmp_path)


def test_anchor_decode_by_hand():
    meta = {"decode": "anchor_grid", "num_classes": 1, "input": {"name": "x", "shape": [1, 3, 32, 32]},
            "channels": [{"name": "box", "size": 4}, {"name": "obj", "size": 1}, {"name": "cls", "size": 1}],
            "levels": [{"stride": 16, "grid": [2, 2], "anchors": [[10, 20], [30, 40]]}]}
    raw = np.zeros((1, 8, 6), np.float32)  # rows: anchor 0 cells 0..3, anchor 1 cells 0..3
    raw[0, 7] = [0, 0, 0, np.log(3), 0, 0]  # anchor 1, cell (gx 1, gy 1): p = 0.5, 0.5, 0.5, 0.75
    out = decode(raw, meta)[0, 7]
    np.testing.assert_allclose(out, [(2 * 0.5 - 0.5 + 1) * 16, (2 * 0.5 - 0.5 + 1) * 16, 1.0 * 30, 1.5 ** 2 * 40,
                                     0.5, 0.5], rtol=1e-6)


@pytest.mark.parametrize("layout", [Layout("flat", keep_sigmoid=True), Layout("levels")])
def test_anchor_head_layouts(layout, tmp_path):
    onnx.save(yolov5(width=8), str(tmp_path / "in.onnx"))
    res = strip(tmp_path / "in.onnx", tmp_path / "raw.onnx", layout=layout)
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    if layout.kind == "levels":
        assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in raw.graph.output] == [
            [1, 255, 40, 40], [1, 255, 20, 20], [1, 255, 10, 10]]
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3


# --- genuine exporter patterns: torch modules exported by torch's legacy exporter -----------------------

torch_cases = {
    "yolov5": ("export_yolov5", {}, "YOLOv5", "anchor-based", 85, 3),
    "yolov5-onnxsim": ("export_yolov5", {"simplify": True}, "YOLOv5", "anchor-based", 85, 3),
    "yolov5-dynamic": ("export_yolov5", {"dynamic": True}, "YOLOv5", "anchor-based", 85, 3),
    "yolov5-384x640": ("export_yolov5", {"size": (384, 640)}, "YOLOv5", "anchor-based", 85, 3),
    "yolov7": ("export_yolov7", {}, "YOLOv7", "anchor-based", 85, 3),
}


@pytest.mark.parametrize("name", list(torch_cases))
def test_torch_exports(name, tmp_path):
    res = check_torch_export(torch_cases, name, tmp_path)
    family = torch_cases[name][2]
    if family == "YOLOv5":
        assert [lv["anchors"] for lv in res.metadata["levels"]] == V5_ANCHORS
    if family == "YOLOv7":
        assert [lv["anchors"] for lv in res.metadata["levels"]] == V7_ANCHORS


def test_generated_v5_matches_the_torch_export_decode(tmp_path):
    """The generator writes YOLOv5's and YOLOv7's decode as the legacy exporter does (same signature)."""
    needs_torch()
    from test_reference import signature

    for fn, kw in (("export_yolov5", {}), ("export_yolov7", {"v7": True})):
        genuine = onnx.load(str(getattr(torch_families, fn)(tmp_path / f"{fn}.onnx")))
        assert signature(yolov5(width=8, **kw)) == signature(genuine), fn


# --- torch's dynamo exporter (see ``_helpers.py``) ---------------------------------------------------------

#: YOLOv7's dynamo export computes YOLOv5's formula, so headcut (which names anchor heads by the formula
#: in the graph) reports YOLOv5: torch.export's non-strict trace fails on Detect's `self.anchor_grid[i].data`,
#: torch.onnx falls back to strict (Dynamo) tracing, where torch.onnx.is_in_onnx_export() is False, so the
#: in-place branch `(2σ)² · anchor_grid` is traced instead of YOLOv7's ONNX branch. The anchors are YOLOv7's
#: (test_yolov7_dynamo_export_takes_the_inplace_branch).
#: name: (exporter, keywords, family, raw columns, rows per cell)
DYNAMO_CASES = {
    "yolov5": (torch_families.export_yolov5, {}, "YOLOv5", 85, 3),
    "yolov7": (torch_families.export_yolov7, {}, "YOLOv5", 85, 3),  # see the note above
}
DYNAMO_V7_ANCHORS = (((12, 16), (19, 36), (40, 28)), ((36, 75), (76, 55), (72, 146)),
                     ((142, 110), (192, 243), (459, 401)))


@pytest.mark.parametrize("name", list(DYNAMO_CASES))
def test_strip_dynamo_export(name, tmp_path):
    check_dynamo_export(DYNAMO_CASES[name], tmp_path)


def test_yolov7_dynamo_export_takes_the_inplace_branch(tmp_path):
    """What the YOLOv7 dynamo graph is: the in-place (ScatterND) decode, stripped and verified, anchors right."""
    fn, kw, *_ = DYNAMO_CASES["yolov7"]
    src = dynamo_export(fn, kw, tmp_path)
    m = assert_dynamo(src)
    ops = decode_region(GraphIndex(m), m.graph.output[0].name).ops
    assert ops["ScatterND"] == 6 and ops["Pow"] == 3  # y[..., 0:2] = ..., y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * ...
    res = strip(src, tmp_path / "raw.onnx")
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    assert res.head.anchors == DYNAMO_V7_ANCHORS
