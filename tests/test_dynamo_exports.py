"""strip on torch's new (``torch.export``-based, ``dynamo=True``) ONNX exports of every supported head.

The fixtures are the torch reproductions of the upstream heads in ``torch_fixtures.py`` (YOLOv6 0.1.0)
and ``torch_families.py`` (YOLOv6 0.3.0 anchor-free, YOLOv5, YOLOv7, Ultralytics YOLOv8, YOLOX), exported
with ``torch.onnx.export(..., dynamo=True, external_data=True)``: opset 18, weights in a ``.onnx.data``
side file, no onnxsim/onnxslim. The graphs differ from the legacy exporter's (onnxscript's names, grids
lifted as ``lifted_tensor`` initializers, identical initializers deduplicated and shared between levels,
Split instead of Slice), and strip must still find, cut and verify the head.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import onnx  # noqa: E402

import torch_families  # noqa: E402
from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank  # noqa: E402
from onnx_headcut.region import decode_region  # noqa: E402
from onnx_headcut.strip import strip  # noqa: E402
from onnx_headcut.synth import yolov6_af  # noqa: E402
from torch_fixtures import export_yolov6_v1  # noqa: E402

STRIDES = (8, 16, 32)
V7_ANCHORS = (((12, 16), (19, 36), (40, 28)), ((36, 75), (76, 55), (72, 146)), ((142, 110), (192, 243), (459, 401)))

#: YOLOv7's dynamo export computes YOLOv5's formula, so headcut (which names anchor heads by the formula
#: in the graph) reports YOLOv5: torch.export's non-strict trace fails on Detect's `self.anchor_grid[i].data`,
#: torch.onnx falls back to strict (Dynamo) tracing, where torch.onnx.is_in_onnx_export() is False, so the
#: in-place branch `(2σ)² · anchor_grid` is traced instead of YOLOv7's ONNX branch. The anchors are YOLOv7's
#: (test_yolov7_dynamo_export_takes_the_inplace_branch).
#: name: (exporter, keywords, family, raw columns, rows per cell)
CASES = {
    "yolov6-0.1.0": (export_yolov6_v1, {}, "YOLOv6", 85, 1),
    "yolov6-0.1.0-inplace": (export_yolov6_v1, {"inplace": True}, "YOLOv6", 85, 1),
    "yolov6-af": (torch_families.export_yolov6_af, {"reg_max": 0}, "YOLOv6", 84, 1),
    "yolov6-af-dfl": (torch_families.export_yolov6_af, {"reg_max": 16}, "YOLOv6", 148, 1),
    "yolov5": (torch_families.export_yolov5, {}, "YOLOv5", 85, 3),
    "yolov7": (torch_families.export_yolov7, {}, "YOLOv5", 85, 3),  # see the note above
    "yolov8": (torch_families.export_yolov8, {}, "YOLOv8", 144, 1),
    "yolox": (torch_families.export_yolox, {"decode": True}, "YOLOX", 85, 1),
}
MARKS: dict = {}


def _dynamo_export(name: str, tmp_path: Path) -> Path:
    fn, kw, *_ = CASES[name]
    return fn(tmp_path / "in.onnx", dynamo=True, **kw)


def _assert_dynamo(src: Path) -> onnx.ModelProto:
    """The file really comes from the new exporter: opset >= 18, weights in its ``.onnx.data`` side file."""
    m = onnx.load(str(src), load_external_data=False)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 18
    data = Path(str(src) + ".data")
    assert data.exists() and data.stat().st_size > 0
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    return onnx.load(str(src))


@pytest.mark.parametrize("name", [pytest.param(n, marks=MARKS.get(n, ())) for n in CASES])
def test_strip_dynamo_export(name, tmp_path):
    _, _, family, cols, na = CASES[name]
    src = _dynamo_export(name, tmp_path)
    m = _assert_dynamo(src)
    h, w = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][2:]

    res = strip(src, tmp_path / "raw.onnx")  # raises HeadcutError (VerificationError, NoHeadError, ...) on failure
    assert res.verification.ok
    assert res.verification.max_abs_err <= 1e-3

    raw = onnx.load(str(tmp_path / "raw.onnx"))
    (out,) = raw.graph.output
    dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
    assert len(dims) == 3 and dims == [1, na * sum((h // s) * (w // s) for s in STRIDES), cols]
    assert max_rank(infer_shapes(raw)) <= 4
    assert set(decode_region(GraphIndex(raw), out.name).ops) <= {"Concat", "Reshape", "Transpose"}
    assert res.head.family == family, f"named {res.head.family} {res.head.version}, expected {family}"


def test_yolov7_dynamo_export_takes_the_inplace_branch(tmp_path):
    """What the YOLOv7 dynamo graph is: the in-place (ScatterND) decode, stripped and verified, anchors right."""
    src = _dynamo_export("yolov7", tmp_path)
    m = _assert_dynamo(src)
    ops = decode_region(GraphIndex(m), m.graph.output[0].name).ops
    assert ops["ScatterND"] == 6 and ops["Pow"] == 3  # y[..., 0:2] = ..., y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * ...
    res = strip(src, tmp_path / "raw.onnx")
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    assert res.head.anchors == V7_ANCHORS


@pytest.mark.parametrize("reg_max", [0, 16])
def test_yolov6_af_legacy_export(reg_max, tmp_path):
    """The YOLOv6 0.3.0 anchor-free fixture, legacy exporter (opset 13): found, verified, and its decode
    region op for op the one the project's generator writes."""
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
