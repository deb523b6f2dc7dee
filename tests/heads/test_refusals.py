"""Exports headcut refuses by name (``onnx_headcut/heads/refusals.py``): YOLOv6 face and segmentation heads,
each with a final one-line message that says what was found and what headcut strips instead."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.errors import NoHeadError
from onnx_headcut.locate import locate
from onnx_headcut.synth import yolov6_af


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
