"""The copies headcut hands an engine converter rewritten around its bugs (no engine needed): each rewrite is
exact in onnxruntime, and only what it is for is rewritten."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnx_headcut.engine_rewrites import maxpool_edge_pad
from onnx_headcut.synth import yolov8


def _pools(pads, strides=(1, 1), chain=3, **attrs) -> onnx.ModelProto:
    """SPPF's pools: ``chain`` MaxPool 5x5 in a row after a SiLU-like shift to negatives, and a Concat."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 10])
    nodes, src, outs = [], "x", []
    for i in range(chain):
        nodes.append(helper.make_node("MaxPool", [src], [f"p{i}"], kernel_shape=[5, 5], strides=list(strides),
                                      pads=list(pads), **attrs))
        src = f"p{i}"
        outs.append(src)
    nodes.append(helper.make_node("Concat", outs, ["y"], axis=1))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


@pytest.mark.parametrize("pads, strides", [((2, 2, 2, 2), (1, 1)), ((1, 2, 3, 0), (2, 1)), ((4, 4, 4, 4), (3, 3))])
def test_maxpool_edge_pad_is_exact_on_negative_values(pads, strides):
    m = _pools(pads, strides, chain=1 if strides != (1, 1) else 3)
    copy = maxpool_edge_pad(m)
    assert copy is not None
    ops = [n.op_type for n in copy.graph.node]
    assert ops.count("Pad") == ops.count("MaxPool") and ops[0] == "Pad"
    for n in copy.graph.node:
        if n.op_type == "Pad":
            assert helper.get_attribute_value(n.attribute[0]) == b"edge"
        if n.op_type == "MaxPool":
            assert list(next(a.ints for a in n.attribute if a.name == "pads")) == [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for shift in (0.0, -5.0):  # all negative: a 0 pad would win every border window
        x = (rng.standard_normal((1, 4, 12, 10)) + shift).astype(np.float32)
        np.testing.assert_array_equal(_run(copy, x), _run(m, x))
    assert [n.op_type for n in m.graph.node] == ["MaxPool"] * (len(ops) // 2) + ["Concat"]  # the model is untouched


def test_maxpool_edge_pad_leaves_what_it_cannot_prove():
    assert maxpool_edge_pad(_pools((0, 0, 0, 0))) is None  # nothing padded
    assert maxpool_edge_pad(_pools((2, 2, 2, 2), ceil_mode=1)) is None
    assert maxpool_edge_pad(_pools((2, 2, 2, 2), dilations=[2, 2])) is None
    assert maxpool_edge_pad(yolov8(width=8)) is None  # no pool in the fixture's head
