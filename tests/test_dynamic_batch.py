"""Dynamic batch handling, whatever the head: pinned to 1 by default (and said so), or kept on request.

Generated anchor-free exports with a symbolic batch (``yolov6_af(dynamic_batch=True)``) and the torch
YOLOv6 0.1.0 fixture exported with a dynamic batch (``torch_fixtures.py``).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from torch_fixtures import export_yolov6_v1

from onnx_headcut.check import deterministic_input, session
from onnx_headcut.decode import decode
from onnx_headcut.heads import Layout
from onnx_headcut.strip import strip
from onnx_headcut.synth import yolov6_af


def _model(tmp_path, kw):
    p = tmp_path / "in.onnx"
    onnx.save(yolov6_af(**{"width": 8, **kw}), str(p))
    return p


@pytest.mark.parametrize("layout", [Layout(), Layout("levels"), Layout("flat", keep_dfl=True),
                                    Layout("split", score_sum=True), Layout("flat-split", keep_sigmoid=True)])
def test_keep_dynamic_batch(layout, tmp_path):
    src = _model(tmp_path, dict(reg_max=16, dynamic_batch=True))
    res = strip(src, tmp_path / "raw.onnx", layout=layout, keep_dynamic_batch=True)
    assert [c.input for c in res.verification.checks] == ["random(seed=0)", "random(seed=0), batch 2"]
    assert res.verification.max_abs_err <= 1e-3 and "dynamic batch 'batch' kept" in res.head.notes
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert all(o.type.tensor_type.shape.dim[0].dim_param == "batch" for o in raw.graph.output)
    x = deterministic_input((3, 3, 320, 320), seed=2)
    y = session(str(src)).run(None, {"images": x})[0]
    r = session(str(tmp_path / "raw.onnx")).run(None, {"images": x})
    assert np.abs(decode(r, res.metadata) - y).max() <= 1e-3  # the session's list of outputs, batch 3


def test_dynamic_batch_defaults_to_static_and_says_so(tmp_path):
    src = _model(tmp_path, dict(dynamic_batch=True))
    res = strip(src, tmp_path / "raw.onnx")
    assert any("pinned to 1" in n for n in res.head.notes) and any("pinned to 1" in n for n in res.metadata["notes"])
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [d.dim_value for d in raw.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 320, 320]


def test_dynamic_batch_export_is_folded_with_onnxsim_then_stripped(tmp_path):
    """A symbolic batch makes every reshape target a Shape→Gather→Concat chain: onnxsim folds it first."""
    pytest.importorskip("torch")
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
    pytest.importorskip("torch")
    src = export_yolov6_v1(tmp_path / "dyn.onnx", dynamic_batch=True)
    res = strip(src, tmp_path / "raw.onnx", keep_dynamic_batch=True)
    assert "dynamic batch 'batch' kept" in res.head.notes and len(res.verification.checks) == 2
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert raw.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
