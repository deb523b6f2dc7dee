"""Exports that are more than a plain decoded detector: end-to-end NMS, face, segmentation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.errors import NoHeadError
from onnx_headcut.locate import locate
from onnx_headcut.strip import inspect, strip
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


def test_face_export_is_refused_by_name(tmp_path):
    m = yolov6_af(width=8, nc=1, landmarks=True)
    with pytest.raises(NoHeadError, match=r"^YOLOv6 face export .* 16 columns.*does not strip face heads$"):
        locate(m)


def test_seg_export_is_refused_by_name():
    m = yolov6_af(width=8)
    # 0.4.1 seg adds mask prototypes (1, 32, H/4, W/4) and per-anchor coefficients beside the detections
    w = numpy_helper.from_array(np.zeros((32, 3, 1, 1), np.float32), "proto_w")
    m.graph.initializer.append(w)
    m.graph.node.append(helper.make_node("Conv", ["images", "proto_w"], ["protos"], strides=[4, 4]))
    m.graph.output.append(helper.make_tensor_value_info("protos", TensorProto.FLOAT, [1, 32, 80, 80]))
    with pytest.raises(NoHeadError, match=r"^segmentation export .*'protos' \[1, 32, 80, 80\].*detection heads only$"):
        locate(m)


def test_inspect_names_the_generation_and_why(tmp_path):
    cases = {
        "v1.onnx": (yolov6_v1(width=8), "0.1.0", "objectness"),
        "af.onnx": (yolov6_af(width=8), "0.2+ anchor-free", "no DFL"),
        "dfl.onnx": (yolov6_af(width=8, reg_max=16, opset=12), "0.2+ anchor-free, DFL", "reg_max 16"),
        "p6.onnx": (yolov6_af(width=8, levels=4, size=(640, 640)), "0.2+ anchor-free", "P6 or YOLOv6-Lite"),
    }
    for name, (m, version, why) in cases.items():
        onnx.save(m, str(tmp_path / name))
        insp = inspect(tmp_path / name)
        assert insp.head.version == version
        assert any(why in r for r in insp.head.reasons), insp.head.reasons
