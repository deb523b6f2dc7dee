"""Exports headcut refuses by name (``onnx_headcut/heads/refusals.py``): YOLOv6 0.4.1 segmentation heads,
each with a final one-line message that says what was found and what headcut strips instead."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_headcut.errors import NoHeadError
from onnx_headcut.locate import locate
from onnx_headcut.synth import yolov6_af

REFUSED = r"^segmentation export .*'protos' \[1, 32, 80, 80\].*headcut does not strip it$"


def _with_protos(m):
    w = numpy_helper.from_array(np.zeros((32, 3, 1, 1), np.float32), "proto_w")
    m.graph.initializer.append(w)
    m.graph.node.append(helper.make_node("Conv", ["images", "proto_w"], ["protos"], strides=[4, 4]))
    m.graph.output.append(helper.make_tensor_value_info("protos", TensorProto.FLOAT, [1, 32, 80, 80]))
    return m


def test_seg_export_is_refused_by_name():
    """YOLOv6 0.4.1 seg: mask prototypes (1, 32, H/4, W/4) and per-anchor coefficients (1, N, 33) as outputs of
    their own beside the detections: not stripped (headcut strips Ultralytics' segment heads, see test_segment)."""
    m = _with_protos(yolov6_af(width=8))
    rows = m.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    zeros = numpy_helper.from_array(np.zeros((1, rows, 33), np.float32))
    m.graph.node.append(helper.make_node("Constant", [], ["coefs"], value=zeros))
    m.graph.output.append(helper.make_tensor_value_info("coefs", TensorProto.FLOAT, [1, rows, 33]))
    with pytest.raises(NoHeadError, match=REFUSED):
        locate(m)


def test_prototypes_without_coefficients_are_refused_by_name():
    """Prototypes beside a detection head with no mask-coefficient branch: not a segment head headcut strips."""
    with pytest.raises(NoHeadError, match=REFUSED):
        locate(_with_protos(yolov6_af(width=8)))
