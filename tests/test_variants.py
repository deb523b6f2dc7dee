"""Exports that are more than a plain decoded detector: end-to-end NMS (TensorRT and ONNX NonMaxSuppression).

Face and segmentation refusals: ``tests/heads/test_refusals.py``.
"""

from __future__ import annotations

import onnx
import pytest

from onnx_headcut.strip import strip
from onnx_headcut.synth import end2end, yolov6_af, yolov6_v1


@pytest.mark.parametrize("kind", ["trt", "ort"])
@pytest.mark.parametrize("make,kw", [(yolov6_af, dict(simplify=True)), (yolov6_af, dict(reg_max=16)), (yolov6_v1, {})])
def test_end2end_is_cut_at_the_head_and_says_so(kind, make, kw, tmp_path):
    src = tmp_path / "e2e.onnx"
    onnx.save(end2end(make(width=8, **kw), kind), str(src))
    m = onnx.load(str(src))
    assert [o.name for o in m.graph.output] == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    res = strip(src, tmp_path / "raw.onnx")
    assert res.verification.ok and res.verification.max_abs_err <= 1e-3
    nms = "EfficientNMS_TRT" if kind == "trt" else "NonMaxSuppression"
    assert any(nms in n and "removed" in n for n in res.head.notes)
    assert any(nms in n for n in res.metadata["notes"])
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    ops = {n.op_type for n in raw.graph.node}
    assert not ops & {nms, "MatMul", "ArgMax", "ReduceMax", "Slice"} and len(raw.graph.output) == 1
    assert [o.domain for o in raw.opset_import] == [""]  # the TRT plugin domain is gone


def test_end2end_raw_output_is_named_outputs_not_the_internal_tensor(tmp_path):
    """A genuine YOLOv6 end-to-end export feeds its NMS from '/model/detect/Concat_7_output_0': the raw
    output must not take that internal name (issue 13) but 'outputs', as YOLOv6 names its decoded output."""
    m = yolov6_v1(width=8)
    internal = "/model/detect/Concat_7_output_0"
    for n in m.graph.node:
        n.output[:] = [internal if o == "outputs" else o for o in n.output]
    m.graph.output[0].name = internal
    src = tmp_path / "e2e.onnx"
    onnx.save(end2end(m, "trt"), str(src))
    res = strip(src, tmp_path / "raw.onnx")
    raw = onnx.load(str(tmp_path / "raw.onnx"))
    assert [o.name for o in raw.graph.output] == ["outputs"]
    assert res.metadata["raw_outputs"] == [{"name": "outputs", "shape": [1, 2100, 85]}]
    assert any("raw output named 'outputs'" in n and internal in n for n in res.metadata["notes"])
