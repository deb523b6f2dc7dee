"""strip on genuine torch exports of YOLOv6 0.1.0's Detect head (see ``torch_fixtures.py``).

These exports come from torch's own legacy TorchScript exporter (and optionally onnxsim), so the
decode region is exactly what real users' files contain, not the project's imitation of it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from onnx_headcut.graph import GraphIndex, infer_shapes, max_rank  # noqa: E402
from onnx_headcut.region import decode_region  # noqa: E402
from onnx_headcut.strip import strip  # noqa: E402
from onnx_headcut.check import deterministic_input, session  # noqa: E402

from torch_fixtures import export_yolov6_v1  # noqa: E402

STRIDES = (8, 16, 32)

CASES = {
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


@pytest.mark.parametrize("case", list(CASES))
def test_strip_genuine_export(case, tmp_path):
    kw = CASES[case]
    h, w = kw.get("size", (320, 320))
    src = export_yolov6_v1(tmp_path / "yolov6.onnx", **kw)
    res = strip(src, tmp_path / "raw.onnx")  # verifies; raises VerificationError on a mismatch
    _check_raw(res, tmp_path / "raw.onnx", h, w)
    assert res.max_rank_after <= 4 < res.inspection.max_rank  # the 5-D decode is gone


@pytest.mark.parametrize("case", list(GENUINE_DECODE_OPS))
def test_export_decode_region_matches_genuine_yolov6(case, tmp_path):
    """The fixture reproduces the node pattern of a real YOLOv6 0.1.0 export, op for op."""
    src = export_yolov6_v1(tmp_path / "yolov6.onnx", **CASES[case])
    model = onnx.load(str(src))
    assert model.opset_import[0].version == 12
    assert [i.name for i in model.graph.input] == ["image_arrays"]
    assert [o.name for o in model.graph.output] == ["outputs"]
    ops = decode_region(GraphIndex(model), model.graph.output[0].name).ops
    assert dict(ops) == GENUINE_DECODE_OPS[case]


def test_raw_rows_are_the_prediction_convs(tmp_path):
    """Each raw row is [box 4, obj 1, cls nc] of one cell, straight from the convs (non-square input)."""
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
    try:
        src = export_yolov6_v1(tmp_path / "yolov6.onnx", inplace=inplace, dynamo=True)
    except ImportError as e:  # onnxscript missing
        pytest.skip(f"the dynamo exporter is unavailable: {e}")
    res = strip(src, tmp_path / "raw.onnx")  # must strip and verify: any HeadcutError fails the test
    _check_raw(res, tmp_path / "raw.onnx", 320, 320)


def test_dynamic_batch_export_is_folded_with_onnxsim_then_stripped(tmp_path):
    """A symbolic batch makes every reshape target a Shape→Gather→Concat chain: onnxsim folds it first."""
    src = export_yolov6_v1(tmp_path / "dyn.onnx", dynamic_batch=True)
    m = onnx.load(str(src))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert sum(n.op_type in ("Shape", "Gather") for n in m.graph.node) >= 6
    res = strip(src, tmp_path / "raw.onnx")
    assert res.inspection.folded
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [d.dim_value for d in raw.graph.output[0].type.tensor_type.shape.dim] == [1, 2100, 85]
    assert [d.dim_value for d in raw.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 320, 320]
    assert not {"Shape", "Gather", "Exp"} & {n.op_type for n in raw.graph.node}


def test_dynamic_batch_export_can_keep_its_batch_axis(tmp_path):
    src = export_yolov6_v1(tmp_path / "dyn.onnx", dynamic_batch=True)
    res = strip(src, tmp_path / "raw.onnx", keep_dynamic_batch=True)
    assert "dynamic batch 'batch' kept" in res.head.notes and len(res.verification.checks) == 2
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert raw.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
